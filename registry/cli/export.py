"""`registry export`: a version in the layout another model server loads (loaded only when it runs)."""

from __future__ import annotations

from pathlib import Path

import click

from registry.cli.main import _open, _print_json, _progress, _version_ref, echo, json_option


@click.command(name="export")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--format", "fmt", required=True, type=click.Choice(["mar", "mlflow", "v2", "kserve"]),
              help="mar: a TorchServe archive; mlflow: an MLflow pyfunc model folder; v2: the V2 (MLServer, "
                   "KServe, Triton) model repository layout; kserve: an InferenceService YAML.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="A new or empty folder; it appears only once the export is complete.")
@click.option("--at", default="HEAD", show_default=True, help="The commit, branch or tag to export from.")
@click.option("--storage-uri", metavar="URI",
              help="kserve: where KServe reads the model (default: the DVC remote URL of the version's "
                   "one DVC artifact, as `registry manifest` gives it).")
@click.option("--trusted-keys", type=click.Path(path_type=Path), metavar="FILE",
              help="PEM public key(s): the version's signature must verify against one (as `registry pull` "
                   "requires) before anything is exported.")
@json_option
def export_command(ref: str, fmt: str, out: Path, at: str, storage_uri: str | None, trusted_keys: Path | None,
                   as_json: bool) -> None:
    """Export NAME@VERSION for another model server, its artifacts checked against the card first."""
    from registry.integrations.export import export

    name, version = _version_ref(ref)
    reg = _open()
    with _progress() as progress:
        done = export(reg, name, version, fmt, out, at=at, storage_uri=storage_uri, trusted_keys=trusted_keys,
                      progress=progress)
    if as_json:
        _print_json(done.as_json())
        return
    signed = f", signed by {done.signed_by[:16]}" if done.signed_by else ""
    echo(f"Exported {name}@{version} as {fmt} to {done.out} (registry commit {done.commit[:12]}{signed})")
    for file in done.files:
        echo(f"  {file}")
