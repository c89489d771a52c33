"""Every other command: loaded only when one of them runs (or for the full --help)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from registry.cli.main import (  # the helpers the command modules share
    _open,
    _print_json,
    _size,
    echo,
    json_option,
)
from registry.errors import RegistryError, UsageError
from registry.files.names import ALL_STAGES


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--dvc-remote", metavar="URL", help="DVC remote for artifacts (default: a folder beside PATH).")
def init(path: Path, dvc_remote: str | None) -> None:
    """Make a registry repository at PATH (git, DVC, registry.yaml, workflow)."""
    from registry import api
    from registry.changes import init as create

    reg = api.init(path, dvc_remote)
    remote = dvc_remote or str(create.default_remote(reg.root))
    echo(f"Initialised registry in {reg.root}")
    echo(f"  DVC remote: {remote}")
    echo("  Next: registry register NAME VERSION --card card.yaml --artifact model.safetensors")


@click.command()
@click.argument("name")
@click.argument("version", required=False)
@click.option("--card", "card", required=True, type=click.Path(path_type=Path), help="The model card (YAML).")
@click.option("--artifact", "artifacts", multiple=True, type=click.Path(path_type=Path),
              help="A file of the version, or a folder whose contents go to the version folder "
                   "with their relative paths (repeatable).")
@click.option("--card-from-readme", is_flag=True,
              help="Fill the card's license, tags, datasets, base_model and metrics from the "
                   "registered README.md's Hugging Face front matter, where the card says nothing.")
@click.option("--bump", type=click.Choice(["major", "minor", "patch"]), help="Next version after the latest.")
@click.option("--sign-key", type=click.Path(path_type=Path), help="Sign the version with this private key.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def register(name: str, version: str | None, card: Path, artifacts: tuple[Path, ...], card_from_readme: bool,
             bump: str | None, sign_key: Path | None, no_branch: bool, push: bool, as_json: bool) -> None:
    """Register a version: copy artifacts in, track weights with DVC, commit on a branch."""
    from registry.signing import keys

    reg = _open()
    with _progress() as progress:
        done = reg.register(name, version, card, list(artifacts), bump=bump, no_branch=no_branch,
                            push=push, progress=progress, sign_key=sign_key,
                            passphrase=keys.passphrase(None) if sign_key is not None else None,
                            card_from_readme=card_from_readme)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "branch": done.branch,
                     "commit": done.commit, "artifacts": [a.as_dict() for a in done.card.artifacts],
                     "warnings": list(done.warnings)})
        return
    where = f"on branch {done.branch}" if done.branch else "on the current branch"
    echo(f"Registered {done.name}@{done.version} {where} (commit {done.commit[:8]})")
    if done.signed_by:
        echo(f"  signed with key {done.signed_by}")
    for artifact in done.card.artifacts:
        echo(f"  {artifact.path}  {_size(artifact.size)}  {artifact.storage}  sha256:{artifact.sha256[:16]}")
    for warning in done.warnings:
        echo(f"warning: {warning}", err=True)
    if done.branch and not push:
        echo(f"Next: git push -u origin {done.branch}, then open a pull request")


@click.command()
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
    _echo_promoted(done, as_json, push, reg.config.on_replace)


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


@click.command()
def codeowners() -> None:
    """Regenerate .github/CODEOWNERS from registry.yaml roles and model owners."""
    from registry.changes import codeowners as module

    changed = module.write(_open())
    echo(f"{module.CODEOWNERS_FILE} {'updated; commit it' if changed else 'is up to date'}")


@click.command(name="workflow")
def workflow_command() -> None:
    """Rewrite .github/workflows/registry.yml for this version and registry.yaml (the extras
    for the DVC remote and the scan profiles; the approvals job only with audit: {record_approvals: true})."""
    from registry.changes import workflows as templates
    from registry.files import yamlio
    from registry.repo import storage

    reg = _open()
    path = reg.root / templates.WORKFLOW_FILE
    remote = storage.remote_url((reg.root / storage.DVC_CONFIG).read_bytes()
                                if (reg.root / storage.DVC_CONFIG).is_file() else None) or ""
    text = templates.workflow(remote, record_approvals=reg.config.record_approvals,
                              scan_profiles=reg.config.scan_profiles)
    changed = not path.is_file() or path.read_text(encoding="utf-8", errors="replace") != text
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        yamlio.atomic_write(path, text)
    echo(f"{templates.WORKFLOW_FILE} {'updated; commit it in a pull request' if changed else 'is up to date'}")


@click.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why: recorded in the commit and the audit log.")
@click.option("--to", "to", metavar="VERSION", help="An earlier production version (default: the previous one).")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def rollback(name: str, reason: str, to: str | None, no_branch: bool, push: bool, as_json: bool) -> None:
    """Put the previous (or a named earlier) production version back into production."""
    from registry.changes import lifecycle

    reg = _open()
    done = lifecycle.rollback(reg, name, reason, to, no_branch=no_branch, push=push)
    _echo_promoted(done, as_json, push, reg.config.on_replace)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--sunset", required=True, metavar="DATE", help="Last day of service, YYYY-MM-DD (policy minimum ahead).")
@click.option("--reason", required=True, help="Why: recorded in the commit, stages.yaml and the audit log.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def deprecate(name: str, version: str, sunset: str, reason: str, no_branch: bool, push: bool, as_json: bool) -> None:
    """Deprecate a version with a sunset date."""
    from registry.changes import lifecycle

    reg = _open()
    done = lifecycle.deprecate(reg, name, version, sunset, reason, no_branch=no_branch, push=push)
    _echo_promoted(done, as_json, push, reg.config.on_replace)


@click.command()
@click.argument("name")
@click.argument("version")
@click.option("--reason", default="end of life", show_default=True, help="Why: recorded in the audit log.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def archive(name: str, version: str, reason: str, no_branch: bool, push: bool, as_json: bool) -> None:
    """Archive a version: its lifecycle ends; it is never served again."""
    from registry.changes import lifecycle

    reg = _open()
    done = lifecycle.archive(reg, name, version, reason, no_branch=no_branch, push=push)
    _echo_promoted(done, as_json, push, reg.config.on_replace)


@click.command(name="mcp")
@click.option("--registry", "registry_path", type=click.Path(path_type=Path, file_okay=False), default=".",
              show_default=True, help="The registry to serve (any folder inside its work tree).")
def mcp_command(registry_path: Path) -> None:
    """Serve the registry to AI agents over MCP (stdio): read tools, and promotion proposals
    pushed as branches for human review."""
    try:
        from registry.integrations import mcp as mcpserver
    except ModuleNotFoundError as exc:
        missing = (exc.name or "mcp").partition(".")[0]
        raise RegistryError(f"`registry mcp` needs the MCP SDK ({missing} is not installed): "
                            "pip install 'gitops-registry[mcp]'") from None
    mcpserver.serve(registry_path)


@click.command(name="gc")
@click.option("--dry-run", is_flag=True, help="List what would be purged, with sizes; change nothing.")
@click.option("--no-branch", is_flag=True, help="Commit the purge marks on the current branch.")
@click.option("--apply", "apply_merged", is_flag=True,
              help="After the purge is merged: delete the weights of the versions marked purged on the default branch.")
@json_option
def gc_command(dry_run: bool, no_branch: bool, apply_merged: bool, as_json: bool) -> None:
    """Apply the retention policy: propose purge marks for review; --apply deletes the merged ones' weights."""
    from registry.changes import gc

    reg = _open()
    if apply_merged:
        if dry_run or no_branch:
            raise UsageError("--apply goes alone: it deletes what a merged purge marked")
        applied = gc.apply(reg)
        if as_json:
            _print_json({"ref": applied.ref, "objects": applied.objects,
                         "versions": [{"model": m, "version": v} for m, v in applied.versions]})
            return
        for model, version in applied.versions:
            click.echo(f"purged {model}@{version} (marked on {applied.ref.removeprefix('refs/remotes/')})")
        click.echo(f"{applied.objects} object(s) removed from the DVC remote")
        return
    result, branch, commit = gc.run(reg, dry_run=dry_run, no_branch=no_branch)
    if as_json:
        _print_json({"dry_run": dry_run, "branch": branch, "commit": commit, "kept": result.kept,
                     "bytes": result.size, "purged": [
                         {"model": c.model, "version": c.version, "stage": c.stage, "created": c.created,
                          "bytes": c.size} for c in result.candidates]})
        return
    verb = "would purge" if dry_run else "marked"
    for c in result.candidates:
        echo(f"{verb} {c.model}@{c.version}  {c.stage}, created {c.created}  {_size(c.size)}")
    echo(f"{len(result.candidates)} version(s) {verb} ({_size(result.size)}); {result.kept} kept")
    if commit:
        where = f"on branch {branch}" if branch else "on the current branch"
        echo(f"Purge marks committed {where} (commit {commit[:8]}); nothing is deleted yet. Open a pull "
             "request; once it is merged, run `registry gc --apply` to delete the weights")


