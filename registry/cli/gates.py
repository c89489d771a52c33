"""The pull-request checks (check, fetch) and the file checks (scan, convert): loaded only when one runs."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from registry.cli.main import (  # the helpers the command modules share
    _open,
    _print_json,
    _progress,
    _size,
    echo,
    json_option,
)
from registry.errors import RegistryError, UsageError


@click.command()
@click.option("--base", required=True, metavar="REF", help="What the PR merges into, e.g. origin/main.")
@click.option("--head", default="HEAD", show_default=True, metavar="REF", help="The PR's commit.")
@click.option("--json", "json_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the report as JSON to FILE ('-' for stdout).")
@click.option("--summary", "summary_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Append the Markdown report to FILE (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--gate", "only", multiple=True, metavar="NAME", help="Run only these gates (repeatable).")
def check(base: str, head: str, json_file: Path | None, summary_file: Path | None, only: tuple[str, ...]) -> None:
    """Run the pull-request gates on what changed between BASE and HEAD."""
    from registry.gates import run as check_module

    unknown = [g for g in only if g not in check_module.GATE_ORDER]
    if unknown:
        raise UsageError(f"--gate {unknown[0]}: unknown gate; use one of {', '.join(check_module.GATE_ORDER)}")
    reg = _open()
    gates = tuple(g for g in check_module.GATE_ORDER if not only or g in only)
    report = check_module.run(reg, base, head, gates)
    to_stdout = json_file is not None and str(json_file) == "-"
    check_module.write_outputs(report, None if to_stdout else json_file, summary_file)
    if to_stdout:
        _print_json(report.as_json())
    else:
        icons = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}
        for r in report.results:
            target = f"{r.model}@{r.version}" if r.model and r.version else (r.model or "-")
            echo(f"{icons[r.status]} {r.gate:<12} {target:<28} {r.message}")
        failed = sum(r.status == "fail" for r in report.results)
        echo("all gates passed" if report.passed else f"{failed} gate check{'s' if failed != 1 else ''} failed")
        if report.unfetched:
            echo(f"hint: some artifacts are not on this machine; run `registry fetch --base {base}` first "
                 "(where the DVC remote is reachable), then check again", err=True)
    if not report.passed:
        sys.exit(1)


@click.command(name="fetch")
@click.option("--base", required=True, metavar="REF", help="What the PR merges into, e.g. origin/main.")
@click.option("--dry-run", is_flag=True, help="Only list the DVC pointers that would be pulled.")
@json_option
def fetch_command(base: str, dry_run: bool, as_json: bool) -> None:
    """Pull from the DVC remote only the artifacts of the versions a PR's gates check."""
    from registry.gates import fetch

    with _fetch_progress() as progress:
        planned = fetch.fetch(_open(), base, dry_run=dry_run, progress=progress)
    if as_json:
        _print_json({**planned.as_json(), "pulled": bool(planned.targets) and not dry_run})
        return
    if not planned.targets:
        echo("Nothing to pull: no version checked between "
             f"{planned.base[:8]} and {planned.head[:8]} has DVC-tracked files")
        return
    verb = "Would pull" if dry_run else "Pulled"
    versions = ", ".join(f"{m}@{v}" for m, v in planned.versions)
    echo(f"{verb} {len(planned.targets)} DVC-tracked file{'s' if len(planned.targets) != 1 else ''} "
         f"for {versions}")
    for target in planned.targets:
        echo(f"  {target.removesuffix('.dvc')}")


@contextlib.contextmanager
def _fetch_progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """On a terminal, register's bars (bytes per file, gone when done); piped, quiet (SPEC)."""
    with _progress() as bar:
        yield bar


@click.command(name="scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--allow-global", "allow", multiple=True, metavar="MODULE.QUALNAME",
              help="Also allow this exact global (repeatable); registry.yaml scan.allow_globals adds more.")
@json_option
def scan_command(paths: tuple[Path, ...], allow: tuple[str, ...], as_json: bool) -> None:
    """Scan model files for anything that could run code on load (never unpickles)."""
    from registry.artifacts import scan

    extra = list(allow)
    profiles: list[str] = []
    # Outside a registry: the built-in allow-list and --allow-global only.
    with contextlib.suppress(RegistryError):
        config = _open().config
        extra += list(config.allow_globals)
        profiles += list(config.scan_profiles)
    scan.allow_list(extra, source="--allow-global")
    reports = scan.scan_paths(paths, extra, profiles=profiles)
    if as_json:
        _print_json([{"path": r.path, "kind": r.kind, "safe": r.safe, "findings": [
            {"member": f.member, "offset": f.offset, "global": f.global_name, "message": f.message}
            for f in r.findings]} for r in reports])
    else:
        for report in reports:
            if report.safe:
                echo(f"ok    {report.path} ({report.kind})")
            for finding in report.findings:
                echo(f"UNSAFE {finding}")
    unsafe = sum(not r.safe for r in reports)
    if not as_json:
        echo(f"{len(reports)} file{'s' if len(reports) != 1 else ''} scanned, {unsafe} unsafe", err=True)
    if unsafe:
        sys.exit(1)


@click.command(name="convert")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--to", "to", required=True, type=click.Choice(["safetensors"]), help="Target format.")
@click.option("--out", type=click.Path(path_type=Path), metavar="FILE",
              help="Output file (default: PATH with the suffix .safetensors).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@json_option
def convert_command(path: Path, to: str, out: Path | None, force: bool, as_json: bool) -> None:
    """Convert a PyTorch checkpoint or pickled dict of arrays to safetensors, never running it."""
    from registry.artifacts import convert

    done = convert.convert(path, to=to, out=out, force=force)
    if as_json:
        _print_json(done.as_json())
        return
    count = len(done.tensors)
    echo(f"Converted {done.source} ({done.source_format}) to {done.output}: {count} "
         f"tensor{'s' if count != 1 else ''}, {_size(done.size)}, sha256:{done.sha256[:16]}")
    for group in done.shared_storage:
        echo(f"  shared storage, written as separate copies: {', '.join(group)}")
    for key, value in done.metadata.items():
        echo(f"  metadata {key} = {value}")
