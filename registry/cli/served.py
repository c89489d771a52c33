"""`registry served`: which version each host served, per model and role, at a moment (from receipts).

JSON (``--json``), stable for machines::

    {"at": "2026-12-06T07:30:00+00:00",
     "served": [{"host", "model", "role", "version", "since", "action", "previous", "stage",
                 "registry_commit", "signed_by", "verified", "servers",
                 "receipt": "FILE:LINE", "receipt_signature": "valid"|"unchecked"|"unsigned",
                 "receipt_key_id": str|null}, ...],
     "problems": [{"file", "line", "message"}, ...],   # malformed or refused lines (exit 1)
     "warnings": [{"file", "line", "message"}, ...]}   # torn last lines (skipped, exit 0)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from registry.cli.main import _print_json, echo, json_option
from registry.errors import Problem, UsageError

if TYPE_CHECKING:
    from registry.serving.receipts import Receipt


@click.command(name="served")
@click.option("--receipts", "files", required=True, multiple=True, type=click.Path(path_type=Path),
              metavar="FILE", help="A receipts file (DIR/receipts.jsonl); repeat for several hosts.")
@click.option("--at", "at", default="now", show_default=True, metavar="TIME",
              help="ISO 8601 time (no zone: UTC) or a date (its start, 00:00 UTC).")
@click.option("--model", metavar="NAME", help="Only this model.")
@click.option("--host", metavar="H", help="Only this host.")
@click.option("--trusted-keys", type=click.Path(path_type=Path), metavar="FILE",
              help="Host public key(s) (PEM): refuse receipts that are unsigned or badly signed.")
@json_option
def served_command(files: tuple[Path, ...], at: str, model: str | None, host: str | None,
                   trusted_keys: Path | None, as_json: bool) -> None:
    """Which version each host served (per model and role) at TIME, from pull receipts."""
    from registry.serving import receipts as receipt_log
    from registry.signing.keys import load_public_keys

    moment = receipt_log.parse_time(at)
    trusted = None
    if trusted_keys is not None:
        if not trusted_keys.is_file():
            raise UsageError(f"--trusted-keys {trusted_keys}: no such file; give the hosts' PEM public keys")
        trusted = load_public_keys(trusted_keys)
    reading = receipt_log.read_receipts(files, trusted)
    rows = receipt_log.served_at(reading.receipts, moment, model=model, host=host)
    if as_json:
        _print_json({
            "at": moment.isoformat(timespec="seconds"),
            "served": [receipt_log.as_json(r) for r in rows],
            "problems": [_problem(p) for p in reading.problems],
            "warnings": [_problem(p) for p in reading.warnings],
        })
    else:
        for problem in reading.warnings:
            echo(f"warning: {problem}", err=True)
        for problem in reading.problems:
            echo(f"error: {problem}", err=True)
        _table(rows, moment.isoformat(timespec="seconds"), checked=trusted is not None)
    if reading.problems:
        sys.exit(1)  # the answer stands without them, but a script must notice


def _problem(problem: Problem) -> dict[str, object]:
    return {"file": problem.path, "line": problem.line, "message": problem.message}


def _table(rows: list[Receipt], at: str, checked: bool) -> None:
    if not rows:
        echo(f"nothing served at {at} according to these receipts")
        return
    header = ("HOST", "MODEL", "ROLE", "VERSION", "SINCE", "STAGE", "RECEIPT")
    table = [header]
    for row in rows:
        data = row.data
        version = data["version"]
        if data["action"] == "rollback" and data.get("previous"):
            version += f" (rolled back from {data['previous']})"
        key = (data.get("signature") or {}).get("key_id") or ""
        receipt = {"valid": f"signed {key[:12]}", "unchecked": f"signed {key[:12]} (not checked)",
                   "unsigned": "unsigned"}[row.signature]
        table.append((data["host"], data["model"], data["role"], version, data["time"],
                      str(data.get("stage") or "-"), receipt))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    echo(f"served at {at}" + ("" if checked else " (receipt signatures not checked: give --trusted-keys)"))
    for line in table:
        echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
