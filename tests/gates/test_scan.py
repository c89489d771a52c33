"""scan gate: nothing in an artifact runs code when loaded; a failed scan stops every model-running gate."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.gates.conftest import (
    check,
    failures,
    register,
)


class Payload:
    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, ("touch /tmp/registry-test-pwned",))


def test_scan_gate_pickle_calling_os_system(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    evil = tmp_path / "evil" / "extra.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(Payload()))
    register(cli, gated, tmp_path, "1.1.0", extra=[evil])
    report = check(cli, gated, tmp_path)
    fails = failures(report)
    assert any(m.startswith("models/m/1.1.0/extra.pkl@") and "system" in m for m in fails["scan"])
    smoke = [g for g in report["gates"] if g["gate"] == "smoke"]  # type: ignore[attr-defined]
    assert smoke and all(g["status"] == "skip" for g in smoke)  # never run after a failed scan
    assert not Path("/tmp/registry-test-pwned").exists()
