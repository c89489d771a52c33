"""`registry verify-history` on crafted histories: real repositories, real signatures, real notes.

The template: a trusted key in registry.yaml; credit-approval 1.0.0 (signed) and 1.1.0
(unsigned) registered through merged pull requests; 1.0.0 promoted to staging and then
production through pull requests a reviewer approved (notes recorded). Each test copies it
and writes a few more commits on main.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import CARD, REVIEWER, SCIENTIST, Result, as_user, git, isolate

NOTES = "--ref=refs/notes/registry/approvals"
NAME = "credit-approval"


def _note(repo: Path, approvers: list[str], author: str = "dana", merged_by: str = "rita",
          commit: str = "HEAD", pr: int | None = None) -> None:
    data = {"pr": pr, "author": author, "merged_by": merged_by, "approvers": approvers}
    git(repo, "notes", NOTES, "add", "-f", "-m", json.dumps(data), commit)


def _merge(repo: Path, branch: str, pr: int, monkeypatch: pytest.MonkeyPatch,
           merger: tuple[str, str] = REVIEWER) -> None:
    as_user(monkeypatch, merger)
    git(repo, "switch", "--quiet", "main")
    git(repo, "merge", "--quiet", "--no-ff", branch, "-m", f"Merge pull request #{pr} from org/{branch}")
    git(repo, "branch", "--quiet", "-D", branch)
    as_user(monkeypatch, SCIENTIST)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from safetensors.numpy import save_file

    from registry import api
    from registry.changes import sign as sign_module
    from registry.signing.keys import generate_keypair

    root = tmp_path_factory.mktemp("history-template")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, root / "home")
        reg = api.init(root / "reg", dvc_remote=str(root / "dvc-remote"))
        repo = reg.root
        generate_keypair(root / "release")
        (repo / "keys").mkdir()
        shutil.copy(root / "release.pub", repo / "keys/release.pub")
        config = repo / "registry.yaml"
        config.write_text(config.read_text().replace("trusted_keys: []", "trusted_keys: [keys/release.pub]"))
        git(repo, "add", "-A")
        git(repo, "commit", "--quiet", "-m", "Trust the release key")
        inputs = root / "inputs"
        inputs.mkdir()
        (inputs / "card.yaml").write_text(CARD)
        for pr, (version, seed) in enumerate([("1.0.0", 0), ("1.1.0", 1)], start=1):
            rng = np.random.default_rng(seed)
            save_file({"weight": rng.random((8, 2), dtype=np.float32)}, str(inputs / "model.safetensors"))
            reg.register(NAME, version, inputs / "card.yaml", [inputs / "model.safetensors"])
            _merge(repo, f"register/{NAME}/{version}", pr, monkeypatch)
        sign_module.sign_version(reg, NAME, "1.0.0", root / "release.key")
        _merge(repo, f"sign/{NAME}/1.0.0", 3, monkeypatch)
        for pr, stage in ((4, "staging"), (5, "production")):
            reg.promote(NAME, "1.0.0", stage, f"to {stage}")
            _merge(repo, f"promote/{NAME}/1.0.0-to-{stage}", pr, monkeypatch)
            _note(repo, ["rita"], pr=pr)
        yield root


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "t"
    shutil.copytree(template, root, symlinks=True, ignore=shutil.ignore_patterns("home"))
    return root / "reg"


@pytest.fixture
def key(repo: Path) -> Path:
    return repo.parent / "release.key"


def verify(cli: Callable[..., Result], repo: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = cli("verify-history", *args, "--json", cwd=repo)
    assert result.code in (0, 1), result.err
    data = json.loads(result.out)
    assert result.code == (0 if data["ok"] else 1)
    return result.code, data["violations"]


def rules(cli: Callable[..., Result], repo: Path, *args: str) -> list[tuple[str, str]]:
    return [(v["rule"], f"{v['model']}@{v['version']}") for v in verify(cli, repo, *args)[1]]


def promote_pr(cli: Callable[..., Result], repo: Path, monkeypatch: pytest.MonkeyPatch, version: str, stage: str,
               pr: int, approvers: list[str] | None = None, merger: tuple[str, str] = REVIEWER,
               note: bool = True, **note_fields: Any) -> None:
    result = cli("promote", NAME, version, "--to", stage, "--reason", "r", cwd=repo)
    assert result.code == 0, result.err
    _merge(repo, f"promote/{NAME}/{version}-to-{stage}", pr, monkeypatch, merger)
    if note:
        _note(repo, ["rita"] if approvers is None else approvers, pr=pr, **note_fields)


def direct(cli: Callable[..., Result], repo: Path, version: str, stage: str, *extra: str) -> None:
    git(repo, "switch", "--quiet", "main")
    result = cli("promote", NAME, version, "--to", stage, "--reason", "r", "--no-branch", *extra, cwd=repo)
    assert result.code == 0, result.err


def sign(cli: Callable[..., Result], repo: Path, key: Path, version: str) -> None:
    result = cli("sign", f"{NAME}@{version}", "--key", str(key), "--no-branch", cwd=repo)
    assert result.code == 0, result.err


def edit_policy(repo: Path, old: str, new: str, message: str = "Policy") -> None:
    config = repo / "registry.yaml"
    text = config.read_text()
    assert old in text, old
    config.write_text(text.replace(old, new, 1))
    git(repo, "commit", "--quiet", "-am", message)


def hand_stages(repo: Path, text: str, message: str = "Hand edit") -> None:
    (repo / f"models/{NAME}/stages.yaml").write_text(text)
    git(repo, "commit", "--quiet", "-am", message)


# -- 1-3: clean histories -------------------------------------------------------------------

def test_01_the_template_history_is_clean(repo: Path, cli: Callable[..., Result]) -> None:
    code, violations = verify(cli, repo)
    assert (code, violations) == (0, [])
    result = cli("verify-history", cwd=repo)
    assert result.code == 0 and "0 violations" in result.out


def test_02_signed_then_reviewed_promotion_is_clean(repo: Path, cli: Callable[..., Result], key: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    git(repo, "switch", "--quiet", "-c", "sign")
    sign(cli, repo, key, "1.1.0")
    _merge(repo, "sign", 6, monkeypatch)
    promote_pr(cli, repo, monkeypatch, "1.1.0", "staging", 7)
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 8, approvers=["rita", "omar"])
    assert rules(cli, repo) == []


def test_03_staging_needs_no_approval_by_default(repo: Path, cli: Callable[..., Result]) -> None:
    direct(cli, repo, "1.1.0", "staging")
    assert rules(cli, repo) == []


# -- 4-9: approvals -------------------------------------------------------------------------

def test_04_self_approval(repo: Path, cli: Callable[..., Result], key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 9, approvers=["dana"], merged_by="dana")
    assert rules(cli, repo) == [("self-approval", f"{NAME}@1.1.0")]
    result = cli("verify-history", cwd=repo)
    assert result.code == 1
    line = result.out.splitlines()[0]
    assert "#9" in line and f"{NAME}@1.1.0 self-approval" in line and "@dana" in line


def test_05_admin_merge_without_review(repo: Path, cli: Callable[..., Result], key: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 10, approvers=[], merged_by="ada")
    [violation] = verify(cli, repo)[1]
    assert violation["rule"] == "approvals" and "merged by @ada with 0 approving reviews" in violation["message"]
    assert violation["pr"] == 10


def test_06_direct_push_to_production(repo: Path, cli: Callable[..., Result], key: Path) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    direct(cli, repo, "1.1.0", "production")
    git(repo, "commit", "--quiet", "--amend", "-m", "Promote\n\nReason: r\nApproved-by: Rita Reviewer <rita@example.com>")
    assert rules(cli, repo) == [("direct-push", f"{NAME}@1.1.0")]


def test_07_self_merge_without_notes(repo: Path, cli: Callable[..., Result], key: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 11, merger=SCIENTIST, note=False)
    assert rules(cli, repo) == [("self-merge", f"{NAME}@1.1.0")]


def test_08_reviewer_merge_without_notes_is_unrecorded_not_a_violation(repo: Path, cli: Callable[..., Result],
                                                                       key: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 12, note=False)
    result = cli("verify-history", "--json", cwd=repo)
    data = json.loads(result.out)
    assert (result.code, data["violations"], data["unrecorded"]) == (0, [], 1)


def test_09_approvals_policy_of_the_parent_commit(repo: Path, cli: Callable[..., Result], key: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    edit_policy(repo, "      min: 1\n", "      min: 2\n")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 13, approvers=["rita"])
    assert rules(cli, repo) == [("approvals", f"{NAME}@1.1.0")]
    # Relaxed again: a later promotion with one review passes; the earlier one still does not.
    edit_policy(repo, "      min: 2\n", "      min: 1\n")
    promote_pr(cli, repo, monkeypatch, "1.0.0", "production", 14)
    assert rules(cli, repo) == [("approvals", f"{NAME}@1.1.0")]


# -- 10-14: signatures and policy changes ---------------------------------------------------

def test_10_unsigned_production(repo: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 15)
    found = verify(cli, repo)[1]
    assert [(v["rule"], v["version"]) for v in found] == [("signature", "1.1.0")]
    assert "unsigned" in found[0]["message"]


def test_11_signature_added_later(repo: Path, cli: Callable[..., Result], key: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 16)
    sign(cli, repo, key, "1.1.0")  # signing after the fact is allowed, and does not undo the promotion
    [violation] = verify(cli, repo)[1]
    assert (violation["rule"], violation["pr"]) == ("signature", 16)


def test_12_policy_tightened_mid_history(repo: Path, cli: Callable[..., Result],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    edit_policy(repo, "    require_signature: true\n", "    require_signature: false  # loosened\n", "Loosen")
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 17)  # allowed then
    edit_policy(repo, "    require_signature: false  # loosened\n", "    require_signature: true\n", "Tighten")
    promote_pr(cli, repo, monkeypatch, "1.0.0", "production", 18)  # a rollback, 1.0.0 is signed
    assert rules(cli, repo) == []
    hand_stages(repo, "production: 1.1.0\ndeprecated: {1.0.0: {sunset: 2031-01-01}}\n", "Back to 1.1.0")
    git(repo, "commit", "--quiet", "--amend", "-m", "Back to 1.1.0 (#19)")
    _note(repo, ["rita"], pr=19)
    assert rules(cli, repo) == [("signature", f"{NAME}@1.1.0")]


def test_13_relaxing_the_policy_in_the_same_commit_does_not_count(repo: Path, cli: Callable[..., Result],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    direct(cli, repo, "1.1.0", "staging")
    result = cli("promote", NAME, "1.1.0", "--to", "production", "--reason", "r", cwd=repo)
    assert result.code == 0, result.err
    edit_policy(repo, "    require_signature: true\n", "    require_signature: false\n", "And loosen")
    _merge(repo, f"promote/{NAME}/1.1.0-to-production", 20, monkeypatch)
    _note(repo, ["rita"], pr=20)
    assert rules(cli, repo) == [("signature", f"{NAME}@1.1.0")]


def test_14_an_invalid_policy_at_the_parent(repo: Path, cli: Callable[..., Result]) -> None:
    (repo / "registry.yaml").write_text("policy: [\n")
    git(repo, "commit", "--quiet", "-am", "Break")
    hand_stages(repo, "production: 1.0.0\nstaging: [1.1.0]\n", "Stage 1.1.0 (#21)")
    found = rules(cli, repo)
    assert found == [("policy", "@")]


# -- 15-18: lifecycle, rollbacks, registration, immutability --------------------------------

def test_15_rollback_to_an_earlier_production_version(repo: Path, cli: Callable[..., Result], key: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sign(cli, repo, key, "1.1.0")
    direct(cli, repo, "1.1.0", "staging")
    promote_pr(cli, repo, monkeypatch, "1.1.0", "production", 22)
    result = cli("rollback", NAME, "--reason", "latency", cwd=repo)
    assert result.code == 0, result.err
    _merge(repo, git(repo, "branch", "--list", "rollback/*", "--format=%(refname:short)").strip(), 23, monkeypatch)
    _note(repo, ["rita"], pr=23)
    assert rules(cli, repo) == []


def test_16_rollback_to_a_version_never_in_production(repo: Path, cli: Callable[..., Result], key: Path) -> None:
    sign(cli, repo, key, "1.1.0")
    hand_stages(repo, "production: 1.0.0\ndeprecated: {1.1.0: {sunset: 2031-01-01}}\n", "Deprecate 1.1.0 (#24)")
    _note(repo, ["rita"], pr=24)
    hand_stages(repo, "production: 1.1.0\ndeprecated: {1.0.0: {sunset: 2031-01-01}}\n", "Roll back (#25)")
    _note(repo, ["rita"], pr=25)
    found = verify(cli, repo)[1]
    assert ("lifecycle", "1.1.0", 24) in [(v["rule"], v["version"], v["pr"]) for v in found]  # development → deprecated
    rollback = [v for v in found if v["pr"] == 25 and v["version"] == "1.1.0"]
    assert [v["rule"] for v in rollback] == ["lifecycle"] and "never in production" in rollback[0]["message"]


def test_17_disallowed_transition(repo: Path, cli: Callable[..., Result], key: Path) -> None:
    sign(cli, repo, key, "1.1.0")
    hand_stages(repo, "production: 1.1.0\ndeprecated: {1.0.0: {sunset: 2031-01-01}}\n", "Skip staging (#26)")
    _note(repo, ["rita"], pr=26)
    found = verify(cli, repo)[1]
    assert [(v["rule"], v["version"]) for v in found] == [("lifecycle", "1.1.0")]
    assert "development → production is not allowed" in found[0]["message"]


def test_18_unregistered_version_and_changed_card(repo: Path, cli: Callable[..., Result]) -> None:
    hand_stages(repo, "production: 1.0.0\nstaging: [9.9.9]\n", "Stage a ghost")
    card = repo / f"models/{NAME}/1.0.0/card.yaml"
    card.write_text(card.read_text().replace("accuracy: 0.93", "accuracy: 0.99"))
    git(repo, "commit", "--quiet", "-am", "Better numbers")
    found = rules(cli, repo)
    assert ("registered", f"{NAME}@9.9.9") in found
    assert ("immutability", f"{NAME}@1.0.0") in found


# -- 19-22: --since, output, bad input ------------------------------------------------------

def test_19_since_a_ref(repo: Path, cli: Callable[..., Result], key: Path) -> None:
    direct(cli, repo, "1.1.0", "staging")
    direct(cli, repo, "1.1.0", "production")  # unsigned and pushed directly: two violations
    assert len(rules(cli, repo)) == 2
    mark = git(repo, "rev-parse", "HEAD").strip()
    sign(cli, repo, key, "1.1.0")
    assert rules(cli, repo, "--since", mark) == []
    assert len(rules(cli, repo, "--since", f"{mark}~1")) == 2


def test_20_since_a_date(repo: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2031-05-01T10:00:00Z")
    direct(cli, repo, "1.1.0", "staging")
    direct(cli, repo, "1.1.0", "production")
    monkeypatch.delenv("GIT_COMMITTER_DATE")
    assert len(rules(cli, repo, "--since", "2031-05-01")) == 2
    assert rules(cli, repo, "--since", "2031-05-02") == []
    assert len(rules(cli, repo, "--since", "2031-05-01T09:59Z")) == 2


def test_21_json_and_table(repo: Path, cli: Callable[..., Result]) -> None:
    direct(cli, repo, "1.1.0", "staging")
    direct(cli, repo, "1.1.0", "production")
    head = git(repo, "rev-parse", "HEAD").strip()
    result = cli("verify-history", "--json", cwd=repo)
    data = json.loads(result.out)
    assert result.code == 1 and data["ok"] is False and data["checked"] >= 3
    assert {v["commit"] for v in data["violations"]} == {head}
    assert set(data["violations"][0]) == {"commit", "pr", "model", "version", "rule", "message"}
    table = cli("verify-history", cwd=repo)
    assert table.code == 1
    assert all(line.startswith(head[:12]) and "no PR" in line for line in table.out.splitlines())
    assert "2 violations" in table.err


def test_22_bad_since(repo: Path, cli: Callable[..., Result]) -> None:
    for bad in ("no-such-ref", "2031-13-01"):
        result = cli("verify-history", "--since", bad, cwd=repo)
        assert result.code == 2 and "--since" in result.err and "Traceback" not in result.err
