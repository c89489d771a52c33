"""latency gate: the entrypoint's p50/p99 against the target stage's limits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, git, merge
from tests.gates.conftest import (
    PREDICT,
    check,
    failures,
    register,
)


def test_latency_gate_too_slow(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    slow = PREDICT.replace("def predict(model, inputs):\n", "def predict(model, inputs):\n    import time\n"
                           "    time.sleep(1.2)\n")
    register(cli, gated, tmp_path, "1.1.0", predict=slow)
    merge(gated, "register/m/1.1.0", monkeypatch)
    git(gated, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.1.0", "--to", "staging", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/1.1.0/predict.py: p50" in m and "exceeds the staging limit 500" in m for m in fails["latency"])
