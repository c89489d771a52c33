"""`registry validate`: whole-registry checks and the blob-id cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git


def cache_file(repo: Path) -> Path:
    return repo / ".git" / "registry" / "validate-cache.json"


def test_valid_registry_fills_the_cache(registered: Path, cli: Callable[..., Result]) -> None:
    result = cli("validate", cwd=registered)
    assert (result.code, result.out.strip()) == (0, "valid")
    entries = json.loads(cache_file(registered).read_text())["entries"]
    card_blob = git(registered, "rev-parse", "HEAD:models/credit-approval/1.0.0/card.yaml").strip()
    assert f"card:{card_blob}" in entries


def test_second_run_reads_the_cache_keyed_on_blob_ids(registered: Path, cli: Callable[..., Result]) -> None:
    assert cli("validate", cwd=registered).code == 0
    # Poison the cached result of one blob: if validate reads the cache, it reports the poison.
    path = cache_file(registered)
    stored = json.loads(path.read_text())
    blob = git(registered, "rev-parse", "HEAD:models/credit-approval/model.yaml").strip()
    stored["entries"][f"model:{blob}"]["p"] = [["models/credit-approval/model.yaml", "poisoned", 1, "x"]]
    path.write_text(json.dumps(stored))
    assert "poisoned" in cli("validate", cwd=registered).err


def test_an_edited_file_is_not_answered_from_the_cache(registered: Path, cli: Callable[..., Result]) -> None:
    assert cli("validate", cwd=registered).code == 0
    model = registered / "models/credit-approval/model.yaml"
    model.write_text(model.read_text().replace("owners:", "owners: 7\nx:"))
    result = cli("validate", cwd=registered)
    assert result.code == 1
    assert "models/credit-approval/model.yaml:" in result.err


def test_a_stale_cache_key_is_ignored(registered: Path, cli: Callable[..., Result]) -> None:
    assert cli("validate", cwd=registered).code == 0
    path = cache_file(registered)
    stored = json.loads(path.read_text())
    for entry in stored["entries"].values():
        entry["p"] = [["x", "poisoned", None, None]]
    stored["key"] = "older-version"
    path.write_text(json.dumps(stored))
    assert cli("validate", cwd=registered).code == 0


def test_validate_given_files_only_reports_those(registered: Path, cli: Callable[..., Result]) -> None:
    stages = registered / "models/credit-approval/stages.yaml"
    stages.write_text(stages.read_text() + "production: 9.9.9\n")
    card = registered / "models/credit-approval/1.0.0/card.yaml"
    assert cli("validate", str(card), cwd=registered).code == 0
    result = cli("validate", str(stages), cwd=registered)
    assert result.code == 1 and "stages.yaml:" in result.err


def test_untracked_artifact_and_missing_pointer(registered: Path, cli: Callable[..., Result]) -> None:
    folder = registered / "models/credit-approval/1.0.0"
    (folder / "extra.bin").write_bytes(b"\0" * 10)
    (folder / "model.safetensors.dvc").unlink()
    result = cli("validate", "--json", cwd=registered)
    data = json.loads(result.out)
    assert result.code == 1 and data["valid"] is False
    messages = {(p["path"], p["message"].split(";")[0]) for p in data["problems"]}
    assert ("models/credit-approval/1.0.0/extra.bin", "is not listed in card.yaml's artifacts") in messages
    assert any(path.endswith("1.0.0/card.yaml") and "model.safetensors.dvc is missing" in msg
               for path, msg in messages)
