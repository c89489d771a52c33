"""The `registry` command: parse arguments, call the API, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from registry import __version__
from registry.errors import RegistryError, UsageError
from registry.names import ALL_STAGES

F = TypeVar("F", bound=Callable[..., Any])
_JSON_FLAG = False


def _print_json(data: Any) -> None:
    # Indented for a person at a terminal; compact (and C-encoded, much faster) when piped.
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=str))


def json_option(func: F) -> F:
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        global _JSON_FLAG
        _JSON_FLAG = _JSON_FLAG or value
        return value

    return click.option("--json", "as_json", is_flag=True, callback=remember, expose_value=True,
                        is_eager=True, help="Print machine-readable JSON.")(func)


def _open() -> Any:
    import registry

    return registry.open(Path.cwd())


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on a terminal for long copies; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        yield update


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="registry")
@click.option("--traceback", is_flag=True, help="Show a Python traceback on errors (for bug reports).")
def cli(traceback: bool) -> None:
    """A GitOps model registry: model cards and stages in git, weights in DVC.

    A pull request is a request to register or promote; merging it is the
    promotion; git history is the audit log.
    """


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--dvc-remote", metavar="URL", help="DVC remote for artifacts (default: a folder beside PATH).")
def init(path: Path, dvc_remote: str | None) -> None:
    """Make a registry repository at PATH (git, DVC, registry.yaml, workflow)."""
    from registry import api, create

    reg = api.init(path, dvc_remote)
    remote = dvc_remote or str(create.default_remote(reg.root))
    click.echo(f"Initialised registry in {reg.root}")
    click.echo(f"  DVC remote: {remote}")
    click.echo("  Next: registry register NAME VERSION --card card.yaml --artifact model.safetensors")


@cli.command()
@click.argument("name")
@click.argument("version", required=False)
@click.option("--card", "card", required=True, type=click.Path(path_type=Path), help="The model card (YAML).")
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(path_type=Path),
              help="A file of the version (repeat for each).")
@click.option("--bump", type=click.Choice(["major", "minor", "patch"]), help="Next version after the latest.")
@click.option("--sign-key", type=click.Path(path_type=Path), help="Sign the version with this private key.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def register(name: str, version: str | None, card: Path, artifacts: tuple[Path, ...], bump: str | None,
             sign_key: Path | None, no_branch: bool, push: bool, as_json: bool) -> None:
    """Register a version: copy artifacts in, track weights with DVC, commit on a branch."""
    if sign_key is not None:
        raise UsageError("--sign-key: signing is not available in this version yet")
    reg = _open()
    with _progress() as progress:
        done = reg.register(name, version, card, list(artifacts), bump=bump, no_branch=no_branch,
                            push=push, progress=progress)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "branch": done.branch,
                     "commit": done.commit, "artifacts": [a.as_dict() for a in done.card.artifacts],
                     "warnings": list(done.warnings)})
        return
    where = f"on branch {done.branch}" if done.branch else "on the current branch"
    click.echo(f"Registered {done.name}@{done.version} {where} (commit {done.commit[:8]})")
    for artifact in done.card.artifacts:
        click.echo(f"  {artifact.path}  {_size(artifact.size)}  {artifact.storage}  sha256:{artifact.sha256[:16]}")
    for warning in done.warnings:
        click.echo(f"warning: {warning}", err=True)
    if done.branch and not push:
        click.echo(f"Next: git push -u origin {done.branch}, then open a pull request")


@cli.command()
@click.argument("name")
@click.argument("version")
@click.option("--to", "to", required=True, type=click.Choice(ALL_STAGES), help="Target stage.")
@click.option("--reason", required=True, help="Why: recorded in the commit and the audit log.")
@click.option("--traffic", type=float, help="Canary traffic share, 0 < F < 1.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def promote(name: str, version: str, to: str, reason: str, traffic: float | None, no_branch: bool,
            push: bool, as_json: bool) -> None:
    """Move a version to another stage (edits stages.yaml on a branch)."""
    reg = _open()
    done = reg.promote(name, version, to, reason, traffic=traffic, no_branch=no_branch, push=push)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "from_stage": done.from_stage,
                     "to_stage": done.to_stage, "replaced": done.replaced, "branch": done.branch,
                     "commit": done.commit, "stages": done.stages.as_dict()})
        return
    where = f"on branch {done.branch}" if done.branch else "on the current branch"
    click.echo(f"{done.name}@{done.version}: {done.from_stage} → {done.to_stage} {where} (commit {done.commit[:8]})")
    if done.replaced:
        click.echo(f"  {done.name}@{done.replaced}: production → {reg.config.on_replace}")
    if done.branch and not push:
        click.echo(f"Next: git push -u origin {done.branch}, then open a pull request")


@cli.command(name="ls")
@click.option("--stage", type=click.Choice(ALL_STAGES), help="Only models with a version in this stage.")
@click.option("--tag", metavar="K=V", help="Only models whose model.yaml tags match.")
@json_option
def ls_command(stage: str | None, tag: str | None, as_json: bool) -> None:
    """Inventory: each model's latest and staged versions."""
    from registry import inventory

    reg = _open()
    summaries = reg.models(stage=stage, tag=inventory.parse_tag(tag) if tag else None)
    if as_json:
        _print_json([s.as_json() for s in summaries])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("MODEL", "LATEST", "PRODUCTION", "CANARY", "STAGING", "DEPRECATED"):
        table.add_column(column)
    warnings = []
    for s in summaries:
        held = s.stages
        canary = f"{held.canary.version} ({held.canary.traffic:.0%})" if held.canary else "-"
        table.add_row(s.name, s.latest or "-", held.production or "-", canary,
                      ", ".join(held.staging) or "-", ", ".join(held.deprecated) or "-")
        warnings += [f"{s.name}@{v} is past its sunset ({d})" for v, d in inventory.past_sunset(held)]
    console = _console()
    if summaries:
        console.print(table)
    else:
        console.print("No models" + (" match" if stage or tag else " registered yet"))
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@json_option
def show(ref: str, as_json: bool) -> None:
    """A model (stages, versions) or a version (card, stage, signature, history)."""
    from registry import inventory
    from registry.names import parse_ref

    name, version = parse_ref(ref)
    reg = _open()
    data = inventory.show_version(reg, name, version) if version else inventory.show_model(reg, name)
    if as_json:
        _print_json(data)
        return
    if version:
        _show_version(data)
    else:
        _show_model(data)