@click.command(name="fetch")
@click.option("--base", required=True, metavar="REF", help="What the PR merges into, e.g. origin/main.")
@click.option("--dry-run", is_flag=True, help="Only list the DVC pointers that would be pulled.")
@json_option
def fetch_command(base: str, dry_run: bool, as_json: bool) -> None:
    """Pull from the DVC remote only the artifacts of the versions a PR's gates check."""
    from registry.gates import fetch

    planned = fetch.fetch(_open(), base, dry_run=dry_run)
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


@click.command()
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="Folder to write the site into (made, or replaced if it holds an earlier catalog).")
@click.option("--at", "at", default="HEAD", show_default=True, help="Registry commit, branch or tag.")
@json_option
def site(out: Path, at: str, as_json: bool) -> None:
    """Write a static HTML catalog (works offline and on GitHub Pages)."""
    from registry.integrations.site import build as site_module

    built = site_module.build(_open(), out, at=at)
    if as_json:
        _print_json({"out": str(built.out), "registry_commit": built.commit, "files": list(built.files)})
        return
    pages = [f for f in built.files if f.endswith(".html")]
    echo(f"Wrote {len(pages)} page{'s' if len(pages) != 1 else ''} to {built.out} "
         f"(commit {built.commit[:8]}); open {built.out / 'index.html'}")


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


