"""The read commands (ls, show, validate, manifest, log): loaded only when one of them runs."""

from __future__ import annotations

import json
import sys
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
from registry.errors import UsageError
from registry.files.names import ALL_STAGES


@click.command(name="ls")
@click.option("--stage", type=click.Choice(ALL_STAGES), help="Only models with a version in this stage.")
@click.option("--tag", metavar="K=V", help="Only models whose model.yaml tags, or latest card's tags, match.")
@json_option
def ls_command(stage: str | None, tag: str | None, as_json: bool) -> None:
    """Inventory: each model's latest and staged versions."""
    from registry.queries import inventory

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
        table.add_row(*_cells(s.name, s.latest or "-", held.production or "-", canary,
                              ", ".join(held.staging) or "-", ", ".join(held.deprecated) or "-"))
        warnings += [f"{s.name}@{v} is past its sunset ({d})" for v, d in inventory.past_sunset(held)]
    console = _console()
    if summaries:
        console.print(table)
    else:
        console.print("No models" + (" match" if stage or tag else " registered yet"))
    for warning in warnings:
        echo(f"warning: {warning}", err=True)


@click.command()
@click.argument("ref", metavar="NAME[@VERSION]")
@json_option
def show(ref: str, as_json: bool) -> None:
    """A model (stages, versions) or a version (card, stage, signature, history)."""
    from registry.files.names import parse_ref
    from registry.queries import inventory

    name, version = parse_ref(ref)
    reg = _open()
    shown = inventory.show_version(reg, name, version) if version else inventory.show_model(reg, name)
    for version_text, sunset in shown.past_sunset:
        echo(f"warning: {name}@{version_text} is past its sunset ({sunset})", err=True)
    data = shown.as_json()
    if as_json:
        _print_json(data)
        return
    if version:
        _show_version(data)
    else:
        _show_model(data)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@json_option
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Check schema and consistency of the given files, or of the whole registry."""
    reg = _open()
    problems = reg.validate(list(paths) or None)
    if as_json:
        from registry.queries.shapes import ValidationReport

        _print_json(ValidationReport.of(problems).as_json())
    else:
        for problem in problems:
            echo(str(problem), err=True)
        if not problems:
            echo("valid")
    if problems:
        if not as_json:
            echo(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", err=True)
        sys.exit(1)


@click.command()
@click.option("--stage", default="production", show_default=True, type=click.Choice(["production", "canary", "staging"]))
@click.option("--at", "at", default="HEAD", show_default=True, help="Registry commit, branch or tag.")
@click.option("--as-of", "as_of", metavar="TIME",
              help="What was served then: the last first-parent commit of --at at or before TIME "
                   "(ISO 8601, e.g. 2026-11-01T12:00Z; no offset means UTC).")
@json_option
def manifest(stage: str, at: str, as_of: str | None, as_json: bool) -> None:
    """What serving needs for a stage: versions, artifacts, digests, locations."""
    reg = _open()
    data = reg.manifest(stage=stage, at=at, as_of=as_of)
    if as_json:
        _print_json(data)
        return
    echo(f"{stage} at {data['registry_commit'][:8]}")
    for name, model in data["models"].items():
        share = f" ({model['traffic']:.0%})" if "traffic" in model else ""
        echo(f"  {name}@{model['version']}{share}")
        for artifact in model["artifacts"]:
            echo(f"    {artifact['path']}  {_size(artifact['size'])}  sha256:{artifact['sha256'][:16]}")


@click.command()
@click.argument("ref", metavar="[NAME[@VERSION]]", required=False)
@click.option("--model", "model", metavar="NAME", help="Only this model (same as giving NAME).")
@click.option("--action", "actions", multiple=True, metavar="ACTION",
              help="Only these actions (repeatable): registered, promoted, rolled back, deprecated, archived, purged, "
                   "policy (registry.yaml changes)…")
@click.option("--since", metavar="DATE", help="Only changes on or after this date (YYYY-MM-DD).")
@click.option("--until", metavar="DATE", help="Only changes on or before this date (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl", "csv"]), default=None,
              help="Output format (--json is the same as --format json).")
@json_option
def log(ref: str | None, model: str | None, actions: tuple[str, ...], since: str | None, until: str | None,
        fmt: str | None, as_json: bool) -> None:
    """The audit log: who changed which stage, when, why, approved by whom."""
    from registry.files.names import parse_ref
    from registry.queries import audit

    name, version = parse_ref(ref) if ref else (None, None)
    if model is not None:
        if name is not None and name != model:
            raise UsageError(f"give the model once: {ref} and --model {model} disagree")
        name = model
    fmt = "json" if as_json else (fmt or "table")
    reg = _open()
    entries = reg.log(name, version, since, until=until, actions=actions)
    if fmt == "json":
        _print_json([e.as_json() for e in entries])
    elif fmt == "jsonl":
        for e in entries:
            click.echo(json.dumps(e.as_json()))
    elif fmt == "csv":
        click.echo(audit.to_csv(entries), nl=False)
    else:
        for e in entries:
            stage = f"{e.from_stage} → {e.to_stage}" if e.from_stage else (e.to_stage or "")
            ref_text = f"{e.model}@{e.version}" if e.model else "registry.yaml"
            if e.action == "policy":
                stage = e.detail or ""
            approved = ""
            if e.approved_by:
                how = "merged by" if e.approval_source == "merge" else "approved by"
                approved = f", {how} {_who(e.approved_by)}" + (" (self-approved)" if e.self_approved else "")
            pr = f" (#{e.pr})" if e.pr else ""
            echo(f"{e.timestamp[:10]} {e.action:<11} {ref_text:<24} {stage:<26} "
                 f"by {_who(e.performed_by)}{approved}{pr}" + (f": {e.reason}" if e.reason else ""))
        if not entries:
            echo("No changes recorded")


def _show_model(data: dict[str, Any]) -> None:
    echo(f"{data['name']}: {data['description']}")
    echo(f"  owners: {', '.join(data['owners']) or '-'}   task: {data['task'] or '-'}")
    for entry in data["versions"]:
        metrics = ", ".join(f"{k}={v}" for k, v in entry["metrics"].items())
        echo(f"  {entry['version']:<14} {entry['stage']:<12} {entry['created'] or '':<11} {metrics}")


def _show_version(data: dict[str, Any]) -> None:
    echo(f"{data['name']}@{data['version']}  [{data['stage']}]")
    echo(f"  {data['description'].strip()}")
    echo(f"  created {data['created']}  framework {data['framework']}  task {data['task']}")
    echo("  metrics: " + ", ".join(f"{k}={v}" for k, v in data["metrics"].items()))
    for artifact in data["artifacts"]:
        echo(f"  {artifact['path']}  {_size(artifact['size'])}  {artifact['storage']}  sha256:{artifact['sha256'][:16]}")
    echo(f"  signing: {data['signing']['status']}")
    for entry in data["history"]:
        echo(f"  {entry['timestamp'][:10]} {entry['action']:<11} {entry['from_stage'] or '':>11} → "
             f"{entry['to_stage'] or '':<11} by {_who(entry['performed_by'])}")


def _cells(*texts: str) -> list[Any]:
    """Table cells for rich: neutralised like every printed text, and never read as markup."""
    from rich.text import Text

    from registry.files.safetext import printable

    return [Text(printable(text)) for text in texts]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _who(person: str) -> str:
    """A person's name without the e-mail, for tables (--json keeps both)."""
    return ", ".join(p.split(" <")[0] for p in person.split(", "))
