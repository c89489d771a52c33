"""`registry record-approvals` against a local HTTP server that answers GitHub's two endpoints
(as S3 is tested against moto), writing real git notes into a real registry and its origin."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, git, merge

NOTES = "refs/notes/registry/approvals"
SLUG = "org/models"


@dataclass
class FakeGitHub:
    url: str
    routes: dict[str, Any] = field(default_factory=dict)
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def pull(self, number: int, merge_sha: str, author: str = "dana", merged_by: str = "rita",
             reviews: list[dict[str, Any]] | None = None, merged: bool = True) -> None:
        base = f"/repos/{SLUG}/pulls/{number}"
        self.routes[base] = {"number": number, "merged": merged, "merged_at": "2026-11-01T12:00:00Z" if merged else None,
                             "merge_commit_sha": merge_sha, "user": {"login": author},
                             "merged_by": {"login": merged_by} if merged else None, "head": {"sha": "ab" * 20}}
        everything = reviews or []
        for page in range(1, len(everything) // 100 + 2):
            self.routes[f"{base}/reviews?per_page=100&page={page}"] = everything[(page - 1) * 100:page * 100]


def review(login: str, state: str = "APPROVED") -> dict[str, Any]:
    return {"user": {"login": login}, "state": state, "commit_id": "ab" * 20}


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.seen.append((self.path, self.headers.get("Authorization")))
            if self.path not in fake.routes:
                self.send_response(404)
                self.end_headers()
                self.wfile.write(b'{"message": "Not Found"}')
                return
            body = json.dumps(fake.routes[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def opt_in(repo: Path) -> None:
    config = repo / "registry.yaml"
    text = config.read_text()
    assert "record_approvals: false" in text
    config.write_text(text.replace("record_approvals: false", "record_approvals: true"))
    git(repo, "commit", "--quiet", "-am", "Record approvals")


def promoted(repo: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, pr: int) -> str:
    result = cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "ok", cwd=repo)
    assert result.code == 0, result.err
    merge(repo, "promote/credit-approval/1.0.0-to-staging", monkeypatch, pr=pr)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def env(registered: Path, monkeypatch: pytest.MonkeyPatch, github: FakeGitHub) -> Path:
    monkeypatch.setenv("GITHUB_REPOSITORY", SLUG)
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    opt_in(registered)
    return registered


def note(repo: Path, commit: str, where: str = ".") -> dict[str, Any]:
    return json.loads(git(repo / where, "notes", f"--ref={NOTES}", "show", commit))  # type: ignore[no-any-return]


def test_records_reviews_and_pushes_the_notes(env: Path, github: FakeGitHub, cli: Callable[..., Result],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sha = promoted(env, cli, monkeypatch, pr=5)
    github.pull(5, sha, reviews=[review("omar", "COMMENTED"), review("rita"), review("omar", "APPROVED")])
    result = cli("record-approvals", "--pr", "5", "--push", cwd=env)
    assert result.code == 0, result.err
    assert "#5" in result.out and "@rita, @omar" in result.out
    assert note(env, sha) == {"pr": 5, "author": "dana", "merged_by": "rita", "approvers": ["rita", "omar"],
                              "merged_at": "2026-11-01T12:00:00Z", "head": "ab" * 20}
    assert all(auth == "Bearer t0ken" for _, auth in github.seen)
    # Pushed: the origin has the note on the same commit.
    origin = git(env, "remote", "get-url", "origin").strip()
    assert note(Path(origin), sha)["approvers"] == ["rita", "omar"]
    last = json.loads(cli("log", "--json", cwd=env).out)[-1]
    assert (last["approved_by"], last["approval_source"], last["self_approved"]) == ("@rita, @omar", "review", False)


def test_latest_review_wins_and_pages_are_followed(env: Path, github: FakeGitHub, cli: Callable[..., Result],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sha = promoted(env, cli, monkeypatch, pr=6)
    reviews = [review(f"user{i}", "COMMENTED") for i in range(99)]
    reviews += [review("rita"), review("rita", "CHANGES_REQUESTED"), review("omar"), review("eve"),
                review("eve", "DISMISSED")]
    github.pull(6, sha, reviews=reviews)
    assert cli("record-approvals", "--pr", "6", cwd=env).code == 0
    assert note(env, sha)["approvers"] == ["omar"]
    assert f"/repos/{SLUG}/pulls/6/reviews?per_page=100&page=2" in [p for p, _ in github.seen]


def test_self_approval_is_recorded_and_shown(env: Path, github: FakeGitHub, cli: Callable[..., Result],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sha = promoted(env, cli, monkeypatch, pr=7)
    github.pull(7, sha, author="dana", merged_by="dana", reviews=[review("dana")])
    assert cli("record-approvals", "--pr", "7", cwd=env).code == 0
    last = json.loads(cli("log", "--json", cwd=env).out)[-1]
    assert (last["approved_by"], last["self_approved"]) == ("@dana", True)


def test_range_finds_the_merged_pull_requests(env: Path, github: FakeGitHub, cli: Callable[..., Result],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = git(env, "rev-parse", "HEAD").strip()
    sha = promoted(env, cli, monkeypatch, pr=8)
    github.pull(8, sha, reviews=[review("rita")])
    result = cli("record-approvals", "--range", f"{before}..HEAD", "--json", cwd=env)
    assert result.code == 0, result.err
    assert [(r["pr"], r["commit"]) for r in json.loads(result.out)] == [(8, sha)]


def test_a_commit_claiming_another_pull_request_is_refused(env: Path, github: FakeGitHub,
                                                           cli: Callable[..., Result],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    before = git(env, "rev-parse", "HEAD").strip()
    sha = promoted(env, cli, monkeypatch, pr=9)
    github.pull(9, before, reviews=[review("rita")])  # the forge says #9 merged another commit
    result = cli("record-approvals", "--range", f"{before}..HEAD", cwd=env)
    assert result.code == 1 and "says it is pull request #9" in result.err
    assert not _has_note(env, sha)


def _has_note(repo: Path, commit: str) -> bool:
    import subprocess

    return subprocess.run(["git", "notes", f"--ref={NOTES}", "show", commit], cwd=repo,
                          capture_output=True).returncode == 0


def test_unmerged_or_foreign_commit_is_refused(env: Path, github: FakeGitHub, cli: Callable[..., Result],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sha = promoted(env, cli, monkeypatch, pr=10)
    github.pull(10, sha, merged=False)
    result = cli("record-approvals", "--pr", "10", cwd=env)
    assert result.code == 1 and "#10 is not merged" in result.err
    github.pull(11, "cd" * 20)
    result = cli("record-approvals", "--pr", "11", cwd=env)
    assert result.code == 1 and "not on HEAD's first-parent history" in result.err
    result = cli("record-approvals", "--pr", "12", cwd=env)
    assert result.code == 1 and "HTTP 404" in result.err and "Traceback" not in result.err
    assert not _has_note(env, sha)


def test_refused_without_opt_in_or_arguments(registered: Path, github: FakeGitHub, cli: Callable[..., Result],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    result = cli("record-approvals", "--pr", "1", "--repo", SLUG, cwd=registered)
    assert result.code == 2 and "record_approvals: true" in result.err
    assert github.seen == []
    opt_in(registered)
    result = cli("record-approvals", "--repo", SLUG, cwd=registered)
    assert result.code == 2 and "--pr N" in result.err
    result = cli("record-approvals", "--pr", "1", "--repo", "not a slug", cwd=registered)
    assert result.code == 2 and "OWNER/NAME" in result.err
    result = cli("record-approvals", "--pr", "1", "--repo", SLUG, "--api-url", "http://example.com", cwd=registered)
    assert result.code == 2 and "https://" in result.err


def test_push_merges_notes_another_run_pushed(env: Path, github: FakeGitHub, cli: Callable[..., Result],
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = promoted(env, cli, monkeypatch, pr=5)
    git(env, "push", "--quiet", "origin", "main")
    origin = git(env, "remote", "get-url", "origin").strip()
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", origin, str(other))
    git(other, "notes", f"--ref={NOTES}", "add", "-m", '{"pr": 5, "approvers": ["omar"]}', first)
    git(other, "push", "--quiet", "origin", NOTES)
    # Meanwhile this clone recorded something else locally, then records #13 and pushes.
    git(env, "notes", f"--ref={NOTES}", "add", "-m", '{"pr": 2, "approvers": ["rita"]}', "HEAD~1")
    cli("promote", "credit-approval", "1.1.0", "--to", "staging", "--reason", "ok", cwd=env)
    merge(env, "promote/credit-approval/1.1.0-to-staging", monkeypatch, pr=13)
    second = git(env, "rev-parse", "HEAD").strip()
    github.pull(13, second, reviews=[review("rita")])
    result = cli("record-approvals", "--pr", "13", "--push", cwd=env)
    assert result.code == 0, result.err
    assert note(Path(origin), first)["approvers"] == ["omar"]
    assert note(Path(origin), second)["approvers"] == ["rita"]


# -- the approval gate and CODEOWNERS -------------------------------------------------------

def approval_gate(cli: Callable[..., Result], repo: Path, head: str = "HEAD") -> list[dict[str, Any]]:
    result = cli("check", "--base", "main", "--head", head, "--gate", "approval", "--json", "-", cwd=repo)
    report = json.loads(result.out)
    assert result.code == (0 if report["passed"] else 1), result.err
    return [g for g in report["gates"] if g["gate"] == "approval"]


def test_first_pr_of_a_fresh_registry_passes_with_a_warning(registry_dir: Path, inputs: Path,
                                                            cli: Callable[..., Result]) -> None:
    result = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
    assert result.code == 0, result.err
    gates = approval_gate(cli, registry_dir)
    assert [g["status"] for g in gates] == ["pass"]
    assert "no code owners are set" in gates[0]["message"] and "roles.admin" in gates[0]["message"]
    assert "registry codeowners" in gates[0]["message"]


def admins(repo: Path, cli: Callable[..., Result]) -> None:
    (repo / "registry.yaml").write_text('roles: {admin: ["@org/ml-admins"]}\n')
    assert cli("codeowners", cwd=repo).code == 0
    git(repo, "commit", "--quiet", "-am", "Admins")


def test_new_models_do_not_edit_codeowners_and_admins_approve_them(registry_dir: Path, inputs: Path,
                                                                   cli: Callable[..., Result],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    admins(registry_dir, cli)
    for name in ("credit-approval", "fraud"):
        git(registry_dir, "switch", "--quiet", "main")
        result = cli("register", name, "1.0.0", "--card", str(inputs / "card.yaml"),
                     "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
        assert result.code == 0, result.err
        changed = git(registry_dir, "diff", "--name-only", "main", "HEAD").split()
        assert ".github/CODEOWNERS" not in changed
        gates = approval_gate(cli, registry_dir)
        assert [g["status"] for g in gates] == ["pass"]
        assert "needs approval from one of @org/ml-admins" in gates[0]["message"]
    # Two new-model PRs merge one after the other without a conflict.
    merge(registry_dir, "register/credit-approval/1.0.0", monkeypatch, pr=1)
    merge(registry_dir, "register/fraud/1.0.0", monkeypatch, pr=2)
    # `registry codeowners` adds their lines in a PR of its own, which the gate accepts.
    git(registry_dir, "switch", "--quiet", "-c", "owners")
    assert cli("codeowners", cwd=registry_dir).code == 0
    git(registry_dir, "commit", "--quiet", "-am", "CODEOWNERS")
    text = (registry_dir / ".github/CODEOWNERS").read_text()
    assert "* @org/ml-admins" in text and "/models/fraud/stages.yaml" in text
    assert [g["status"] for g in approval_gate(cli, registry_dir)] == ["pass"]


def test_a_pr_cannot_name_its_own_code_owners(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    admins(registry_dir, cli)
    result = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
    assert result.code == 0, result.err
    (registry_dir / ".github/CODEOWNERS").write_text("* @dana\n")
    git(registry_dir, "commit", "--quiet", "-am", "Me")
    [gate] = approval_gate(cli, registry_dir)
    assert gate["status"] == "fail" and "out of date" in gate["message"]


def test_gate_prints_the_approvals_policy(registered: Path, cli: Callable[..., Result]) -> None:
    for stage in ("staging", "production"):
        result = cli("promote", "credit-approval", "1.0.0", "--to", stage, "--reason", "r", "--no-branch",
                     cwd=registered)
        assert result.code == 0, result.err
    git(registered, "switch", "--quiet", "-c", "pr", "HEAD")
    git(registered, "branch", "--quiet", "-f", "main", "HEAD~1")
    [gate] = approval_gate(cli, registered)
    assert "production needs 1 approving review by someone other than the author" in gate["message"]
