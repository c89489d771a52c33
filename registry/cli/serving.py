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
@click.option("--host", "host", metavar="NAME",
              help="This host's name in DIR/receipts.jsonl.  [default: the machine's host name]")
@click.option("--host-key", type=click.Path(path_type=Path), metavar="FILE",
              help="Sign each receipt with this host's private key (PEM; passphrase from $REGISTRY_KEY_PASSPHRASE).")
@click.option("--server", "servers", multiple=True, metavar="KIND=URL",
              help="After a verified switch, make this model server serve it (repeatable): torchserve=URL, "
                   "v2=URL,repository=DIR, http=URL[,timeout=S] or command=PROGRAM; rolled back if it refuses.")
@click.option("--per-model", is_flag=True,
              help="Switch the models that verify even when another is refused (it keeps its version; exit 1).")
@click.option("--with-canary", is_flag=True,
              help="With --stage production: also serve each model's canary at DIR/<name>/canary.")
@json_option
def pull_command(stage: str, to: Path, source: str | None, ref: str, models: tuple[str, ...],
                 trusted_keys: Path | None, insecure_skip_signature: bool, allow_rewind: bool, watch: bool,
                 interval: float | None, metrics_file: Path | None, servers: tuple[str, ...], per_model: bool,
                 with_canary: bool, host: str | None, host_key: Path | None, as_json: bool) -> None:
    """Serve a stage: download verified versions into DIR, switch DIR/<name>/current atomically."""
    import signal
    import sys
    import threading

    from registry.serving import puller as serving
    from registry.serving.receipts import ReceiptLog

    if interval is not None and not watch:
        raise UsageError("--interval goes with --watch")
    stop = threading.Event()

    def show(event: dict[str, Any]) -> None:
        kind = event["event"]
        if as_json:
            if not (kind == "failed" and not watch and not event.get("held")):
                click.echo(json.dumps(event))  # a one-shot pull's failure is the command's {"error": ...}
        elif kind == "switched":
            share = f" ({event['traffic']:.0%} of traffic)" if "traffic" in event else ""
            role = " as canary" if event.get("role") == "canary" else ""
            was = f", was {event['previous']}" if event.get("previous") else ""
            told = f" (servers: {', '.join(event['servers'])})" if event.get("servers") else ""
            echo(f"{event['model']}@{event['version']} now serving{role}{share}{was}: {event['path']}{told}")
        elif kind == "rolled_back":
            back = f"back on {event['version']}" if event.get("version") else "not served"
            echo(f"{event['model']}: rolled back, {back} ({event['from_version']} refused: "
                 f"{event['reason'].splitlines()[0]})", err=True)
        elif kind == "traffic":
            echo(f"{event['model']}@{event['version']} traffic {event['previous_traffic'] or 0:.0%} "
                 f"→ {event['traffic'] or 0:.0%}")
        elif kind == "removed":
            gone = "canary" if event.get("role") == "canary" else event["stage"]
            echo(f"{event['model']}@{event['version']} removed: no longer in {gone}")
        elif kind == "applied":
            held = f", {len(event['held'])} held ({', '.join(event['held'])})" if event.get("held") else ""
            canaries = f", {len(event['canaries_switched'])} canary switched" if event.get("canaries_switched") else ""
            echo(f"{event['stage']} at registry commit {event['registry_commit'][:12]}: "
                 f"{len(event['switched'])} switched{canaries}{held}, {_size(event['downloaded_bytes'])} downloaded "
                 "and verified")
        elif kind == "unchanged" and not watch:
            echo(f"{event['stage']} is up to date at registry commit {event['registry_commit'][:12]}")
        elif kind == "failed":
            for line in event["error"].splitlines():
                echo(f"error: {line}", err=True)
            if event.get("held"):
                echo(f"{event['model']} keeps serving what it served (--per-model); the next pull tries it again",
                     err=True)
            if "retry_in" in event:
                why = f"waiting for {event['waiting_for']}; checking" if event.get("waiting_for") else "retrying"
                echo(f"{why} in {event['retry_in']:g} s ({event['next_try']})", err=True)
        elif kind in ("waiting", "watching", "stopped"):
            text = event.get("message") or (
                f"watching {event['source'] or 'the registry'} ({event['ref']}) every {event['interval']:g} s"
                if kind == "watching" else "stopped")
            echo(text, err=True)

    with _progress() as progress, serving.stop_on_signals(stop) as received:
        puller = serving.Puller(to, stage=stage, source=source, ref=ref, models=models, trusted_keys=trusted_keys,
                                insecure_skip_signature=insecure_skip_signature, allow_rewind=allow_rewind,
                                metrics_file=metrics_file, on_event=show, progress=progress, stop=stop,
                                servers=servers, per_model=per_model, with_canary=with_canary,
                                receipts=ReceiptLog(to, host=host, key=host_key))
        try:
            if watch:
                puller.watch(30.0 if interval is None else interval)
            elif puller.poll().held:
                sys.exit(1)  # the held models' `failed` events said why
        except serving.Stopped as exc:
            exc.exit_code = 128 + (received[0] if received else signal.SIGTERM)
            raise
        except serving.PullError as exc:
            if exc.reported and not as_json:  # its `failed` event said it already
                sys.exit(exc.exit_code)
            raise
