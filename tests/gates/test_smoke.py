"""smoke gate: the entrypoint loads the weights and predicts on the card's input example."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.gates.conftest import (
    check,
    failures,
    register,
)


def test_smoke_gate_entrypoint_raises(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0", predict="def load(path):\n    return None\n\n\n"
             "def predict(model, inputs):\n    raise RuntimeError('boom')\n")
    fails = failures(check(cli, gated, tmp_path))
    assert any(m.startswith("models/m/1.1.0/predict.py:") and "RuntimeError: boom" in m for m in fails["smoke"])