def _show_model(data: dict[str, Any]) -> None:
    click.echo(f"{data['name']}: {data['description']}")
    click.echo(f"  owners: {', '.join(data['owners']) or '-'}   task: {data['task'] or '-'}")
    for entry in data["versions"]:
        metrics = ", ".join(f"{k}={v}" for k, v in entry["metrics"].items())
        click.echo(f"  {entry['version']:<14} {entry['stage']:<12} {entry['created'] or '':<11} {metrics}")


def _show_version(data: dict[str, Any]) -> None:
    click.echo(f"{data['name']}@{data['version']}  [{data['stage']}]")
    click.echo(f"  {data['description'].strip()}")
    click.echo(f"  created {data['created']}  framework {data['framework']}  task {data['task']}")
    click.echo("  metrics: " + ", ".join(f"{k}={v}" for k, v in data["metrics"].items()))
    for artifact in data["artifacts"]:
        click.echo(f"  {artifact['path']}  {_size(artifact['size'])}  {artifact['storage']}  sha256:{artifact['sha256'][:16]}")
    click.echo(f"  signature: {'present' if data['signature']['present'] else 'unsigned'}")
    for entry in data["history"]:
        click.echo(f"  {entry['timestamp'][:10]} {entry['action']:<11} {entry['from_stage'] or '':>11} → "
                   f"{entry['to_stage'] or '':<11} by {_who(entry['performed_by'])}")


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@json_option
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Check schema and consistency of the given files, or of the whole registry."""
    reg = _open()
    problems = reg.validate(list(paths) or None)
    if as_json:
        _print_json({"valid": not problems, "problems": [
            {"path": p.path, "line": p.line, "field": p.field, "message": p.message} for p in problems]})
    else:
        for problem in problems:
            click.echo(str(problem), err=True)
        if not problems:
            click.echo("valid")
    if problems:
        if not as_json:
            click.echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", err=True)
        sys.exit(1)


@cli.command()
@click.option("--stage", default="production", show_default=True, type=click.Choice(["production", "canary", "staging"]))
@click.option("--at", "at", default="HEAD", show_default=True, help="Registry commit, branch or tag.")
@json_option
def manifest(stage: str, at: str, as_json: bool) -> None:
    """What serving needs for a stage: versions, artifacts, digests, locations."""
    reg = _open()
    data = reg.manifest(stage=stage, at=at)
    if as_json:
        _print_json(data)
        return
    click.echo(f"{stage} at {data['registry_commit'][:8]}")
    for name, model in data["models"].items():
        share = f" ({model['traffic']:.0%})" if "traffic" in model else ""
        click.echo(f"  {name}@{model['version']}{share}")
        for artifact in model["artifacts"]:
            click.echo(f"    {artifact['path']}  {_size(artifact['size'])}  sha256:{artifact['sha256'][:16]}")


@cli.command()
@click.argument("ref", metavar="[NAME[@VERSION]]", required=False)
@click.option("--since", metavar="DATE", help="Only changes on or after this date (YYYY-MM-DD).")
@json_option
def log(ref: str | None, since: str | None, as_json: bool) -> None:
    """The audit log: who changed which stage, when, why, approved by whom."""
    from registry.names import parse_ref

    name, version = parse_ref(ref) if ref else (None, None)
    reg = _open()
    entries = reg.log(name, version, since)
    if as_json:
        _print_json([e.as_json() for e in entries])
        return
    for e in entries:
        stage = f"{e.from_stage} → {e.to_stage}" if e.from_stage else (e.to_stage or "")
        ref = f"{e.model}@{e.version}"
        approved = f", approved by {_who(e.approved_by)}" if e.approved_by else ""
        click.echo(f"{e.timestamp[:10]} {e.action:<11} {ref:<24} {stage:<26} "
                   f"by {_who(e.performed_by)}{approved}" + (f": {e.reason}" if e.reason else ""))
    if not entries:
        click.echo("No changes recorded")


@cli.command()
@click.option("--base", required=True, metavar="REF", help="What the PR merges into, e.g. origin/main.")
@click.option("--head", default="HEAD", show_default=True, metavar="REF", help="The PR's commit.")
@click.option("--json", "json_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the report as JSON to FILE ('-' for stdout).")
@click.option("--summary", "summary_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Append the Markdown report to FILE (e.g. $GITHUB_STEP_SUMMARY).")
@click.option("--gate", "only", multiple=True, metavar="NAME", help="Run only these gates (repeatable).")
def check(base: str, head: str, json_file: Path | None, summary_file: Path | None, only: tuple[str, ...]) -> None:
    """Run the pull-request gates on what changed between BASE and HEAD."""
    from registry import check as check_module

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
            click.echo(f"{icons[r.status]} {r.gate:<12} {target:<28} {r.message}")
        failed = sum(r.status == "fail" for r in report.results)
        click.echo("all gates passed" if report.passed else f"{failed} gate check{'s' if failed != 1 else ''} failed")
    if not report.passed:
        sys.exit(1)


@cli.command(name="scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--allow-global", "allow", multiple=True, metavar="MODULE.QUALNAME",
              help="Also allow this exact global (repeatable); registry.yaml scan.allow_globals adds more.")
@json_option
def scan_command(paths: tuple[Path, ...], allow: tuple[str, ...], as_json: bool) -> None:
    """Scan model files for anything that could run code on load (never unpickles)."""
    from registry import scan

    extra = list(allow)
    # Outside a registry: the built-in allow-list and --allow-global only.
    with contextlib.suppress(RegistryError):
        extra += list(_open().config.allow_globals)
    scan.allow_list(extra, source="--allow-global")
    reports = scan.scan_paths(paths, extra)
    if as_json:
        _print_json([{"path": r.path, "kind": r.kind, "safe": r.safe, "findings": [
            {"member": f.member, "offset": f.offset, "global": f.global_name, "message": f.message}
            for f in r.findings]} for r in reports])
    else:
        for report in reports:
            if report.safe:
                click.echo(f"ok    {report.path} ({report.kind})")
            for finding in report.findings:
                click.echo(f"UNSAFE {finding}")
    unsafe = sum(not r.safe for r in reports)
    if not as_json:
        click.echo(f"{len(reports)} file{'s' if len(reports) != 1 else ''} scanned, {unsafe} unsafe", err=True)
    if unsafe:
        sys.exit(1)


@cli.command()
def codeowners() -> None:
    """Regenerate .github/CODEOWNERS from registry.yaml roles and model owners."""
    from registry import codeowners as module

    changed = module.write(_open())
    click.echo(f"{module.CODEOWNERS_FILE} {'updated; commit it' if changed else 'is up to date'}")


# -- More commands go above this line (each calls into its own module). --


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), required=False)
def demo(directory: Path | None) -> None:
    """Run the whole story end to end in a fresh folder (default: a temporary one)."""
    from registry import demo as demo_module

    demo_module.run(directory, echo=click.echo)


def _who(person: str) -> str:
    """A person's name without the e-mail, for tables (--json keeps both)."""
    return ", ".join(p.split(" <")[0] for p in person.split(", "))


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is handled here, once."""
    args = sys.argv[1:] if argv is None else argv
    wants_json = "--json" in args
    show_traceback = "--traceback" in args
    try:
        cli.main(args=args, prog_name="registry", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if wants_json:
            _print_json({"error": exc.format_message()})
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except RegistryError as exc:
        if show_traceback:
            raise
        if wants_json:
            _print_json({"error": str(exc)})
        else:
            for line in str(exc).splitlines():
                click.echo(f"error: {line}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if show_traceback:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc}\n"
                   "This is a bug; run again with --traceback and report it.", err=True)
        sys.exit(3)