@click.command(name="api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--ref", default="main", show_default=True, help="Branch served, and the base of proposed branches.")
@click.option("--refresh", default=30.0, show_default=True, type=click.FloatRange(min=0), metavar="S",
              help="Fetch --ref at most every S seconds (on demand, in the background).")
@click.option("--origin", metavar="URL", help="Serve this registry, cloned into the cache "
              "(default: the registry in the current directory, its committed --ref only).")
@click.option("--cache", type=click.Path(path_type=Path), metavar="DIR",
              help="Folder of the server's private clones (default: ~/.cache/registry/api/<hash of the source>).")
def api_command(host: str, port: int, ref: str, refresh: float, origin: str | None, cache: Path | None) -> None:
    """Serve the registry over HTTP: JSON reads, metrics, promotion proposals (see docs/api.md).

    Tokens for POST .../transitions come from $REGISTRY_API_TOKENS ("token=user,token2=user2").
    """
    try:
        from registry.integrations.restapi import app as restapi
    except ImportError as exc:
        if exc.name not in ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client"):
            raise
        raise UsageError(f"`registry api` needs {exc.name}: pip install 'gitops-registry[api]'") from None
    restapi.serve(host, port, origin, ref, refresh, cache, echo=lambda line: echo(line, err=True))


@click.group(name="import")
def import_group() -> None:
    """Bring models over from another model registry (MLflow), one review branch per model."""


@import_group.command(name="mlflow")
@click.option("--tracking-uri", required=True, metavar="URI",
              help="MLflow tracking/registry URI, e.g. sqlite:///mlflow.db or http://host:5000.")
