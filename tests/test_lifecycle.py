"""Lifecycle and governance: canary, rollback, deprecation with sunset, archive, gc, competing PRs."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import Result, git, merge, new_weights, snapshot

ORDER = ["1.0.0", "1.1.0", "1.2.0"]


@pytest.fixture
def three(registry_dir: Path, inputs: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Path:
    for pr, version in enumerate(ORDER, start=1):
        new_weights(inputs, seed=pr)
        result = cli("register", "credit-approval", version, "--card", str(inputs / "card.yaml"),
                     "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
        assert result.code == 0, result.err
        merge(registry_dir, f"register/credit-approval/{version}", monkeypatch, pr=pr)
    return registry_dir


def step(cli: Callable[..., Result], repo: Path, monkeypatch: pytest.MonkeyPatch, *args: str, pr: int) -> Result:
    """Run a lifecycle command that makes a branch, then merge it as a reviewer."""
    result = cli(*args, "--json", cwd=repo)
    assert result.code == 0, result.err
    branch = json.loads(result.out)["branch"]
    merge(repo, branch, monkeypatch, pr=pr)
    return result


def stages(repo: Path) -> dict[str, object]:
    return yaml.safe_load((repo / "models/credit-approval/stages.yaml").read_text()) or {}


def test_full_lifecycle_and_audit(three: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = three
    step(cli, repo, monkeypatch, "promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "eval ok", pr=10)
    step(cli, repo, monkeypatch, "promote", "credit-approval", "1.0.0", "--to", "production", "--reason", "launch", pr=11)
    step(cli, repo, monkeypatch, "promote", "credit-approval", "1.1.0", "--to", "staging", "--reason", "next", pr=12)
    step(cli, repo, monkeypatch, "promote", "credit-approval", "1.1.0", "--to", "canary", "--traffic", "0.1",
         "--reason", "try on 10%", pr=13)
    assert stages(repo)["canary"] == {"version": "1.1.0", "traffic": 0.1}
    canary = json.loads(cli("manifest", "--stage", "canary", "--json", cwd=repo).out)
    assert canary["models"]["credit-approval"]["version"] == "1.1.0"
    assert canary["models"]["credit-approval"]["traffic"] == 0.1
    step(cli, repo, monkeypatch, "promote", "credit-approval", "1.1.0", "--to", "production", "--reason", "canary ok",
         pr=14)
    held = stages(repo)
    assert "canary" not in held and held["production"] == "1.1.0"  # canary → production clears the share
    assert list(held["deprecated"]) == ["1.0.0"]  # type: ignore[call-overload]

    result = step(cli, repo, monkeypatch, "rollback", "credit-approval", "--reason", "errors up 3x", pr=15)
    assert json.loads(result.out)["branch"] == "rollback/credit-approval/1.0.0"
    held = stages(repo)
    assert held["production"] == "1.0.0" and list(held["deprecated"]) == ["1.1.0"]  # type: ignore[call-overload]

    two_weeks = (dt.date.today() + dt.timedelta(days=14)).isoformat()
    git(repo, "switch", "--quiet", "main")
    before = snapshot(repo)
    refused = cli("deprecate", "credit-approval", "1.1.0", "--sunset", two_weeks, "--reason", "x", cwd=repo)
    assert refused.code == 2 and "must be at least 90 days ahead" in refused.err
    assert snapshot(repo) == before
    step(cli, repo, monkeypatch, "promote", "credit-approval", "1.2.0", "--to", "staging", "--reason", "try", pr=16)
    # staging → deprecated is not a default transition: the lifecycle decides, and says so.
    denied = cli("deprecate", "credit-approval", "1.2.0", "--sunset", "2099-01-01", "--reason", "x", cwd=repo)
    assert denied.code == 2 and "staging → deprecated is not allowed" in denied.err
    four_months = (dt.date.today() + dt.timedelta(days=120)).isoformat()
    git(repo, "switch", "--quiet", "main")
    # 1.1.0 was deprecated by the rollback with the default sunset; the admin sets its own.
    step(cli, repo, monkeypatch, "deprecate", "credit-approval", "1.1.0", "--sunset", four_months,
         "--reason", "superseded", pr=17)
    assert stages(repo)["deprecated"] == {"1.1.0": {"sunset": dt.date.fromisoformat(four_months), "reason": "superseded"}}
    step(cli, repo, monkeypatch, "archive", "credit-approval", "1.1.0", "--reason", "retired", pr=18)
    assert stages(repo)["archived"] == ["1.1.0"]

    entries = json.loads(cli("log", "--json", cwd=repo).out)
    actions = [(e["action"], e["version"], e["from_stage"], e["to_stage"]) for e in entries]
    assert actions == [
        ("registered", "1.0.0", None, "development"), ("registered", "1.1.0", None, "development"),
        ("registered", "1.2.0", None, "development"),
        ("promoted", "1.0.0", "development", "staging"), ("promoted", "1.0.0", "staging", "production"),
        ("promoted", "1.1.0", "development", "staging"), ("promoted", "1.1.0", "staging", "canary"),
        ("promoted", "1.1.0", "canary", "production"), ("deprecated", "1.0.0", "production", "deprecated"),
        ("rolled back", "1.0.0", "deprecated", "production"), ("deprecated", "1.1.0", "production", "deprecated"),
        ("promoted", "1.2.0", "development", "staging"),
        ("deprecated", "1.1.0", "deprecated", "deprecated"),  # the new sunset, its own audited action
        ("archived", "1.1.0", "deprecated", "archived"),
    ]
    rollback = next(e for e in entries if e["action"] == "rolled back")
    assert rollback["reason"] == "errors up 3x" and rollback["pr"] == 15
    assert rollback["performed_by"].startswith("Dana Scientist") and rollback["approved_by"].startswith("Rita Reviewer")
    only = json.loads(cli("log", "--action", "rolled back", "--json", cwd=repo).out)
    assert [e["version"] for e in only] == ["1.0.0"]
    csv_out = cli("log", "--format", "csv", cwd=repo).out.splitlines()
    assert csv_out[0].startswith("timestamp,action,model,version") and len(csv_out) == len(entries) + 1
    jsonl = [json.loads(line) for line in cli("log", "--format", "jsonl", cwd=repo).out.splitlines()]
    assert jsonl == entries
    today = dt.date.today().isoformat()
    assert len(json.loads(cli("log", "--until", "2000-01-01", "--json", cwd=repo).out)) == 0
    assert len(json.loads(cli("log", "--since", today, "--until", today, "--json", cwd=repo).out)) == len(entries)
    assert json.loads(cli("manifest", "--stage", "production", "--json", cwd=repo).out)["models"][
        "credit-approval"]["version"] == "1.0.0"


def test_deprecate_same_version_twice_is_refused(three: Path, cli: Callable[..., Result]) -> None:
    for version, stage in [("1.0.0", "staging"), ("1.0.0", "production")]:
        assert cli("promote", "credit-approval", version, "--to", stage, "--reason", "r", "--no-branch",
                   cwd=three).code == 0
    sunset = (dt.date.today() + dt.timedelta(days=100)).isoformat()
    assert cli("deprecate", "credit-approval", "1.0.0", "--sunset", sunset, "--reason", "old", "--no-branch",
               cwd=three).code == 0
    again = cli("deprecate", "credit-approval", "1.0.0", "--sunset", sunset, "--reason", "old", cwd=three)
    assert again.code == 2 and f"already deprecated with sunset {sunset}" in again.err


def test_rollback_needs_an_earlier_production_version(three: Path, cli: Callable[..., Result]) -> None:
    result = cli("rollback", "credit-approval", "--reason", "r", cwd=three)
    assert result.code == 2 and "no earlier production version" in result.err
    result = cli("rollback", "credit-approval", "--reason", "r", "--to", "1.2.0", cwd=three)
    assert result.code == 2 and "was never in production" in result.err


def test_ls_and_show_warn_past_sunset(three: Path, cli: Callable[..., Result]) -> None:
    (three / "models/credit-approval/stages.yaml").write_text("deprecated: {1.0.0: {sunset: 2020-01-01}}\n")
    git(three, "commit", "--quiet", "-am", "old sunset")
    assert "credit-approval@1.0.0 is past its sunset (2020-01-01)" in cli("ls", cwd=three).err
    assert "past its sunset" in cli("show", "credit-approval@1.0.0", cwd=three).err


def test_competing_production_prs_cannot_both_land(three: Path, cli: Callable[..., Result],
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for version in ("1.1.0", "1.2.0"):
        assert cli("promote", "credit-approval", version, "--to", "staging", "--reason", "r", "--no-branch",
                   cwd=three).code == 0
    assert cli("promote", "credit-approval", "1.1.0", "--to", "production", "--reason", "A", cwd=three).code == 0
    git(three, "switch", "--quiet", "main")
    assert cli("promote", "credit-approval", "1.2.0", "--to", "production", "--reason", "B", cwd=three).code == 0
    merge(three, "promote/credit-approval/1.1.0-to-production", monkeypatch, pr=20)
    # git itself refuses to merge the second: both change the production line.
    conflict = subprocess.run(["git", "merge", "--no-ff", "promote/credit-approval/1.2.0-to-production", "-m", "m"],
                              cwd=three, capture_output=True, text=True, check=False)
    assert conflict.returncode != 0 and "CONFLICT" in conflict.stdout
    git(three, "merge", "--abort")
    # And the gate on the second PR, checked against the new main, says to rebase.
    git(three, "switch", "--quiet", "promote/credit-approval/1.2.0-to-production")
    report_file = tmp_path / "report.json"
    result = cli("check", "--base", "main", "--gate", "lifecycle", "--json", str(report_file), cwd=three)
    assert result.code == 1
    messages = [g["message"] for g in json.loads(report_file.read_text())["gates"] if g["status"] == "fail"]
    assert any("production → staging is not allowed" in m and "rebase on the base branch" in m for m in messages)


def test_gc_dry_run_then_purge(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    repo = registry_dir
    card = inputs / "card.yaml"
    card.write_text(card.read_text() + "created: 2026-01-05\n")
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"]
    for pr, version in enumerate(versions, start=1):
        new_weights(inputs, seed=10 + pr)
        assert cli("register", "credit-approval", version, "--card", str(card), "--artifact",
                   str(inputs / "model.safetensors"), cwd=repo).code == 0
        merge(repo, f"register/credit-approval/{version}", monkeypatch, pr=pr)
    (repo / "models/credit-approval/stages.yaml").write_text("production: 1.2.0\narchived: [1.1.0]\n")
    git(repo, "commit", "--quiet", "-am", "Stages\n\nReason: setup")
    git(repo, "push", "--quiet", "origin", "main")
    remote = tmp_path / "dvc-remote"

    def objects() -> set[str]:
        return {p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file()}

    def md5(version: str) -> str:
        pointer = yaml.safe_load((repo / f"models/credit-approval/{version}/model.safetensors.dvc").read_text())
        return str(pointer["outs"][0]["md5"])

    all_objects = objects()
    before = snapshot(repo, remote)
    dry = cli("gc", "--dry-run", "--json", cwd=repo)
    assert dry.code == 0, dry.err
    proposed = {(c["model"], c["version"], c["stage"]) for c in json.loads(dry.out)["purged"]}
    # 1.2.0 is in production and 1.2.0-1.4.0 are the newest three: only 1.0.0 and archived 1.1.0 go.
    assert proposed == {("credit-approval", "1.0.0", "development"), ("credit-approval", "1.1.0", "archived")}
    assert snapshot(repo, remote) == before

    result = cli("gc", "--json", cwd=repo)
    assert result.code == 0, result.err
    assert objects() == all_objects  # proposed, not done: nothing is deleted before review
    assert "purged" in yaml.safe_load((repo / "models/credit-approval/1.0.0/card.yaml").read_text())
    assert cli("validate", cwd=repo).code == 0
    # The purge is a PR like any other; its check passes immutability (only the mark is added).
    assert cli("check", "--base", "main", "--gate", "immutability", "--gate", "schema", cwd=repo).code == 0
    merge(repo, json.loads(result.out)["branch"], monkeypatch, pr=30)
    git(repo, "push", "--quiet", "origin", "main")
    applied = cli("gc", "--apply", "--json", cwd=repo)
    assert applied.code == 0, applied.err
    assert json.loads(applied.out)["versions"] == [{"model": "credit-approval", "version": v} for v in ("1.0.0", "1.1.0")]
    gone = {f"files/md5/{md5(v)[:2]}/{md5(v)[2:]}" for v in ("1.0.0", "1.1.0")}
    assert objects() == all_objects - gone
    purged = json.loads(cli("log", "--action", "purged", "--json", cwd=repo).out)
    assert sorted(e["version"] for e in purged) == ["1.0.0", "1.1.0"]
    assert len(json.loads(cli("log", "--json", cwd=repo).out)) > len(purged)  # history intact
    # Every kept version is still pullable from a fresh clone.
    from registry.repo import storage

    git(repo, "push", "--quiet", "origin", "main")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(tmp_path / "origin.git"), str(clone))
    for version in ("1.2.0", "1.3.0", "1.4.0"):
        storage.pull(clone, [f"models/credit-approval/{version}/model.safetensors.dvc"])
        assert (clone / f"models/credit-approval/{version}/model.safetensors").stat().st_size > 0
    refused = cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "r", cwd=repo)
    assert refused.code == 2 and "was purged by the retention policy" in refused.err
