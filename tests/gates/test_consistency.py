"""One consistency rule for `registry validate` and the consistency gate: every file under models/
is a registry file or an artifact its card lists (by full path), and a regular file."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import Result, git, snapshot
from tests.gates.conftest import check, failures, register


def gate_failures(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> list[str]:
    """Run the consistency gate; it must fail, change nothing and print no traceback."""
    before = snapshot(repo / "models")
    out = tmp_path / "report.json"
    result = cli("check", "--base", "main", "--gate", "consistency", "--json", str(out), cwd=repo)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.out + result.err
    assert snapshot(repo / "models") == before
    return [g["message"] for g in json.loads(out.read_text())["gates"] if g["status"] == "fail"]


def add_file(repo: Path, rel: str, data: bytes = b"\x80\x04K\x01.") -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    git(repo, "add", "-f", rel)
    git(repo, "commit", "--quiet", "-m", f"Add {rel}")


@pytest.mark.parametrize("rel", ["sub/card.yaml", "sub/predict.py", "nested/deeper/model.safetensors"])
def test_a_nested_file_named_like_a_listed_one_fails(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                     rel: str) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    add_file(gated, f"models/m/1.1.0/{rel}")

    messages = gate_failures(cli, gated, tmp_path)

    assert f"models/m/1.1.0/{rel}: is not listed in card.yaml's artifacts; list it there by its path in the " \
           "version folder, or remove it" in messages


@pytest.mark.parametrize(("rel", "expected"), [
    ("models/m/1.3.0.bak/model.pkl", "models/m/1.3.0.bak/model.pkl: '1.3.0.bak' is not a semantic version folder"),
    ("models/m/latest/model.pkl", "models/m/latest/model.pkl: 'latest' is not a semantic version folder"),
    ("models/model.pkl", "models/model.pkl: stray file: models/ holds one folder per model"),
    ("models/m/model.pkl", "models/m/model.pkl: stray file: a model folder holds model.yaml, stages.yaml"),
])
def test_a_path_outside_a_version_folder_fails(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                               rel: str, expected: str) -> None:
    git(gated, "switch", "--quiet", "-c", "stray")
    add_file(gated, rel)

    messages = gate_failures(cli, gated, tmp_path)

    assert any(m.startswith(expected) for m in messages), messages


def test_a_git_artifact_committed_as_a_symlink_fails(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    # config.txt holds exactly the text of the link's target: as a blob, the symlink is
    # byte for byte the file the card describes; only its git mode (120000) tells them apart.
    target = tmp_path / "link" / "config.txt"
    target.parent.mkdir()
    target.write_text("model.safetensors")
    register(cli, gated, tmp_path, "1.1.0", extra=[target])
    link = gated / "models/m/1.1.0/config.txt"
    link.unlink()
    os.symlink("model.safetensors", link)
    git(gated, "add", str(link))
    git(gated, "commit", "--quiet", "-m", "config.txt as a symlink")
    assert git(gated, "ls-tree", "HEAD", "models/m/1.1.0/config.txt").startswith("120000")

    messages = gate_failures(cli, gated, tmp_path)

    assert any(m.startswith("models/m/1.1.0/config.txt: is a symbolic link") for m in messages), messages
    result = cli("validate", cwd=gated)
    assert result.code == 1 and "models/m/1.1.0/config.txt: is a symbolic link" in result.err


def test_validate_and_the_gate_give_the_same_verdict_on_the_weights_digest(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    card = gated / "models/m/1.1.0/card.yaml"
    data = yaml.safe_load(card.read_text())
    digest = next(a["sha256"] for a in data["artifacts"] if a["path"] == "model.safetensors")
    card.write_text(card.read_text().replace(digest, "ab" * 32))  # same size, another sha256
    git(gated, "commit", "--quiet", "-am", "Claim other weights")
    before = snapshot(gated / "models")

    result = cli("validate", "--json", cwd=gated)

    assert result.code == 1, result.out
    problems = json.loads(result.out)["problems"]
    located = [p for p in problems if p["path"] == "models/m/1.1.0/card.yaml" and p["field"] == "artifacts[0]"]
    assert located and "models/m/1.1.0/model.safetensors is " in located[0]["message"]
    assert "the card says" in located[0]["message"] and "ab" * 32 in located[0]["message"]
    assert snapshot(gated / "models") == before
    # The gate says the very same thing: one rule, one message.
    line = f"{located[0]['path']}:{located[0]['line']}: {located[0]['field']}: {located[0]['message']}"
    assert line in gate_failures(cli, gated, tmp_path)


def test_a_nested_artifact_listed_by_its_path_passes_the_rule(gated: Path, tmp_path: Path) -> None:
    """Nested artifact paths (`onnx/model.onnx`) are matched by their full path, not their name."""
    from registry.files.cards import Artifact
    from registry.queries import consistency

    class Tree:
        require_bytes = True

        def __init__(self, files: dict[str, bytes]) -> None:
            self.data = files

        def files(self) -> dict[str, str]:
            return dict.fromkeys(self.data, "100644")

        def tracked(self, path: str) -> bool:
            return True

        def read(self, path: str) -> bytes | None:
            return self.data.get(path)

        def card(self, path: str) -> consistency.CardFacts | None:
            import hashlib

            blob = self.data["models/m/1.0.0/onnx/model.onnx"]
            return consistency.CardFacts("m", "1.0.0", (
                Artifact("onnx/model.onnx", len(blob), hashlib.sha256(blob).hexdigest(), "git"),))

        def pointer_size(self, path: str) -> tuple[bool, int | None]:
            return False, None

        def assignments(self, model: str) -> list[tuple[str, str]] | None:
            return None

        def dvc_digest(self, model: str, version: str, artifact: Artifact) -> tuple[str, int] | None:
            return None

    good = Tree({"models/m/model.yaml": b"{}", "models/m/1.0.0/card.yaml": b"name: m\nversion: 1.0.0\n",
                 "models/m/1.0.0/onnx/model.onnx": b"bytes"})
    assert consistency.version_problems(good, "m", "1.0.0") == []
    bad = Tree({**good.data, "models/m/1.0.0/model.onnx": b"bytes", "models/m/1.0.0/other/model.onnx": b"x"})
    assert sorted(p.path for p in consistency.version_problems(bad, "m", "1.0.0")) == [
        "models/m/1.0.0/model.onnx", "models/m/1.0.0/other/model.onnx"]


def test_consistency_gate_digest_mismatch(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    card = gated / "models/m/1.1.0/card.yaml"
    data = yaml.safe_load(card.read_text())
    old = next(a["sha256"] for a in data["artifacts"] if a["path"] == "model.safetensors")
    card.write_text(card.read_text().replace(old, "f" * 64))
    git(gated, "commit", "--quiet", "-am", "edit digest")
    fails = failures(check(cli, gated, tmp_path))
    # The one consistency rule's message (also `registry validate`'s): the card's line and field, the file.
    assert any(m.startswith("models/m/1.1.0/card.yaml:") and "models/m/1.1.0/model.safetensors is " in m
               and "f" * 64 in m for m in fails["consistency"])


def test_validate_checks_the_bytes_the_dvc_pointer_names_as_the_gate_does(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    """A card that claims the work tree's weights while the DVC pointer names other bytes: the gate reads
    the bytes by the pointer (as CI does after `registry fetch`) and fails it; validate, offline, reads
    them from DVC's local cache and says the same."""
    register(cli, gated, tmp_path, "1.1.0")
    weights, card = gated / "models/m/1.1.0/model.safetensors", gated / "models/m/1.1.0/card.yaml"
    pointed = weights.read_bytes()
    other = pointed[:-1] + bytes([pointed[-1] ^ 1])  # same size, other bytes; the pointer still names `pointed`
    weights.write_bytes(other)
    card.write_text(card.read_text().replace(sha256(pointed), sha256(other)))
    git(gated, "commit", "--quiet", "-am", "Claim the work tree's weights")
    before = snapshot(gated / "models")

    result = cli("validate", "--json", cwd=gated)

    assert result.code == 1, result.out
    problems = [p for p in json.loads(result.out)["problems"] if p["field"] == "artifacts[0]"]
    expected = (f"models/m/1.1.0/model.safetensors is {len(pointed)} bytes with sha256 {sha256(pointed)}; "
                f"the card says {len(other)} bytes, {sha256(other)}")
    assert [p["message"] for p in problems] == [expected]
    assert snapshot(gated / "models") == before
    # The gate, as CI runs it on a fresh clone after `registry fetch`: the very same words.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(gated), str(clone))
    assert cli("fetch", "--base", "origin/main", cwd=clone).code == 0
    out = tmp_path / "clone.json"
    assert cli("check", "--base", "origin/main", "--gate", "consistency", "--json", str(out), cwd=clone).code == 1
    messages = [g["message"] for g in json.loads(out.read_text())["gates"] if g["status"] == "fail"]
    assert f"{problems[0]['path']}:{problems[0]['line']}: artifacts[0]: {expected}" in messages


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
