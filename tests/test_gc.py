"""Retention: only a purge the base branch's policy allows may be marked; bytes go only after the merge."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import Result, git, merge, new_weights, snapshot

MARK = "purged: {date: 2026-12-01, reason: retention policy}\n"


def mark_purged(repo: Path, version: str, branch: str) -> None:
    git(repo, "switch", "--quiet", "-c", branch)
    card = repo / f"models/credit-approval/{version}/card.yaml"
    card.write_text(card.read_text() + MARK)
    git(repo, "commit", "--quiet", "-am", f"Purge credit-approval@{version}\n\nReason: retention policy")


def check_fails(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> list[str]:
    report_file = tmp_path / "report.json"
    before = snapshot(repo / "models")
    result = cli("check", "--base", "main", "--gate", "immutability", "--json", str(report_file), cwd=repo)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err
    assert snapshot(repo / "models") == before
    return [g["message"] for g in json.loads(report_file.read_text())["gates"] if g["status"] == "fail"]


def two_old_versions_keep_one(repo: Path, inputs: Path, cli: Callable[..., Result],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention keeps one version; 1.0.0 and 1.1.0, made long ago, are registered and merged."""
    config = yaml.safe_load((repo / "registry.yaml").read_text()) or {}
    config["retention"] = {"keep_latest": 1, "purge_unstaged_after_days": 7}
    (repo / "registry.yaml").write_text(yaml.safe_dump(config))
    git(repo, "commit", "--quiet", "-am", "Keep one")
    card = inputs / "card.yaml"
    card.write_text(card.read_text() + "created: 2020-01-05\n")
    for pr, version in enumerate(("1.0.0", "1.1.0"), start=1):
        new_weights(inputs, seed=pr)
        assert cli("register", "credit-approval", version, "--card", str(card), "--artifact",
                   str(inputs / "model.safetensors"), cwd=repo).code == 0
        merge(repo, f"register/credit-approval/{version}", monkeypatch, pr=pr)


def test_a_purge_mark_on_the_production_card_fails(registered: Path, cli: Callable[..., Result],
                                                    tmp_path: Path) -> None:
    for stage in ("staging", "production"):
        assert cli("promote", "credit-approval", "1.0.0", "--to", stage, "--reason", "r", "--no-branch",
                   cwd=registered).code == 0
    mark_purged(registered, "1.0.0", "evil")

    messages = check_fails(cli, registered, tmp_path)

    assert any(m.startswith("models/credit-approval/1.0.0/card.yaml: adds a purged: mark, but the retention "
                            "policy in the base branch's registry.yaml keeps credit-approval@1.0.0: it is in "
                            "production") for m in messages), messages


def test_a_purge_mark_the_policy_does_not_allow_fails(registered: Path, cli: Callable[..., Result],
                                                       tmp_path: Path) -> None:
    # 1.1.0 is in development, but it is one of the newest three and was created today.
    mark_purged(registered, "1.1.0", "early")

    messages = check_fails(cli, registered, tmp_path)

    assert any("keeps credit-approval@1.1.0: it is one of the newest 3 versions" in m for m in messages), messages


