"""immutability gate: a merged version's files never change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, git
from tests.gates.conftest import (
    check,
    failures,
)


def test_immutability_gate_edited_merged_card(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "fix-card")
    card = gated / "models/m/1.0.0/card.yaml"
    card.write_text(card.read_text().replace("A small linear model.", "A better description."))
    git(gated, "commit", "--quiet", "-am", "Edit a merged card")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/1.0.0/card.yaml: changes a file of m@1.0.0, which is already merged" in m
               for m in fails["immutability"])
