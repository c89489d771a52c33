"""`registry evaluate`: recompute a version's metrics on new labelled data; the drift check (loaded only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from registry.cli.main import _open, _print_json, _version_ref, echo, json_option

if TYPE_CHECKING:
    from registry.gates import drift


@click.command(name="evaluate")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--data", "data_file", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Labelled data: an .npz with arrays x and y, or a .csv with a label column.")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Recompute only this card metric (repeatable; default: every one that can be).")
@click.option("--textfile", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Write the result as Prometheus text to FILE, atomically (node-exporter textfile collector).")
@json_option
def evaluate_command(ref: str, data_file: Path, metrics: tuple[str, ...], textfile: Path | None,
                     as_json: bool) -> None:
    """Run NAME@VERSION on new labelled data and compare its metrics with its card.

    The model runs as the metrics gate runs it (sandbox, its declared environment). With
    policy.drift.max_drop in registry.yaml (or the model's model.yaml), exits 1 when a metric
    dropped by more than allowed; for rmse, mae, mse or a loss a drop is a rise.
    """
    from registry.files.fsutil import atomic_write
    from registry.gates import drift

    model, version = _version_ref(ref)
    report = drift.evaluate(_open(), model, version, data_file, metrics)
    if textfile is not None:
        atomic_write(textfile, report.prometheus())
    if as_json:
        _print_json(report.as_json())
    else:
        _print_table(report)
    if report.exceeded:
        sys.exit(1)


def _print_table(report: drift.DriftReport) -> None:
    echo(f"{report.model}@{report.version} on {report.data}: {report.message}")
    rows = [("metric", "card", "now", "change", "allowed", "verdict")]
    for m in report.metrics:
        verdict = "DRIFT" if m.exceeded else ("ok" if m.allowed is not None else "-")
        direction = " (lower is better)" if m.lower_is_better else ""
        rows.append((m.metric + direction, f"{m.card:.4f}", f"{m.now:.4f}", f"{m.change:+.4f}",
                     "-" if m.allowed is None else f"{m.allowed:g}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not report.has_policy:
        echo("no drift policy for these metrics (registry.yaml policy.drift.max_drop): reported only")
    elif report.exceeded:
        names = ", ".join(m.metric for m in report.metrics if m.exceeded)
        echo(f"drift: {names} dropped by more than policy.drift.max_drop allows")
    else:
        echo("within policy.drift.max_drop")
