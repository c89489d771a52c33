"""signature gate: a version its stage's policy requires signed is signed by a trusted key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, merge
from tests.gates.conftest import (
    check,
    checked,
    failures,
    promote_on_main,
    register,
    staged,
    to_canary,
)


def test_signature_gate_unsigned_for_production(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    merge(gated, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, gated, "1.1.0", "staging")
    assert cli("promote", "m", "1.1.0", "--to", "production", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert fails.keys() == {"signature"}
    assert any("unsigned; the production policy requires a signature" in m for m in fails["signature"])


def test_an_unsigned_canary_fails(in_production: Path, tmp_path: Path, cli: Callable[..., Result],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=False)
    to_canary(cli, in_production)
    fails = failures(checked(cli, in_production, tmp_path))
    assert fails.keys() == {"signature"}
    assert any("unsigned; the canary policy requires a signature" in m for m in fails["signature"])
