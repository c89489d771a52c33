"""The user story: init, register two versions, merge as a reviewer, promote, read it all back."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REVIEWER, SCIENTIST, Result, git, merge


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_makes_a_registry(registry_dir: Path) -> None:
    for rel in ("registry.yaml", ".dvc/config", ".github/workflows/registry.yml", ".github/CODEOWNERS",
                ".registry/schemas/card.schema.json"):
        assert (registry_dir / rel).is_file(), rel
    assert (registry_dir / "registry.yaml").read_text().startswith("# yaml-language-server: $schema=")
    config = yaml.safe_load((registry_dir / "registry.yaml").read_text())
    assert config["lifecycle"]["transitions"]["development"] == ["staging", "archived"]
    assert config["policy"]["production"]["require_signature"] is True
    assert git(registry_dir, "status", "--porcelain") == ""
    assert "dvc-remote" in (registry_dir / ".dvc/config").read_text()


def test_register_tracks_weights_in_dvc_not_git(registered: Path, inputs: Path, tmp_path: Path) -> None:
    folder = registered / "models/credit-approval/1.0.0"
    tracked = git(registered, "ls-files", "models/credit-approval/1.0.0").split()
    assert "models/credit-approval/1.0.0/model.safetensors" not in tracked
    assert "models/credit-approval/1.0.0/model.safetensors.dvc" in tracked
    assert "models/credit-approval/1.0.0/config.json" in tracked  # small text stays in git
    card = yaml.safe_load((folder / "card.yaml").read_text())
    by_path = {a["path"]: a for a in card["artifacts"]}
    assert by_path["model.safetensors"]["storage"] == "dvc"
    assert by_path["model.safetensors"]["sha256"] == sha256(folder / "model.safetensors")
    assert by_path["model.safetensors"]["size"] == (folder / "model.safetensors").stat().st_size
    assert by_path["config.json"] == {"path": "config.json", "size": 19, "storage": "git",
                                      "sha256": sha256(inputs / "config.json")}
    assert (folder / "card.yaml").read_text().startswith("# yaml-language-server: $schema=")
    assert card["name"] == "credit-approval" and card["version"] == "1.0.0"
    # The bytes are in the DVC remote: a fresh clone plus a DVC pull gives them back.
    from registry.repo import storage

    git(registered, "push", "--quiet", "origin", "main")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(tmp_path / "origin.git"), str(clone))
    assert not (clone / "models/credit-approval/1.0.0/model.safetensors").exists()
    storage.pull(clone, ["models/credit-approval/1.0.0/model.safetensors.dvc"])
    pulled = clone / "models/credit-approval/1.0.0/model.safetensors"
    assert pulled.read_bytes() == (folder / "model.safetensors").read_bytes()


def test_register_commits_on_its_own_branch(registry_dir: Path, inputs: Path, cli: Callable[..., Result]) -> None:
    result = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), "--push", cwd=registry_dir)
    assert result.code == 0, result.err
    assert "register/credit-approval/1.0.0" in result.out
    assert git(registry_dir, "branch", "--show-current").strip() == "register/credit-approval/1.0.0"
    assert "register/credit-approval/1.0.0" in git(registry_dir, "ls-remote", "--heads", "origin")
    assert git(registry_dir, "status", "--porcelain") == ""
    assert git(registry_dir, "log", "-1", "--format=%s").strip() == "Register credit-approval@1.0.0"


def test_register_no_branch_and_bump(registered: Path, inputs: Path, cli: Callable[..., Result]) -> None:
    result = cli("register", "credit-approval", "--bump", "major", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), "--no-branch", "--json", cwd=registered)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["version"] == "2.0.0" and data["branch"] is None
    assert git(registered, "branch", "--show-current").strip() == "main"


def test_promotions_ls_show_manifest_log(registered: Path, cli: Callable[..., Result],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [("1.0.0", "staging", "offline eval ok"), ("1.0.0", "production", "first release"),
             ("1.1.0", "staging", "better recall"), ("1.1.0", "production", "soak passed")]
    for pr, (version, stage, reason) in enumerate(steps, start=3):
        result = cli("promote", "credit-approval", version, "--to", stage, "--reason", reason, cwd=registered)
        assert result.code == 0, result.err
        branch = f"promote/credit-approval/{version}-to-{stage}"
        changed = git(registered, "diff", "--name-only", "main", branch).split()
        assert changed == ["models/credit-approval/stages.yaml"]  # a promotion edits only stages.yaml
        assert f"Reason: {reason}" in git(registered, "log", "-1", "--format=%B", branch)
        merge(registered, branch, monkeypatch, pr=pr)

    stages_text = (registered / "models/credit-approval/stages.yaml").read_text()
    assert yaml.safe_load(stages_text) == {"production": "1.1.0", "deprecated": {"1.0.0": {"sunset": yaml.safe_load(stages_text)["deprecated"]["1.0.0"]["sunset"]}}}
    diff = git(registered, "diff", "HEAD^1", "HEAD", "--", "models/credit-approval/stages.yaml")
    assert "-production: 1.0.0" in diff and "+production: 1.1.0" in diff

    listing = json.loads(cli("ls", "--json", cwd=registered).out)
    assert listing == [{"name": "credit-approval", "latest": "1.1.0",
                        "stages": {"production": "1.1.0", "deprecated": listing[0]["stages"]["deprecated"]}}]
    assert list(listing[0]["stages"]["deprecated"]) == ["1.0.0"]

    shown = json.loads(cli("show", "credit-approval@1.1.0", "--json", cwd=registered).out)
    assert shown["stage"] == "production"
    assert shown["metrics"] == {"accuracy": 0.93, "f1": 0.91}
    weights = registered / "models/credit-approval/1.1.0/model.safetensors"
    assert shown["artifacts"] == [{"path": "model.safetensors", "size": weights.stat().st_size,
                                   "sha256": sha256(weights), "storage": "dvc"}]

    manifest = json.loads(cli("manifest", "--json", cwd=registered).out)
    assert manifest["stage"] == "production"
    assert manifest["registry_commit"] == git(registered, "rev-parse", "HEAD").strip()
    model = manifest["models"]["credit-approval"]
    assert model["version"] == "1.1.0"
    [artifact] = model["artifacts"]
    assert artifact["sha256"] == sha256(weights) and artifact["size"] == weights.stat().st_size
    remote_copy = Path(artifact["url"])
    assert remote_copy.is_file() and sha256(remote_copy) == sha256(weights)
    # --at reads an older commit's tree without checking anything out.
    before = json.loads(cli("manifest", "--json", "--at", "HEAD~1", cwd=registered).out)
    assert before["models"]["credit-approval"]["version"] == "1.0.0"

    entries = json.loads(cli("log", "--json", cwd=registered).out)
    scientist, reviewer = (f"{n} <{e}>" for n, e in (SCIENTIST, REVIEWER))
    summary = [(e["action"], e["version"], e["from_stage"], e["to_stage"], e["reason"], e["pr"]) for e in entries]
    assert summary == [
        ("registered", "1.0.0", None, "development", "Register credit-approval@1.0.0", 1),
        ("registered", "1.1.0", None, "development", "Register credit-approval@1.1.0", 2),
        ("promoted", "1.0.0", "development", "staging", "offline eval ok", 3),
        ("promoted", "1.0.0", "staging", "production", "first release", 4),
        ("promoted", "1.1.0", "development", "staging", "better recall", 5),
        ("promoted", "1.1.0", "staging", "production", "soak passed", 6),
        ("deprecated", "1.0.0", "production", "deprecated", "soak passed", 6),
    ]
    assert all(e["performed_by"] == scientist and e["approved_by"] == reviewer for e in entries)
    assert all(e["model"] == "credit-approval" for e in entries)
    merges = git(registered, "log", "--first-parent", "--merges", "--format=%H").split()
    assert {e["commit"] for e in entries} <= set(merges)
    assert set(entries[0]) >= {"timestamp", "action", "model", "version", "from_stage", "to_stage",
                               "performed_by", "approved_by", "reason", "commit"}
    one = json.loads(cli("log", "credit-approval@1.0.0", "--json", cwd=registered).out)
    assert [e["action"] for e in one] == ["registered", "promoted", "promoted", "deprecated"]
    assert json.loads(cli("log", "--since", "2999-01-01", "--json", cwd=registered).out) == []
    assert cli("validate", cwd=registered).code == 0


def test_python_api(registered: Path, cli: Callable[..., Result]) -> None:
    import registry

    assert cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "r", "--no-branch",
               cwd=registered).code == 0
    reg = registry.open(registered / "models")
    assert reg.root == registered
    assert [m.name for m in reg.models()] == ["credit-approval"]
    assert reg.card("credit-approval", "1.1.0").metrics["accuracy"] == 0.93
    assert reg.resolve("credit-approval", "staging") == "1.0.0"
    assert reg.resolve("credit-approval") is None
    assert reg.manifest("staging")["models"]["credit-approval"]["version"] == "1.0.0"
    assert [e.action for e in reg.log("credit-approval")][-1] == "promoted"
    assert reg.validate() == []


def test_help_does_not_import_dvc(python: str) -> None:
    code = "import sys\nfrom registry.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n" \
           "print('dvc' in sys.modules, 'jsonschema' in sys.modules)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_every_command_has_help(cli: Callable[..., Result]) -> None:
    import click

    from registry.cli.main import cli as group

    names = group.list_commands(click.Context(group))
    assert set(names) >= {"init", "register", "promote", "ls", "show", "validate", "manifest", "log", "demo", "check",
                          "pull", "rollback", "deprecate", "archive", "gc", "scan", "convert", "sign", "verify"}
    for name in names:
        result = cli(name, "--help")
        assert result.code == 0 and "Usage: registry" in result.out, name


def test_demo_runs_end_to_end(tmp_path: Path, cli: Callable[..., Result]) -> None:
    pytest.importorskip("sklearn", reason="the demo trains with scikit-learn: pip install 'gitops-registry[demo]'")
    # As `make demo` does: a demo folder inside another git work tree (this project's checkout).
    outer = tmp_path / "checkout"
    git(tmp_path, "init", "--quiet", str(outer))
    result = cli("demo", str(outer / "demo"))
    assert result.code == 0, result.err
    out = result.out
    assert "Traceback" not in out + result.err
    assert out.count("all gates passed") >= 7  # every registration and promotion PR
    assert "recomputed on datasets/digits-holdout.npz" in out
    assert "+production: 1.1.0" in out and "-canary: {version: 1.1.0, traffic: 0.1}" in out
    assert "nothing was changed: still serving digits@1.0.0" in out  # the tampered pull
    assert "FAIL scan" in out and "payload executed: False" in out
    assert "rolled back digits@1.0.0" in out
    assert (outer / "demo/serving/digits/current").resolve().name == "1.0.0"
