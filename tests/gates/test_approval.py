"""approval gate: CODEOWNERS in step with model.yaml owners, and the approvals a stage needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git
from tests.gates.conftest import (
    check,
    failures,
)


def test_approval_gate_stale_codeowners(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "owners")
    model = gated / "models/m/model.yaml"
    model.write_text(model.read_text().replace("owners:", "owners:\n- '@someone'\n#"))
    git(gated, "commit", "--quiet", "-am", "New owner")
    fails = failures(check(cli, gated, tmp_path))
    assert any("CODEOWNERS is out of date" in m for m in fails["approval"])
