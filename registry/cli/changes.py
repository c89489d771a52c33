"""The commands that change the registry: init, register, promote and the lifecycle, gc, codeowners, workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from registry.cli.main import (  # the helpers the command modules share
    _next_step,
    _open,
    _print_json,
    _progress,
    _size,
    _where,
    echo,
    json_option,
)
from registry.errors import UsageError
from registry.files.names import ALL_STAGES


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--dvc-remote", metavar="URL", help="DVC remote for artifacts (default: a folder beside PATH).")
@json_option
def init(path: Path, dvc_remote: str | None, as_json: bool) -> None:
    """Make a registry repository at PATH (git, DVC, registry.yaml, workflow)."""
    from registry import api
    from registry.changes import init as create

    reg = api.init(path, dvc_remote)
    remote = dvc_remote or str(create.default_remote(reg.root))
    if as_json:
        _print_json({"root": str(reg.root), "dvc_remote": remote})
        return
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
    echo(f"Registered {done.name}@{done.version} {_where(done.branch)} (commit {done.commit[:8]})")
    if done.signed_by:
        echo(f"  signed with key {done.signed_by}")
    for artifact in done.card.artifacts:
        echo(f"  {artifact.path}  {_size(artifact.size)}  {artifact.storage}  sha256:{artifact.sha256[:16]}")
    for warning in done.warnings:
        echo(f"warning: {warning}", err=True)
    _next_step(done.branch, push)


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
        echo(f"Purge marks committed {_where(branch)} (commit {commit[:8]}); nothing is deleted yet. Open a pull "
             "request; once it is merged, run `registry gc --apply` to delete the weights")


@click.command()
@json_option
def codeowners(as_json: bool) -> None:
    """Regenerate .github/CODEOWNERS from registry.yaml roles and model owners."""
    from registry.changes import codeowners as module

    changed = module.write(_open())
    if as_json:
        _print_json({"path": module.CODEOWNERS_FILE, "changed": changed})
        return
    echo(f"{module.CODEOWNERS_FILE} {'updated; commit it' if changed else 'is up to date'}")


@click.command(name="workflow")
@json_option
def workflow_command(as_json: bool) -> None:
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
    if as_json:
        _print_json({"path": templates.WORKFLOW_FILE, "changed": changed})
        return
    echo(f"{templates.WORKFLOW_FILE} {'updated; commit it in a pull request' if changed else 'is up to date'}")


def _echo_promoted(done: Any, as_json: bool, push: bool, on_replace: str) -> None:
    if as_json:
        _print_json({"name": done.name, "version": done.version, "from_stage": done.from_stage,
                     "to_stage": done.to_stage, "replaced": done.replaced, "branch": done.branch,
                     "commit": done.commit, "stages": done.stages.as_dict(),
                     "warnings": list(done.warnings)})
        return
    echo(f"{done.name}@{done.version}: {done.from_stage} → {done.to_stage} {_where(done.branch)} (commit {done.commit[:8]})")
    if done.replaced:
        echo(f"  {done.name}@{done.replaced}: production → {on_replace}")
    for warning in done.warnings:
        echo(f"warning: {warning}", err=True)
    _next_step(done.branch, push)
