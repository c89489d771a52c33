"""The audit trail: reasons from the commit that made a change, approvers only from the forge's
records (git notes) or who merged, registry.yaml changes as policy events. Real repositories."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REVIEWER, SCIENTIST, Result, as_user, git, merge

ADMIN = ("Ada Admin", "ada@example.com")
PROMOTE_BRANCH = "promote/credit-approval/1.0.0-to-staging"


def log(cli: Callable[..., Result], repo: Path, *args: str) -> list[dict[str, object]]:
    result = cli("log", *args, "--json", cwd=repo)
    assert result.code == 0, result.err
    return json.loads(result.out)  # type: ignore[no-any-return]


def promote_to_staging(cli: Callable[..., Result], repo: Path, reason: str = "smoke ok") -> None:
    result = cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", reason, cwd=repo)
    assert result.code == 0, result.err


def later_commit_on_branch(repo: Path, monkeypatch: pytest.MonkeyPatch, who: tuple[str, str] = SCIENTIST,
                           message: str = "Sign credit-approval@1.0.0") -> None:
    """A commit after the promotion on the same branch (as the sign-after-promote flow makes)."""
    as_user(monkeypatch, who)
    model = repo / "models/credit-approval/model.yaml"
    model.write_text(model.read_text() + "# touched\n")
    git(repo, "commit", "--quiet", "-am", message)
    as_user(monkeypatch, SCIENTIST)


def add_note(repo: Path, commit: str, note: dict[str, object]) -> None:
    git(repo, "notes", "--ref=refs/notes/registry/approvals", "add", "-f", "-m", json.dumps(note), commit)


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


# -- reasons ------------------------------------------------------------------------------

def test_reason_is_the_promoting_commits_not_a_later_commits(registered: Path, cli: Callable[..., Result],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered, "smoke ok")
    later_commit_on_branch(registered, monkeypatch, who=REVIEWER)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=7)
    last = log(cli, registered)[-1]
    assert (last["action"], last["to_stage"], last["pr"]) == ("promoted", "staging", 7)
    assert last["reason"] == "smoke ok"
    # Who made the change is the promoting commit's author, not the later commit's.
    assert last["performed_by"] == "Dana Scientist <dana@example.com>"


def test_reason_of_each_change_on_a_branch_with_two_promotions(registered: Path, cli: Callable[..., Result],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered, "first reason")
    stages = registered / "models/credit-approval/stages.yaml"
    assert "staging: [1.0.0]" in stages.read_text()
    stages.write_text(stages.read_text().replace("staging: [1.0.0]", "staging: [1.0.0, 1.1.0]"))
    git(registered, "commit", "--quiet", "-am", "Stage 1.1.0 too\n\nReason: second reason")
    later_commit_on_branch(registered, monkeypatch)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=8)
    reasons = {e["version"]: e["reason"] for e in log(cli, registered, "--action", "promoted")}
    assert reasons == {"1.0.0": "first reason", "1.1.0": "second reason"}


def test_merge_without_reason_uses_the_pull_requests_title(registered: Path, cli: Callable[..., Result],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    stages = registered / "models/credit-approval/stages.yaml"
    git(registered, "switch", "--quiet", "-c", "hand")
    stages.write_text("staging: [1.0.0]\n")
    git(registered, "commit", "--quiet", "-am", "wip")
    later_commit_on_branch(registered, monkeypatch)
    as_user(monkeypatch, REVIEWER)
    git(registered, "switch", "--quiet", "main")
    git(registered, "merge", "--quiet", "--no-ff", "hand", "-m",
        "Merge pull request #12 from org/hand\n\nStage 1.0.0 for the fraud review")
    last = log(cli, registered)[-1]
    assert (last["reason"], last["pr"]) == ("Stage 1.0.0 for the fraud review", 12)


# -- approvers ----------------------------------------------------------------------------

def test_self_merge_is_not_an_approval(registered: Path, cli: Callable[..., Result],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered)
    git(registered, "commit", "--quiet", "--allow-empty", "-m",
        "Approve\n\nApproved-by: Rita Reviewer <rita@example.com>\nReviewed-by: Rita Reviewer <rita@example.com>")
    git(registered, "switch", "--quiet", "main")
    git(registered, "merge", "--quiet", "--no-ff", PROMOTE_BRANCH, "-m", "Merge pull request #3 from org/x")
    last = log(cli, registered)[-1]
    assert (last["approved_by"], last["approval_source"], last["self_approved"]) == (None, "none", False)
    table = cli("log", cwd=registered).out.splitlines()[-1]
    assert "approved by" not in table and "Rita" not in table


def test_reviewer_merge_is_a_merge_approval(registered: Path, cli: Callable[..., Result],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=4)
    last = log(cli, registered)[-1]
    assert last["approved_by"] == "Rita Reviewer <rita@example.com>"
    assert (last["approval_source"], last["self_approved"]) == ("merge", False)
    assert "merged by Rita Reviewer (#4)" in cli("log", cwd=registered).out.splitlines()[-1]


def test_squash_merge_by_the_web_flow_records_no_approver(registered: Path, cli: Callable[..., Result],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered, "r1")
    git(registered, "switch", "--quiet", "main")
    git(registered, "merge", "--quiet", "--squash", PROMOTE_BRANCH)
    monkeypatch.setenv("GIT_COMMITTER_NAME", "GitHub")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "noreply@github.com")
    git(registered, "commit", "--quiet", "-m", "Promote credit-approval@1.0.0 to staging (#42)\n\nReason: r1\n"
        "Approved-by: Rita Reviewer <rita@example.com>")
    last = log(cli, registered)[-1]
    assert (last["pr"], last["reason"], last["approved_by"], last["approval_source"]) == (42, "r1", None, "none")


def test_notes_name_the_reviewers(registered: Path, cli: Callable[..., Result],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=5)
    add_note(registered, head(registered), {"pr": 5, "author": "dana", "merged_by": "rita",
                                            "approvers": ["rita", "omar"]})
    last = log(cli, registered)[-1]
    assert (last["approved_by"], last["approval_source"], last["self_approved"], last["pr"]) == (
        "@rita, @omar", "review", False, 5)
    # Only this commit has a note: the registrations before it fall back to who merged.
    first = log(cli, registered)[0]
    assert (first["approved_by"], first["approval_source"]) == ("Rita Reviewer <rita@example.com>", "merge")


def test_note_with_the_author_among_approvers_is_self_approved(registered: Path, cli: Callable[..., Result],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=6)
    add_note(registered, head(registered), {"pr": 6, "author": "dana", "merged_by": "dana",
                                            "approvers": ["dana"]})
    last = log(cli, registered)[-1]
    assert (last["approved_by"], last["approval_source"], last["self_approved"]) == ("@dana", "review", True)
    assert "approved by @dana (self-approved)" in cli("log", cwd=registered).out.splitlines()[-1]


def test_note_without_reviews_from_an_admin_merge(registered: Path, cli: Callable[..., Result],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=6)
    add_note(registered, head(registered), {"pr": 6, "author": "dana", "merged_by": "ada", "approvers": []})
    last = log(cli, registered)[-1]
    assert (last["approved_by"], last["approval_source"]) == ("@ada", "merge")


def test_a_note_that_is_not_json_is_ignored(registered: Path, cli: Callable[..., Result],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    promote_to_staging(cli, registered)
    merge(registered, PROMOTE_BRANCH, monkeypatch, pr=6)
    git(registered, "notes", "--ref=refs/notes/registry/approvals", "add", "-m", "approved by rita", head(registered))
    add_note(registered, head(registered) + "~1", {"approvers": ["../../evil"], "author": "x y"})
    last = log(cli, registered)[-1]
    assert (last["approved_by"], last["approval_source"]) == ("Rita Reviewer <rita@example.com>", "merge")


def test_json_keeps_every_existing_key(registered: Path, cli: Callable[..., Result]) -> None:
    keys = set(log(cli, registered)[0])
    assert {"timestamp", "action", "model", "version", "from_stage", "to_stage", "performed_by", "approved_by",
            "reason", "commit", "pr", "url", "approval_source", "self_approved"} <= keys
    csv_header = cli("log", "--format", "csv", cwd=registered).out.splitlines()[0]
    assert csv_header.startswith("timestamp,action,model,version") and "approval_source,self_approved" in csv_header


# -- policy events ------------------------------------------------------------------------

def test_registry_yaml_changes_are_policy_events(registered: Path, cli: Callable[..., Result],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.signing import keys as signing_keys

    (registered / "keys").mkdir()
    _, public = signing_keys.generate_keypair(registered / "keys" / "release")
    key_id = signing_keys.key_id(signing_keys.load_public_keys(public)[0])
    config = registered / "registry.yaml"
    text = config.read_text()
    assert "min: 0.9\n" in text and "trusted_keys: []" in text and "admin: []" in text
    git(registered, "switch", "--quiet", "-c", "tighten")
    config.write_text(text.replace("min: 0.9\n", "min: 0.92\n", 1).replace("trusted_keys: []", "trusted_keys: [keys/release.pub]")
                      .replace("admin: []", "admin: ['@org/ml-admins']"))
    (registered / "keys" / "release.key").unlink()
    git(registered, "add", "registry.yaml", "keys/release.pub")
    git(registered, "commit", "--quiet", "-m", "Tighten production\n\nReason: audit finding 12")
    merge(registered, "tighten", monkeypatch, pr=15)
    entries = log(cli, registered, "--action", "policy")
    assert len(entries) == 1
    event = entries[0]
    assert (event["action"], event["model"], event["reason"], event["pr"]) == ("policy", "", "audit finding 12", 15)
    assert event["performed_by"] == "Dana Scientist <dana@example.com>"
    assert event["approved_by"] == "Rita Reviewer <rita@example.com>"
    detail = str(event["detail"])
    assert "production accuracy min 0.9 → 0.92" in detail
    assert f"trusted key {key_id[:8]}… (keys/release.pub) added" in detail
    assert "@org/ml-admins added as admin" in detail
    # A whole log has it; a model's log and other actions do not.
    assert "policy" in [e["action"] for e in log(cli, registered)]
    assert "policy" not in [e["action"] for e in log(cli, registered, "credit-approval")]
    assert "policy" not in [e["action"] for e in log(cli, registered, "--action", "registered")]
    table = cli("log", "--action", "policy", cwd=registered).out
    assert "policy" in table and "registry.yaml" in table and "0.9 → 0.92" in table


def test_policy_event_for_lifecycle_and_approvals(registered: Path, cli: Callable[..., Result]) -> None:
    config = registered / "registry.yaml"
    text = config.read_text()
    text = text.replace("    production:\n    - deprecated\n", "    production:\n    - deprecated\n    - archived\n", 1)
    text = text.replace("no_self_approval: true", "no_self_approval: true\n      min: 2", 1)
    text = text.replace("      min: 1\n", "", 1)
    config.write_text(text)
    git(registered, "commit", "--quiet", "-am", "Loosen lifecycle")
    detail = str(log(cli, registered, "--action", "policy")[-1]["detail"])
    assert "transition production → archived added" in detail
    assert "production approvals min 1 → 2" in detail


def test_comment_only_change_is_no_event_and_invalid_file_is(registered: Path, cli: Callable[..., Result]) -> None:
    config = registered / "registry.yaml"
    config.write_text(config.read_text() + "# a comment\n")
    git(registered, "commit", "--quiet", "-am", "Comment")
    assert log(cli, registered, "--action", "policy") == []
    config.write_text("policy: [\n")
    git(registered, "commit", "--quiet", "-am", "Break it")
    [event] = log(cli, registered, "--action", "policy")
    assert "invalid" in str(event["detail"])
    assert cli("log", "--action", "nonsense", cwd=registered).code == 2


# -- what was in production at time T -----------------------------------------------------

def test_manifest_as_of(registered: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [("1.0.0", "staging", "2030-01-01T10:00:00Z"), ("1.0.0", "production", "2030-01-01T12:00:00Z"),
             ("1.1.0", "staging", "2030-02-01T10:00:00Z"), ("1.1.0", "production", "2030-02-01T12:00:00Z")]
    for version, stage, when in steps:
        monkeypatch.setenv("GIT_COMMITTER_DATE", when)
        result = cli("promote", "credit-approval", version, "--to", stage, "--reason", "r", "--no-branch",
                     cwd=registered)
        assert result.code == 0, result.err
    monkeypatch.delenv("GIT_COMMITTER_DATE")

    def served(when: str) -> dict[str, object]:
        result = cli("manifest", "--as-of", when, "--json", cwd=registered)
        assert result.code == 0, result.err
        return {name: model["version"] for name, model in json.loads(result.out)["models"].items()}

    assert served("2030-01-01T11:59:59Z") == {}
    assert served("2030-01-01T12:00Z") == {"credit-approval": "1.0.0"}  # at T counts
    assert served("2030-01-01T13:00+01:00") == {"credit-approval": "1.0.0"}  # 12:00 UTC
    assert served("2030-01-31") == {"credit-approval": "1.0.0"}
    assert served("2030-02-01T12:00:00") == {"credit-approval": "1.1.0"}  # no offset: UTC
    import registry

    data = registry.open(registered).manifest("production", as_of="2030-01-15T00:00Z")
    assert data["models"]["credit-approval"]["version"] == "1.0.0"
    assert data["registry_commit"] == git(registered, "rev-parse", "HEAD~2").strip()
    for bad, words in (("yesterday", "ISO 8601"), ("2030-13-01", "ISO 8601"), ("1999-01-01", "starts later")):
        result = cli("manifest", "--as-of", bad, cwd=registered)
        assert result.code == 2 and words in result.err and "Traceback" not in result.err


# -- commit-graph with changed-path Bloom filters -----------------------------------------

def test_log_writes_and_refreshes_the_commit_graph(registered: Path, cli: Callable[..., Result],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from registry.repo import commitgraph

    git_dir = registered / ".git"
    git(registered, "commit-graph", "write", "--reachable")  # as the synthetic registry has: no filters
    assert not commitgraph.has_changed_paths(git_dir)
    without = log(cli, registered, "credit-approval")
    assert commitgraph.has_changed_paths(git_dir)
    assert (git_dir / "registry" / commitgraph.MARKER).read_text().strip() == head(registered)
    assert commitgraph.ensure(registered) == "fresh"
    # The same entries read through the filters.
    assert log(cli, registered, "credit-approval") == without
    # A few new commits leave it alone; more than STALE_AFTER add a layer.
    git(registered, "commit", "--quiet", "--allow-empty", "-m", "x")
    assert commitgraph.ensure(registered) == "fresh"
    monkeypatch.setattr(commitgraph, "STALE_AFTER", 0)
    assert commitgraph.ensure(registered) == "refreshed"
    assert (git_dir / "registry" / commitgraph.MARKER).read_text().strip() == head(registered)
    assert commitgraph.has_changed_paths(git_dir)
    assert git(registered, "commit-graph", "verify") == ""


def test_init_keeps_the_commit_graph_fresh_on_fetch(registry_dir: Path) -> None:
    assert git(registry_dir, "config", "fetch.writeCommitGraph").strip() == "true"


def test_a_repository_that_cannot_be_written_is_only_slower(registered: Path, cli: Callable[..., Result]) -> None:
    from registry.repo import commitgraph

    info = registered / ".git" / "objects" / "info"
    info.mkdir(exist_ok=True)
    (info / "commit-graphs").write_text("not a folder")  # git cannot write its chain here
    assert commitgraph.ensure(registered) == "failed"
    assert [e["action"] for e in log(cli, registered, "credit-approval")] == ["registered", "registered"]
