"""The audit log across merge styles: --no-ff merges, fast-forwards, squashes, trailers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REVIEWER, Result, as_user, git, merge


def log(cli: Callable[..., Result], repo: Path, *args: str) -> list[dict[str, object]]:
    result = cli("log", *args, "--json", cwd=repo)
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def test_fast_forward_and_approved_by_trailer(registered: Path, cli: Callable[..., Result]) -> None:
    """An Approved-by: trailer is the author's own words: never an approver."""
    assert cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "smoke ok",
               "--no-branch", cwd=registered).code == 0
    git(registered, "commit", "--amend", "--quiet", "-m",
        "Promote credit-approval@1.0.0 to staging\n\nReason: smoke ok\nApproved-by: Rita Reviewer <rita@example.com>\n")
    last = log(cli, registered)[-1]
    assert last["action"] == "promoted" and last["approved_by"] is None
    assert (last["approval_source"], last["self_approved"]) == ("none", False)
    assert last["performed_by"] == "Dana Scientist <dana@example.com>"
    assert last["reason"] == "smoke ok" and last["pr"] is None


def test_squash_merge_pr_number(registered: Path, cli: Callable[..., Result],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "r1", cwd=registered).code == 0
    git(registered, "switch", "--quiet", "main")
    as_user(monkeypatch, REVIEWER)
    git(registered, "merge", "--quiet", "--squash", "promote/credit-approval/1.0.0-to-staging")
    git(registered, "commit", "--quiet", "-m", "Promote credit-approval@1.0.0 to staging (#42)\n\nReason: r1\n")
    last = log(cli, registered)[-1]
    assert (last["pr"], last["reason"], last["to_stage"]) == (42, "r1", "staging")


def test_one_model_log_ignores_other_models(registered: Path, inputs: Path, cli: Callable[..., Result],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("register", "fraud", "0.1.0", "--card", str(inputs / "card.yaml"),
               "--artifact", str(inputs / "model.safetensors"), cwd=registered).code == 0
    merge(registered, "register/fraud/0.1.0", monkeypatch, pr=9)
    assert {e["model"] for e in log(cli, registered, "credit-approval")} == {"credit-approval"}
    assert [(e["model"], e["action"]) for e in log(cli, registered, "fraud")] == [("fraud", "registered")]
    assert len(log(cli, registered)) == 3


def test_rollback_is_recognised(registered: Path, cli: Callable[..., Result]) -> None:
    for version, stage in [("1.0.0", "staging"), ("1.0.0", "production"), ("1.1.0", "staging"),
                           ("1.1.0", "production"), ("1.0.0", "production")]:
        result = cli("promote", "credit-approval", version, "--to", stage, "--reason", "x", "--no-branch", cwd=registered)
        assert result.code == 0, result.err
    entries = log(cli, registered)
    assert [(e["action"], e["version"]) for e in entries[-2:]] == [("rolled back", "1.0.0"), ("deprecated", "1.1.0")]


def test_hand_written_stages_file_is_read_by_content(registered: Path, cli: Callable[..., Result]) -> None:
    """The log follows what stages.yaml says, however it was written."""
    stages = registered / "models/credit-approval/stages.yaml"
    stages.write_text("staging:\n  - 1.0.0\n  - 1.1.0\n")
    git(registered, "commit", "--quiet", "-am", "Stage both\n\nReason: hand edit")
    entries = log(cli, registered)[-2:]
    assert [(e["version"], e["to_stage"], e["reason"]) for e in entries] == [
        ("1.0.0", "staging", "hand edit"), ("1.1.0", "staging", "hand edit")]


def test_the_audit_log_describes_a_task_policy_change_and_nothing_else() -> None:
    """`registry log --action policy` words: a new task override, not every default stage "removed"."""
    from registry.queries.policy_changes import describe_policy_change

    tasks = b"policy:\n  tasks:\n    regression:\n      production:\n        metrics: {rmse: {max: 0.3}}\n"
    assert describe_policy_change(b"{}", tasks) == ["tasks regression production metrics rmse max set to 0.3"]
    production = b"policy:\n  production:\n    metrics: {accuracy: {min: 0.92}}\n"
    assert describe_policy_change(b"{}", production) == ["production accuracy min 0.9 → 0.92"]