@click.option("--model", "models", multiple=True, metavar="NAME", help="Only this MLflow model (repeat).")
@click.option("--push", is_flag=True, help="Push the import branches to origin (weights go to DVC's remote anyway).")
@click.option("--no-push", is_flag=True, hidden=True, help="Deprecated: the default; does nothing.")
@json_option
def import_mlflow(tracking_uri: str, models: tuple[str, ...], push: bool, no_push: bool, as_json: bool) -> None:
    """Import MLflow registered models as registrations; prints the promotions for their stages."""
    from registry.integrations.importers import mlflow as importer

    if push and no_push:
        raise UsageError("--push and --no-push contradict each other; give --push to push, nothing to keep local")
    if no_push:
        echo("note: --no-push is deprecated and does nothing: the import branches stay local "
             "unless you give --push", err=True)
    reg = _open()
    with _progress() as progress:
        report = importer.import_mlflow(reg, tracking_uri, models, push=push, progress=progress)
    if as_json:
        _print_json(report.as_json())
    else:
        for model in report.models:
            _print_import(model)
        if not report.models:
            echo("No registered models in MLflow")
    if report.failed:
        sys.exit(1)


@click.command(name="pull")
@click.option("--stage", required=True, type=click.Choice(["production", "canary", "staging"]),
              help="The stage to serve.")
