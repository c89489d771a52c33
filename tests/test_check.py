"""`registry check` end to end: valid PRs pass every gate, the summary, bad refs.

Each gate's own failures are tested in tests/gates/test_<gate>.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git
from tests.gates.conftest import check, failures, register
from tests.gates.conftest import gated as gated  # the fixture, shared


def test_valid_registration_and_promotion_pass(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True)
    report = check(cli, gated, tmp_path)
    assert failures(report) == {}
    statuses = {(g["gate"], g["status"]) for g in report["gates"]}  # type: ignore[attr-defined]
    assert {("scan", "pass"), ("format", "pass"), ("smoke", "pass"), ("consistency", "pass"),
            ("signature", "pass")} <= statuses
    git(gated, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.0.0", "--to", "staging", "--reason", "ok", cwd=gated).code == 0
    report = check(cli, gated, tmp_path)
    assert failures(report) == {}
    assert {"lifecycle", "metrics", "smoke", "latency", "approval"} <= {
        g["gate"] for g in report["gates"] if g["status"] == "pass"}  # type: ignore[attr-defined]


def test_markdown_summary_shows_the_stage_diff(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.0.0", "--to", "staging", "--reason", "ok", cwd=gated).code == 0
    check(cli, gated, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "+staging: [1.0.0]" in summary
    assert "| lifecycle | m@1.0.0 | ✅ pass |" in summary


def test_bad_refs_are_usage_errors(gated: Path, cli: Callable[..., Result]) -> None:
    result = cli("check", "--base", "no-such-branch", cwd=gated)
    assert result.code == 2 and "--base no-such-branch: no such commit" in result.err
    result = cli("check", "--base", "main", "--gate", "nope", cwd=gated)
    assert result.code == 2 and "--gate nope: unknown gate" in result.err
