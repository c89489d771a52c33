"""Hugging Face folders: `register --artifact DIR` with nested paths, end to end (register, validate,
gates, sign, verify, pull), the refusals, and `--card-from-readme`."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from registry.files import cards
from registry.files.schemas import validate
from registry.signing.keys import generate_keypair
from tests.conftest import Result, git, merge, snapshot

NAME = "minilm"
CARD = """\
description: A sentence-embedding model, as the Hugging Face Hub has it.
framework: pytorch
task: feature-extraction
creator: "@dana"
metrics: {cosine_spearman: 0.82}
"""
README = """\
---
license: apache-2.0
tags: [sentence-transformers, feature-extraction]
datasets:
  - s2orc
  - ms_marco
base_model: nreimers/MiniLM-L6-H384-uncased
model-index:
  - name: minilm
    results:
      - task: {type: sentence-similarity}
        dataset: {name: STS benchmark, type: mteb/stsbenchmark-sts}
        metrics:
          - {type: cosine_spearman, value: 0.5}
          - {type: cosine_pearson, value: 0.84}
          - {name: Accuracy, value: 0.91}
          - {type: bad metric, value: 1}
          - {type: f1, value: .nan}
---
# all-MiniLM-L6-v2

A sentence-transformers model.
"""
# What git keeps (text, at most storage.git_max_bytes) and what DVC keeps (binary).
IN_GIT = ("README.md", "config.json", "tokenizer.json", "1_Pooling/config.json", "modules.json")
IN_DVC = ("model.safetensors", "onnx/model.onnx")


def _field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: a varint, or length-delimited bytes."""
    def varint(n: int) -> bytes:
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def onnx_bytes(path: Path) -> None:
    """Relu(X) -> Y as an ONNX ModelProto, encoded by hand (the onnx package is optional here;
    where it is installed, the format gate runs its checker on these bytes)."""
    def tensor(name: str) -> bytes:  # ValueInfoProto: FLOAT [2, 3]
        shape = _field(1, _field(1, 2)) + _field(1, _field(1, 3))
        return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))
    node = _field(1, "X") + _field(2, "Y") + _field(4, "Relu")
    graph = _field(1, node) + _field(2, "g") + _field(11, tensor("X")) + _field(12, tensor("Y"))
    model = _field(1, 8) + _field(2, "test") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))
    path.write_bytes(model)


def hf_folder(root: Path) -> Path:
    """A sentence-transformers folder as `snapshot_download` leaves it."""
    from safetensors.numpy import save_file

    folder = root / "all-MiniLM-L6-v2"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "onnx").mkdir()
    save_file({"embeddings.weight": np.random.default_rng(0).random((32, 8), dtype=np.float32)},
              str(folder / "model.safetensors"))
    onnx_bytes(folder / "onnx/model.onnx")
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}\n')
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordPiece"}}\n')
    (folder / "1_Pooling/config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    (folder / "modules.json").write_text('[{"idx": 0, "path": "", "type": "Transformer"}]\n')
    (folder / "README.md").write_text(README)
    return folder


def register(cli: Callable[..., Result], repo: Path, folder: Path, card: Path, *extra: str,
             version: str = "1.0.0") -> Result:
    return cli("register", NAME, version, "--card", str(card), "--artifact", str(folder), *extra, cwd=repo)


@pytest.fixture
def card(tmp_path: Path) -> Path:
    path = tmp_path / "card.yaml"
    path.write_text(CARD)
    return path


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Path]:
    generate_keypair(tmp_path / "release")
    return tmp_path / "release.key", tmp_path / "release.pub"