@click.option("--to", "to", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The serving folder; load DIR/<name>/current.")
@click.option("--from", "source", metavar="URL",
              help="The registry's git URL or path (default: the one DIR was last pulled from).")
@click.option("--ref", default="main", show_default=True, help="The branch or tag to follow.")
@click.option("--model", "models", multiple=True, metavar="NAME", help="Only this model (repeatable).")
@click.option("--trusted-keys", type=click.Path(path_type=Path), metavar="FILE",
              help="PEM public key(s), given out of band, that must have signed each version.")
@click.option("--insecure-skip-signature", is_flag=True,
              help="Load versions without checking signatures (sizes and digests are still checked).")
@click.option("--allow-rewind", is_flag=True,
              help="Accept a registry commit that does not descend from the last one applied.")
@click.option("--watch", is_flag=True, help="Keep polling; apply changes as they merge (stop with SIGTERM).")
@click.option("--interval", type=float, metavar="S", help="Seconds between polls with --watch.  [default: 30]")
@click.option("--metrics-file", type=click.Path(path_type=Path), metavar="FILE",
              help="Write Prometheus metrics to FILE after each poll.")
@json_option
def pull_command(stage: str, to: Path, source: str | None, ref: str, models: tuple[str, ...],
                 trusted_keys: Path | None, insecure_skip_signature: bool, allow_rewind: bool, watch: bool,
                 interval: float | None, metrics_file: Path | None, as_json: bool) -> None:
    """Serve a stage: download verified versions into DIR, switch DIR/<name>/current atomically."""
    import signal
    import threading

    from registry.serving import puller as serving

    if interval is not None and not watch:
        raise UsageError("--interval goes with --watch")
    stop = threading.Event()

    def show(event: dict[str, Any]) -> None:
        kind = event["event"]
        if as_json:
            click.echo(json.dumps(event))
        elif kind == "switched":
            share = f" ({event['traffic']:.0%} of traffic)" if "traffic" in event else ""
            was = f", was {event['previous']}" if event.get("previous") else ""
            echo(f"{event['model']}@{event['version']} now serving{share}{was}: {event['path']}")
        elif kind == "traffic":
            echo(f"{event['model']}@{event['version']} traffic {event['previous_traffic'] or 0:.0%} "
                 f"→ {event['traffic'] or 0:.0%}")
        elif kind == "removed":
            echo(f"{event['model']}@{event['version']} removed: no longer in {event['stage']}")
        elif kind == "applied":
            echo(f"{event['stage']} at registry commit {event['registry_commit'][:12]}: "
                 f"{len(event['switched'])} switched, {_size(event['downloaded_bytes'])} downloaded and verified")
        elif kind == "unchanged" and not watch:
            echo(f"{event['stage']} is up to date at registry commit {event['registry_commit'][:12]}")
        elif kind == "failed":
            for line in event["error"].splitlines():
                echo(f"error: {line}", err=True)
        elif kind in ("waiting", "watching", "stopped"):
            text = event.get("message") or (
                f"watching {event['source'] or 'the registry'} ({event['ref']}) every {event['interval']:g} s"
                if kind == "watching" else "stopped")
            echo(text, err=True)

    with _progress() as progress, serving.stop_on_signals(stop) as received:
        puller = serving.Puller(to, stage=stage, source=source, ref=ref, models=models, trusted_keys=trusted_keys,
                                insecure_skip_signature=insecure_skip_signature, allow_rewind=allow_rewind,
                                metrics_file=metrics_file, on_event=show, progress=progress, stop=stop)
        try:
            if watch:
                puller.watch(30.0 if interval is None else interval)
            else:
                puller.poll()
        except serving.Stopped as exc:
            exc.exit_code = 128 + (received[0] if received else signal.SIGTERM)
            raise


@click.group(name="keys")
def keys_group() -> None:
    """Signing keys: ECDSA P-256 key pairs in PEM files."""


@keys_group.command(name="generate")
@click.option("--out", "out", metavar="PREFIX", type=click.Path(path_type=Path), default=Path("registry-signing"),
              show_default=True, help="Write PREFIX.key (private, mode 0600) and PREFIX.pub (public).")
@click.option("--passphrase-env", metavar="VAR",
              help="Encrypt the private key with the passphrase in environment variable VAR "
                   "(default: REGISTRY_KEY_PASSPHRASE when it is set; otherwise unencrypted).")
@json_option
def keys_generate(out: Path, passphrase_env: str | None, as_json: bool) -> None:
    """Make a new signing key pair."""
    from registry.signing import keys

    made = keys.generate(out, keys.passphrase(passphrase_env))
    if as_json:
        _print_json({"private_key": str(made.private_key), "public_key": str(made.public_key),
                     "key_id": made.key_id, "encrypted": made.encrypted, "warnings": list(made.warnings)})
        return
    protection = "encrypted with your passphrase" if made.encrypted else "not encrypted"
    echo(f"Private key: {made.private_key} (mode 0600, {protection}; keep it secret)")
    echo(f"Public key:  {made.public_key} (key id {made.key_id[:16]})")
    for warning in made.warnings:
        echo(f"warning: {warning}", err=True)
    echo("Next: commit the .pub file into the registry (e.g. keys/) and list it under trusted_keys "
         "in registry.yaml")


@click.command(name="sign")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--key", "key", required=True, type=click.Path(path_type=Path), help="The private key (PREFIX.key).")
@click.option("--passphrase-env", metavar="VAR",
              help="Environment variable holding the key's passphrase (default: REGISTRY_KEY_PASSPHRASE).")
@click.option("--force", is_flag=True, help="Replace an existing signature.")
@click.option("--no-branch", is_flag=True, help="Commit on the current branch.")
@click.option("--push", is_flag=True, help="Push the branch to origin.")
@json_option
def sign_command(ref: str, key: Path, passphrase_env: str | None, force: bool, no_branch: bool, push: bool,
                 as_json: bool) -> None:
    """Sign a registered version, in a commit of its own on branch sign/NAME/VERSION."""
    from registry.changes import sign
    from registry.signing import keys

    name, version = _version_ref(ref)
    reg = _open()
    done = sign.sign_version(reg, name, version, key, passphrase=keys.passphrase(passphrase_env), force=force,
                             no_branch=no_branch, push=push)
    if as_json:
        _print_json({"name": done.name, "version": done.version, "branch": done.branch, "commit": done.commit,
                     "key_id": done.key_id, "files": list(done.files), "replaced": done.replaced})
        return
    where = f"on branch {done.branch}" if done.branch else "on the current branch"
    verb = "Re-signed" if done.replaced else "Signed"
    echo(f"{verb} {done.name}@{done.version} with key {done.key_id[:16]} {where} (commit {done.commit[:8]})")
    echo(f"  {len(done.files)} files: {', '.join(done.files)}")
    if done.branch and not push:
        echo(f"Next: git push -u origin {done.branch}, then open a pull request")


@click.command(name="verify")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--trusted-keys", "trusted_keys", type=click.Path(path_type=Path), metavar="FILE",
              help="Public keys to trust (one or more PEM); default: registry.yaml trusted_keys.")
