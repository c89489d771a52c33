"""Nothing a pull request writes relaxes a gate: declared prerequisites, no trailer bypass."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

from registry.gates import run as check_module
from registry.gates.result import GateResult
from tests.conftest import Result, git
from tests.gates.conftest import check, failures, register
from tests.gates.conftest import gated as gated  # the fixture, shared

LOADS_THE_PICKLE = """\
import pickle


def load(path):
    with open(f"{path}/extra.pkl", "rb") as handle:
        return pickle.load(handle)


def predict(model, inputs):
    return [0 for _ in inputs]
"""


class Touch:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_gate_smoke_alone_still_scans_first_and_never_runs_the_model(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil" / "extra.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(Touch(marker)))
    register(cli, gated, tmp_path, "1.1.0", extra=[evil], predict=LOADS_THE_PICKLE)
    out = tmp_path / "report.json"

    result = cli("check", "--base", "main", "--gate", "smoke", "--json", str(out), cwd=gated)

    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.out + result.err
    report = json.loads(out.read_text())
    fails = failures(report)
    assert any(m.startswith("models/m/1.1.0/extra.pkl@") and "system" in m for m in fails["scan"])
    smoke = [g for g in report["gates"] if g["gate"] == "smoke"]
    assert smoke and all(g["status"] != "pass" for g in smoke)
    assert not marker.exists()  # the pickle was never loaded


def test_prerequisites_run_whatever_gate_is_selected() -> None:
    from registry.gates import requires

    assert check_module.with_prerequisites(("smoke",)) == ("format", "scan", "smoke")
    assert check_module.with_prerequisites(("latency",)) == ("format", "scan", "smoke", "latency")
    assert set(check_module.with_prerequisites(("metrics",))) >= {"scan", "format", "metrics"}
    assert check_module.with_prerequisites(("schema",)) == ("schema",)
    for gate in check_module.GATE_ORDER:  # a prerequisite always runs earlier
        assert all(check_module.GATE_ORDER.index(p) < check_module.GATE_ORDER.index(gate) for p in requires(gate))


def test_only_a_recorded_pass_clears_a_version(gated: Path) -> None:
    from registry.gates.common import cleared
    from registry.repo.registry import Registry

    ctx = check_module.CheckContext(Registry(gated), "main", "main", "main", [])
    assert not ctx.passed("scan", "m", "1.0.0")  # no result is not a pass
    blocked = cleared(ctx, "smoke", "m", "1.0.0")
    assert blocked is not None and blocked.status == "fail" and "scan gate did not pass" in blocked.message
    ctx.results += [GateResult("scan", "m", "1.0.0", "skip", "nothing scanned"),
                    GateResult("format", "m", "1.0.0", "pass", "ok")]
    assert not ctx.passed("scan", "m", "1.0.0")  # a skip is not a pass
    assert cleared(ctx, "smoke", "m", "1.0.0") is not None
    ctx.results[0] = GateResult("scan", "m", "1.0.0", "fail", "os.system")
    blocked = cleared(ctx, "smoke", "m", "1.0.0")
    assert blocked is not None and blocked.status == "skip"  # the scan failure already fails the check
    ctx.results[0] = GateResult("scan", "m", "1.0.0", "pass", "nothing executable")
    assert ctx.passed("scan", "m", "1.0.0") and cleared(ctx, "smoke", "m", "1.0.0") is None
    ctx.close()


def test_a_committed_symlink_is_never_followed_by_a_model_running_gate(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    marker = tmp_path / "pwned"
    outside = tmp_path / "outside" / "evil.py"
    outside.parent.mkdir()
    outside.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n\n\n"
                       "def load(path):\n    return None\n\n\ndef predict(model, inputs):\n    return [0]\n")
    register(cli, gated, tmp_path, "1.1.0")
    entrypoint = gated / "models/m/1.1.0/predict.py"
    entrypoint.unlink()
    entrypoint.symlink_to(outside)  # the work tree is the PR's head: it must not be run from there
    git(gated, "add", str(entrypoint))
    git(gated, "commit", "--quiet", "-m", "predict.py as a symlink")

    report = check(cli, gated, tmp_path)

    assert report["passed"] is False
    assert any(m.startswith("models/m/1.1.0/predict.py: is a symbolic link") for m in failures(report)["consistency"])
    assert not any(g["gate"] == "smoke" and g["status"] == "pass" for g in report["gates"])  # type: ignore[attr-defined]
    assert not marker.exists()
