"""The built-in model server (`registry serve DIR`): loaded only when it runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from registry.cli.main import echo, json_option
from registry.errors import UsageError


@click.command(name="serve")
@click.argument("directory", type=click.Path(path_type=Path), metavar="DIR")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port; the line printed says which).")
@click.option("--poll", default=0.5, show_default=True, type=click.FloatRange(min=0.05), metavar="S",
              help="Seconds between looks at DIR's links and state.json.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes per served version (each answers one request at a time).")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0.1), metavar="S",
              help="Seconds a request may take (its worker is then replaced); a load gets 5x as long, at least 300.")
@json_option
def serve_command(directory: Path, host: str, port: int, poll: float, workers: int, timeout: float,
                  as_json: bool) -> None:
    """Serve the models in DIR (kept by `registry pull`) over the Open Inference Protocol (V2).

    Each version runs in sandboxed worker processes; when `registry pull` moves a
    model's `current` or `canary` link, the new version is loaded and checked on its
    input_example beside the old one, then swapped in without dropping a request.
    SIGTERM or Ctrl-C stops it and its workers. Its messages go to stderr (with --json,
    one `{"message": ...}` object a line).
    """
    try:
        from registry.serving.server import app
    except ImportError as exc:
        if exc.name not in ("fastapi", "uvicorn", "starlette", "pydantic", "prometheus_client"):
            raise
        raise UsageError(f"`registry serve` needs {exc.name}: pip install 'gitops-registry[serve]'") from None

    def say(line: str) -> None:
        if as_json:
            click.echo(json.dumps({"message": line}), err=True)
        else:
            echo(line, err=True)

    app.serve(directory, host, port, poll, workers, timeout, say)