@click.option("--signature", "signature", type=click.Path(path_type=Path), metavar="FILE",
              help="A signature bundle to check instead of the version's signature.json.")
@json_option
def verify_command(ref: str, trusted_keys: Path | None, signature: Path | None, as_json: bool) -> None:
    """Check a version's signature against trusted keys; exit 1 with the reason if it fails."""
    from registry.signing import verify as sign

    name, version = _version_ref(ref)
    verified = sign.verify_version(_open(), name, version, keys_file=trusted_keys, signature=signature)
    if as_json:
        _print_json(verified.as_json())
        return
    echo(f"{verified.name}@{verified.version}: signature verified by key {verified.key_id[:16]} "
         f"({verified.key_source})")
    echo(f"  {len(verified.files)} files: {', '.join(verified.files)}")


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), required=False)
def demo(directory: Path | None) -> None:
    """Run the whole story end to end in a fresh folder (default: a temporary one)."""
    from registry.integrations import demo as demo_module

    demo_module.run(directory, echo=echo)


def _echo_promoted(done: Any, as_json: bool, push: bool, on_replace: str) -> None:
    if as_json:
        _print_json({"name": done.name, "version": done.version, "from_stage": done.from_stage,
                     "to_stage": done.to_stage, "replaced": done.replaced, "branch": done.branch,
                     "commit": done.commit, "stages": done.stages.as_dict(),
                     "warnings": list(done.warnings)})
        return
    where = f"on branch {done.branch}" if done.branch else "on the current branch"
    echo(f"{done.name}@{done.version}: {done.from_stage} → {done.to_stage} {where} (commit {done.commit[:8]})")
    if done.replaced:
        echo(f"  {done.name}@{done.replaced}: production → {on_replace}")
    for warning in done.warnings:
        echo(f"warning: {warning}", err=True)
    if done.branch and not push:
        echo(f"Next: git push -u origin {done.branch}, then open a pull request")


def _print_import(model: Any) -> None:
    counts = {s: sum(v.status == s for v in model.versions) for s in ("registered", "skipped")}
    if model.status == "refused":
        echo(f"error: {model.label}: {model.error}" if model.label not in (model.error or "")
             else f"error: {model.error}", err=True)
        return
    where = f" on branch {model.branch}" if model.branch else ""
    pushed = " (pushed)" if model.pushed else ""
    summary = {"imported": f"{counts['registered']} registered, {counts['skipped']} already there",
               "up-to-date": "up to date, nothing to do", "conflict": "CONFLICT, nothing imported"}[model.status]
    echo(f"{model.name} ← {model.label}: {summary}{where}{pushed}")
    for v in model.versions:
        files = ", ".join(a.path + (" (dvc)" if a.storage == "dvc" else "") for a in v.artifacts)
        echo(f"  {v.version:<10} ← version {v.source_version:<4} {v.status:<12} {v.stage:<11} "
             + (v.message if v.status == "conflict" else files))
    for note in model.notes:
        echo(f"  note: {note}")
    if model.status == "conflict":
        echo(f"error: {model.name}: {model.error}", err=True)
        return
    if model.status == "imported" and not model.pushed:
        echo(f"  Next: git push -u origin {model.branch}, then open a pull request")
    elif model.status == "imported":
        echo(f"  Next: open a pull request for {model.branch}")
    if model.promotions:
        when = "Once it is merged, bring" if model.status == "imported" else "Bring"
        echo(f"  {when} the stages over through the lifecycle, one reviewed promotion at a time:")
        for command in model.promotions:
            echo(f"    {command}")


def _version_ref(ref: str) -> tuple[str, str]:
    from registry.files.names import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise UsageError(f"{ref}: give a version, NAME@VERSION (e.g. {name}@1.0.0)")
    return name, version


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on a terminal for long copies; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from registry.files.safetext import printable

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), transient=True,
                  # Not through rich: DVC initialises colorama inside this block, and its exit-time
                  # reset would then be printed by rich as a visible "[0m".
                  redirect_stdout=False, redirect_stderr=False) as bar:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(escape(printable(name)), total=total)
            bar.update(tasks[name], completed=done)

        yield update
