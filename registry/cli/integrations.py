"""The commands that connect the registry to other tools (api, mcp, site, import, demo)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from registry.cli.main import (  # the helpers the command modules share
    _open,
    _print_json,
    _progress,
    echo,
    json_option,
)
from registry.errors import RegistryError, UsageError


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
@json_option
def api_command(host: str, port: int, ref: str, refresh: float, origin: str | None, cache: Path | None,
                as_json: bool) -> None:
    """Serve the registry over HTTP: JSON reads, metrics, promotion proposals (see docs/api.md).

    Tokens for POST .../transitions come from $REGISTRY_API_TOKENS ("token=user,token2=user2").
    """
    try:
        from registry.integrations.restapi import app as restapi
    except ImportError as exc:
        if exc.name not in ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client"):
            raise
        raise UsageError(f"`registry api` needs {exc.name}: pip install 'gitops-registry[api]'") from None

    def say(line: str) -> None:  # the server's own messages, on stderr: one JSON object a line with --json
        if as_json:
            click.echo(json.dumps({"message": line}), err=True)
        else:
            echo(line, err=True)

    restapi.serve(host, port, origin, ref, refresh, cache, echo=say)


@click.command(name="mcp")
@click.option("--registry", "registry_path", type=click.Path(path_type=Path, file_okay=False), default=".",
              show_default=True, help="The registry to serve (any folder inside its work tree).")
@json_option
def mcp_command(registry_path: Path, as_json: bool) -> None:
    """Serve the registry to AI agents over MCP (stdio): read tools, and promotion proposals
    pushed as branches for human review.

    Its stdout is MCP's JSON-RPC either way; --json makes an error that stops it a JSON object too.
    """
    try:
        from registry.integrations import mcp as mcpserver
    except ModuleNotFoundError as exc:
        missing = (exc.name or "mcp").partition(".")[0]
        raise RegistryError(f"`registry mcp` needs the MCP SDK ({missing} is not installed): "
                            "pip install 'gitops-registry[mcp]'") from None
    mcpserver.serve(registry_path)


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


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), required=False)
@json_option
def demo(directory: Path | None, as_json: bool) -> None:
    """Run the whole story end to end in a fresh folder (default: a temporary one)."""
    from registry.integrations import demo as demo_module

    if not as_json:
        demo_module.run(directory, echo=echo)
        return
    transcript: list[str] = []
    root = demo_module.run(directory, echo=transcript.append)
    _print_json({"directory": str(root), "transcript": transcript})


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