def test_gc_deletes_nothing_until_its_purge_is_merged(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    repo, remote = registry_dir, tmp_path / "dvc-remote"
    two_old_versions_keep_one(repo, inputs, cli, monkeypatch)
    git(repo, "push", "--quiet", "origin", "main")
    weights = repo / "models/credit-approval/1.0.0/model.safetensors"
    assert weights.is_file()
    stored = snapshot(remote)

    proposed = cli("gc", cwd=repo)

    assert proposed.code == 0, proposed.err
    assert snapshot(remote) == stored and weights.is_file()  # proposed for review, nothing deleted
    assert "marked credit-approval@1.0.0" in proposed.out and "nothing is deleted yet" in proposed.out
    # Applying before the merge deletes nothing: the mark is only on the gc branch.
    early = cli("gc", "--apply", "--json", cwd=repo)
    assert early.code == 0, early.err
    assert json.loads(early.out)["versions"] == [] and snapshot(remote) == stored
    merge(repo, git(repo, "branch", "--list", "gc/*", "--format=%(refname:short)").strip(), monkeypatch, pr=3)
    # Merged locally but not on origin's main yet: still nothing.
    assert json.loads(cli("gc", "--apply", "--json", cwd=repo).out)["versions"] == []
    git(repo, "push", "--quiet", "origin", "main")

    applied = cli("gc", "--apply", cwd=repo)

    assert applied.code == 0, applied.err
    assert "purged credit-approval@1.0.0 (marked on origin/main)" in applied.out
    assert "1 object(s) removed from the DVC remote" in applied.out
    assert snapshot(remote) != stored and not weights.exists()
    assert (repo / "models/credit-approval/1.1.0/model.safetensors").is_file()  # kept


def test_a_new_version_cannot_arrive_purged(registered: Path, cli: Callable[..., Result], inputs: Path,
                                            tmp_path: Path) -> None:
    card = inputs / "card.yaml"
    card.write_text(card.read_text() + MARK)
    assert cli("register", "credit-approval", "1.2.0", "--card", str(card), "--artifact",
               str(inputs / "model.safetensors"), cwd=registered).code == 0

    messages = check_fails(cli, registered, tmp_path)

    assert any(m.startswith("models/credit-approval/1.2.0/card.yaml: a new version carries gc's purged: mark")
               for m in messages), messages


def test_a_purged_version_cannot_be_served_again(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    repo = registry_dir
    two_old_versions_keep_one(repo, inputs, cli, monkeypatch)
    assert cli("gc", "--no-branch", cwd=repo).code == 0  # 1.0.0 marked purged, on main
    # By hand, since `registry promote` refuses: the lifecycle gate must refuse it too.
    git(repo, "switch", "--quiet", "-c", "revive")
    (repo / "models/credit-approval/stages.yaml").write_text("staging: [1.0.0]\n")
    git(repo, "commit", "--quiet", "-am", "Stage a purged version")
    report_file = tmp_path / "report.json"

    result = cli("check", "--base", "main", "--gate", "lifecycle", "--json", str(report_file), cwd=repo)

    assert result.code == 1, result.out
    messages = [g["message"] for g in json.loads(report_file.read_text())["gates"] if g["status"] == "fail"]
    assert any("credit-approval@1.0.0 was purged by the retention policy and its weights are gone; it cannot go "
               "to staging" in m for m in messages), messages


def test_gc_apply_usage_errors_change_nothing(registry_dir: Path, cli: Callable[..., Result], tmp_path: Path) -> None:
    before = snapshot(registry_dir / "models", tmp_path / "dvc-remote")
    result = cli("gc", "--apply", "--dry-run", cwd=registry_dir)
    assert result.code == 2 and "--apply goes alone" in result.err
    git(registry_dir, "branch", "-m", "main", "trunk")
    git(registry_dir, "remote", "remove", "origin")
    result = cli("gc", "--apply", cwd=registry_dir)
    assert result.code == 2 and "no branch main to read merged purge marks from" in result.err
    assert "Traceback" not in result.err
    assert snapshot(registry_dir / "models", tmp_path / "dvc-remote") == before


def purge_merged(repo: Path, inputs: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    """1.0.0's purge mark is merged and pushed; 1.1.0 is kept."""
    two_old_versions_keep_one(repo, inputs, cli, monkeypatch)
    assert cli("gc", cwd=repo).code == 0
    merge(repo, git(repo, "branch", "--list", "gc/*", "--format=%(refname:short)").strip(), monkeypatch, pr=3)
    git(repo, "push", "--quiet", "origin", "main")


@pytest.mark.parametrize("remote", ["http", "folder"])
def test_gc_apply_with_the_remote_unreachable_deletes_nothing(remote: str, registry_dir: Path, inputs: Path,
                                                              cli: Callable[..., Result],
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An HTTP remote refusing connections, or a remote folder that is gone (an unmounted share)."""
    repo = registry_dir
    purge_merged(repo, inputs, cli, monkeypatch)
    if remote == "http":
        with socket.socket() as probe:  # a local port nobody listens on: the connection is refused
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}/dvc"
    else:
        url = str(tmp_path / "unmounted/dvc-remote")
    (repo / ".dvc/config.local").write_text(f"['remote \"storage\"']\n    url = {url}\n")
    before = snapshot(repo / "models", repo / ".dvc/cache")

    result = cli("gc", "--apply", cwd=repo)

    assert result.code == 1, result.out + result.err
    assert result.err.startswith("error: DVC could not reach the remote's objects at "), result.err
    assert "nothing was deleted" in result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert snapshot(repo / "models", repo / ".dvc/cache") == before  # nothing deleted locally


def test_gc_apply_stops_when_git_cannot_read_a_card(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
                                                    monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A git failure is not "no card": skipping the kept card would drop its objects from the kept set."""
    from registry.repo import git as gitmodule

    repo = registry_dir
    purge_merged(repo, inputs, cli, monkeypatch)
    before = snapshot(repo / "models", repo / ".dvc/cache", tmp_path / "dvc-remote")
    monkeypatch.setattr(gitmodule.CatFile, "read", lambda self, spec: None)  # as when cat-file dies

    result = cli("gc", "--apply", cwd=repo)

    assert result.code == 1, result.out + result.err
    assert "git could not read refs/remotes/origin/main:models/credit-approval/" in result.err
    assert "nothing was deleted" in result.err
    assert snapshot(repo / "models", repo / ".dvc/cache", tmp_path / "dvc-remote") == before


def test_gc_apply_keeps_what_an_invalid_card_s_pointers_name(registry_dir: Path, inputs: Path,
                                                             cli: Callable[..., Result],
                                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A kept version whose card does not parse still holds its objects, even those a purged one shares."""
    repo = registry_dir
    purge_merged(repo, inputs, cli, monkeypatch)
    kept = repo / "models/credit-approval/1.1.0"
    (kept / "model.safetensors.dvc").write_text((repo / "models/credit-approval/1.0.0/model.safetensors.dvc").read_text())
    (kept / "card.yaml").write_text((kept / "card.yaml").read_text() + "bogus: [\n")
    git(repo, "commit", "--quiet", "--no-verify", "-am", "A broken card that shares 1.0.0's weights")
    git(repo, "push", "--quiet", "origin", "main")
    stored = snapshot(tmp_path / "dvc-remote")

    result = cli("gc", "--apply", cwd=repo)

    assert result.code == 0, result.out + result.err
    assert "0 object(s) removed from the DVC remote" in result.out
    assert snapshot(tmp_path / "dvc-remote") == stored