def test_a_hf_folder_registers_gates_signs_verifies_and_pulls_with_nested_paths(
        registry_dir: Path, tmp_path: Path, card: Path, signer: tuple[Path, Path],
        cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    folder = hf_folder(tmp_path)
    key, pub = signer
    result = register(cli, registry_dir, folder, card, "--sign-key", str(key), "--json")
    assert result.code == 0, result.err

    # The folder's CONTENTS are the version folder, with their relative paths; each file hashed.
    listed = {a["path"]: a for a in json.loads(result.out)["artifacts"]}
    assert set(listed) == {*IN_GIT, *IN_DVC}
    assert {p for p, a in listed.items() if a["storage"] == "dvc"} == set(IN_DVC)
    version = registry_dir / f"models/{NAME}/1.0.0"
    committed = set(git(registry_dir, "ls-tree", "-r", "--name-only", "HEAD", f"models/{NAME}/1.0.0").split())
    prefix = f"models/{NAME}/1.0.0/"
    assert {p for p in IN_GIT} <= {p.removeprefix(prefix) for p in committed}
    assert f"{prefix}onnx/model.onnx.dvc" in committed and f"{prefix}model.safetensors.dvc" in committed
    assert f"{prefix}onnx/model.onnx" not in committed  # the bytes are in DVC only
    for rel in (*IN_GIT, *IN_DVC):
        assert (version / rel).read_bytes() == (folder / rel).read_bytes()
    assert not git(registry_dir, "status", "--porcelain")

    # validate, and the consistency, scan and format gates of the pull request.
    assert cli("validate", cwd=registry_dir).code == 0
    out = tmp_path / "report.json"
    result = cli("check", "--base", "main", "--gate", "consistency", "--gate", "scan", "--gate", "format",
                 "--json", str(out), cwd=registry_dir)
    gates = json.loads(out.read_text())["gates"]
    assert result.code == 0, [g for g in gates if g["status"] == "fail"]
    checked = " ".join(g["message"] for g in gates)
    assert "onnx/model.onnx" in checked and "1_Pooling/config.json" in checked

    # `registry fetch` (what CI runs before check) pulls the nested DVC files back in place.
    for rel in IN_DVC:
        (version / rel).unlink()
    result = cli("fetch", "--base", "main", "--json", cwd=registry_dir)
    assert result.code == 0, result.err
    assert f"{prefix}onnx/model.onnx.dvc" in json.loads(result.out)["targets"]
    for rel in IN_DVC:
        assert (version / rel).read_bytes() == (folder / rel).read_bytes()

    # The signature covers every nested file; verify agrees.
    result = cli("verify", f"{NAME}@1.0.0", "--trusted-keys", str(pub), cwd=registry_dir)
    assert result.code == 0, result.err
    assert "signature verified" in result.out
    assert "8 files: 1_Pooling/config.json, README.md, card.yaml, config.json, model.safetensors, modules.json, " \
           "onnx/model.onnx, tokenizer.json" in result.out

    # Merged and promoted: serving pulls every nested file to its relative path, verified.
    merge(registry_dir, f"register/{NAME}/1.0.0", monkeypatch)
    for stage in ("staging", "production"):
        assert cli("promote", NAME, "1.0.0", "--to", stage, "--reason", "test", "--no-branch",
                   cwd=registry_dir).code == 0
    git(registry_dir, "push", "--quiet", "origin", "main")
    serve = tmp_path / "serve"
    result = cli("pull", "--stage", "production", "--to", str(serve), "--from", str(tmp_path / "origin.git"),
                 "--trusted-keys", str(pub), "--json", cwd=tmp_path)
    assert result.code == 0, result.err
    current = serve / NAME / "current"
    for rel in (*IN_GIT, *IN_DVC):
        assert (current / rel).read_bytes() == (folder / rel).read_bytes(), rel
    assert (current / "signature.json").is_file() and (current / "card.yaml").is_file()
    pulled = {p.relative_to(current).as_posix() for p in current.rglob("*") if p.is_file()}
    assert pulled == {*IN_GIT, *IN_DVC, "card.yaml", "signature.json"}  # no pointers, no .gitignore

    # The catalog lists the nested paths, and verifies the signature over them from git alone.
    (registry_dir / "keys").mkdir()
    (registry_dir / "keys/release.pub").write_bytes(pub.read_bytes())
    config = registry_dir / "registry.yaml"
    config.write_text(re.sub(r"(?m)^trusted_keys:.*$", "trusted_keys: [keys/release.pub]", config.read_text()))
    git(registry_dir, "add", "-A")
    git(registry_dir, "commit", "--quiet", "-m", "Trust the release key")
    result = cli("site", "--out", str(tmp_path / "site"), cwd=registry_dir)
    assert result.code == 0, result.err
    page = (tmp_path / f"site/models/{NAME}.html").read_text()
    assert "onnx/model.onnx" in page and "1_Pooling/config.json" in page
    assert "verified with trusted key" in page


def test_a_tampered_nested_file_fails_verify_and_consistency(
        registry_dir: Path, tmp_path: Path, card: Path, signer: tuple[Path, Path], cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    key, pub = signer
    assert register(cli, registry_dir, folder, card, "--sign-key", str(key)).code == 0
    nested = registry_dir / f"models/{NAME}/1.0.0/1_Pooling/config.json"
    nested.write_text('{"pooling_mode_cls_token": true}\n')
    result = cli("verify", f"{NAME}@1.0.0", "--trusted-keys", str(pub), cwd=registry_dir)
    assert result.code == 1 and "1_Pooling/config.json" in result.err
    result = cli("validate", cwd=registry_dir)
    assert result.code == 1 and f"models/{NAME}/1.0.0/1_Pooling/config.json is " in result.err + result.out


@pytest.mark.parametrize(("make", "message"), [
    (lambda f: (f / "1_Pooling/link.json").symlink_to(f / "config.json"),
     "1_Pooling/link.json: is a symlink; a registered folder holds regular files only"),
    (lambda f: (f / "1_Pooling/card.yaml").write_text("name: x\n"),
     "the name 'card.yaml' (in '1_Pooling/card.yaml') is reserved"),
    (lambda f: (f / "onnx/x.dvc").write_text("outs: []\n"), "the name 'x.dvc' (in 'onnx/x.dvc') is reserved"),
    (lambda f: (f / "onnx/signature.json").write_text("{}\n"), "(in 'onnx/signature.json') is reserved"),
    (lambda f: (f / "onnx/.hidden").write_text("x\n"), "the name '.hidden' (in 'onnx/.hidden') is reserved"),
    (lambda f: (f / "onnx/m\u043edel.bin").write_bytes(b"\0"), "file names may use ASCII letters"),
    (lambda f: __import__("os").mkfifo(f / "onnx/pipe"), "onnx/pipe: not a regular file or folder"),
])
def test_a_folder_with_a_bad_file_anywhere_is_refused_and_nothing_changes(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result],
        make: Callable[[Path], object], message: str) -> None:
    folder = hf_folder(tmp_path)
    make(folder)
    before, head = snapshot(registry_dir), git(registry_dir, "rev-parse", "HEAD")
    result = register(cli, registry_dir, folder, card)
    assert result.code == 2, result.out
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert snapshot(registry_dir) == before and git(registry_dir, "rev-parse", "HEAD") == head


def test_two_artifacts_for_one_path_are_refused(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}\n")
    result = register(cli, registry_dir, folder, card, "--artifact", str(other))
    assert result.code == 2
    assert "two artifacts are named 'config.json'" in result.err
    assert not (registry_dir / "models").exists()


def test_a_file_where_a_folder_of_the_same_name_goes_is_refused(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    (tmp_path / "onnx").write_bytes(b"\0not a folder")
    result = register(cli, registry_dir, folder, card, "--artifact", str(tmp_path / "onnx"))
    assert result.code == 2 and "Traceback" not in result.err
    assert f"--artifact {tmp_path}/onnx: is a file named 'onnx' in the version folder, where " \
           f"{folder}/onnx/model.onnx needs a folder of that name" in result.err
    assert not (registry_dir / "models").exists()


@pytest.mark.parametrize("path", ["../escape.bin", "onnx/../../x.bin", "/etc/passwd", "onnx//m.onnx",
                                  "sub/card.yaml", "onnx/x.dvc", "a.dvc/b", ".gitignore", "sub/.gitignore"])
def test_the_card_schema_and_the_register_rule_refuse_the_same_paths(path: str) -> None:
    card = {**yaml.safe_load(CARD), "name": NAME, "version": "1.0.0", "created": "2026-01-01",
            "artifacts": [{"path": path, "size": 1, "sha256": "0" * 64, "storage": "git"}]}
    problems = validate("card", card, "card.yaml", None)
    assert any("artifacts" in (p.field or "") for p in problems), problems
    assert cards.artifact_path_problem(path) is not None


@pytest.mark.parametrize("path", ["model.onnx", "onnx/model.onnx", "1_Pooling/config.json", "a/b/c/d.bin",
                                  "card.yaml.bak", "x.dvcx"])
def test_the_card_schema_and_the_register_rule_accept_the_same_nested_paths(path: str) -> None:
    card = {**yaml.safe_load(CARD), "name": NAME, "version": "1.0.0", "created": "2026-01-01",
            "artifacts": [{"path": path, "size": 1, "sha256": "0" * 64, "storage": "git"}]}
    assert validate("card", card, "card.yaml", None) == []
    assert cards.artifact_path_problem(path) is None


def test_a_dot_dot_path_in_a_committed_card_fails_validate_and_the_gate(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    assert register(cli, registry_dir, folder, card).code == 0
    card_path = registry_dir / f"models/{NAME}/1.0.0/card.yaml"
    text = card_path.read_text().replace("path: 1_Pooling/config.json", "path: ../../x/config.json")
    assert "../../x/config.json" in text
    card_path.write_text(text)
    git(registry_dir, "commit", "--quiet", "-am", "hostile card")
    result = cli("validate", cwd=registry_dir)
    assert result.code == 1 and "artifacts[0].path" in result.out + result.err
    out = tmp_path / "report.json"
    result = cli("check", "--base", "main", "--gate", "consistency", "--gate", "schema", "--json", str(out),
                 cwd=registry_dir)
    assert result.code == 1
    fails = [g for g in json.loads(out.read_text())["gates"] if g["status"] == "fail"]
    assert any("artifacts[0].path" in g["message"] for g in fails), fails


def test_a_nested_card_or_pointer_committed_beside_the_artifacts_fails_validate(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    assert register(cli, registry_dir, folder, card).code == 0
    version = registry_dir / f"models/{NAME}/1.0.0"
    (version / "1_Pooling/card.yaml").write_text((version / "card.yaml").read_text())
    (version / "1_Pooling/x.dvc").write_text("outs:\n- md5: " + "0" * 32 + "\n  path: x\n")
    git(registry_dir, "add", "-A")
    git(registry_dir, "commit", "--quiet", "-m", "stray files")
    result = cli("validate", cwd=registry_dir)
    assert result.code == 1
    shown = result.out + result.err
    assert f"models/{NAME}/1.0.0/1_Pooling/card.yaml: is not listed in card.yaml's artifacts" in shown
    assert f"models/{NAME}/1.0.0/1_Pooling/x.dvc: is not listed in card.yaml's artifacts" in shown


def test_card_from_readme_fills_tags_and_metrics_without_overriding_the_card(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    card.write_text(CARD + "tags: {license: mit}\n")
    result = register(cli, registry_dir, folder, card, "--card-from-readme")
    assert result.code == 0, result.err
    written = yaml.safe_load((registry_dir / f"models/{NAME}/1.0.0/card.yaml").read_text())
    assert written["tags"] == {
        "license": "mit",  # the card's own value wins
        "base_model": "nreimers/MiniLM-L6-H384-uncased",
        "hf_tags": "sentence-transformers,feature-extraction",
        "datasets": "s2orc,ms_marco",
    }
    # cosine_spearman: the card's 0.82 wins over the README's 0.5.
    assert written["metrics"] == {"cosine_spearman": 0.82, "cosine_pearson": 0.84, "Accuracy": 0.91}
    assert "metric 'bad metric': not a usable metric name; left out" in result.err
    assert "metric f1: nan is not a finite number; left out" in result.err
    assert cli("validate", cwd=registry_dir).code == 0


def test_without_the_option_the_readme_is_just_an_artifact(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    assert register(cli, registry_dir, folder, card).code == 0
    written = yaml.safe_load((registry_dir / f"models/{NAME}/1.0.0/card.yaml").read_text())
    assert "tags" not in written and written["metrics"] == {"cosine_spearman": 0.82}


@pytest.mark.parametrize(("readme", "message"), [
    ("---\nlicense: mit\n", "front matter opened with '---' is never closed"),
    ("---\n!!python/object/apply:os.system [touch pwned]\n---\n", "README.md"),
    ("---\n- a\n- b\n---\n", "front matter must be a mapping"),
])
def test_a_bad_front_matter_is_one_clear_error_and_nothing_runs(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result], readme: str,
        message: str) -> None:
    folder = hf_folder(tmp_path)
    (folder / "README.md").write_text(readme)
    before = snapshot(registry_dir)
    result = register(cli, registry_dir, folder, card, "--card-from-readme")
    assert result.code == 1, result.out
    assert message in result.err and "Traceback" not in result.err
    assert snapshot(registry_dir) == before
    assert not (tmp_path / "pwned").exists() and not (registry_dir / "pwned").exists()


def test_card_from_readme_needs_a_readme(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    (folder / "README.md").unlink()
    result = register(cli, registry_dir, folder, card, "--card-from-readme")
    assert result.code == 2
    assert re.search(r"--card-from-readme: no README\.md among the artifacts", result.err)
    assert not (registry_dir / "models").exists()


def test_a_long_readme_body_does_not_stop_its_front_matter(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    (folder / "README.md").write_text(README + "A long model card.\n" * 120_000)  # over 2 MB
    result = register(cli, registry_dir, folder, card, "--card-from-readme")
    assert result.code == 0, result.err
    written = yaml.safe_load((registry_dir / f"models/{NAME}/1.0.0/card.yaml").read_text())
    assert written["tags"]["license"] == "apache-2.0"


def test_the_gates_never_read_an_artifact_through_a_committed_folder_symlink(
        registry_dir: Path, tmp_path: Path, card: Path, cli: Callable[..., Result]) -> None:
    folder = hf_folder(tmp_path)
    assert register(cli, registry_dir, folder, card).code == 0
    version = registry_dir / f"models/{NAME}/1.0.0"
    size = (version / "onnx/model.onnx").stat().st_size
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.onnx").write_bytes(b"SECRET" + b"\0" * (size - 6))  # the card's size: a host file
    git(registry_dir, "rm", "-r", "--quiet", f"models/{NAME}/1.0.0/onnx")
    shutil.rmtree(version / "onnx")  # the DVC-tracked file git does not know
    (version / "onnx").symlink_to(outside)
    git(registry_dir, "add", "-A")
    git(registry_dir, "commit", "--quiet", "-m", "onnx/ is a symlink now")
    out = tmp_path / "report.json"
    result = cli("check", "--base", "main", "--gate", "consistency", "--gate", "scan", "--gate", "format",
                 "--json", str(out), cwd=registry_dir)
    assert result.code == 1
    gates = json.loads(out.read_text())["gates"]
    assert any(g["gate"] == "consistency" and g["status"] == "fail" and "symbolic link" in g["message"]
               for g in gates), gates
    about_onnx = [g for g in gates if g["gate"] in ("scan", "format") and "onnx/model.onnx" in g["message"]]
    assert all(g["status"] == "fail" for g in about_onnx), about_onnx
    shown = json.dumps(gates)
    assert "unrecognised" not in shown and "SECRET" not in shown, about_onnx
