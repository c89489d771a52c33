"""The serving client (`registry pull`): loaded only when it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from registry.cli.main import (  # the helpers the command modules share
    _progress,
    _size,
    echo,
    json_option,
)
from registry.errors import UsageError


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
