"""The conformance harness (tools/conformance.py) with a small load: zero failed requests across swaps.

Each target runs 10 promotions and rollbacks of a real registry under concurrent
requests, then a broken version that must be refused while the previous one keeps
answering. TorchServe and MLServer are real processes; without them (or Java) their
runs skip with the reason, and .ci/run installs them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conformance", ROOT / "tools" / "conformance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["conformance"] = module
    spec.loader.exec_module(module)
    return module


conformance = _harness()


@pytest.mark.parametrize("target", sorted(conformance.TARGETS))
def test_ten_swaps_under_load_fail_no_request_and_a_broken_version_is_refused(target: str, tmp_path: Path) -> None:
    reason = conformance.TARGETS[target].missing()
    if reason:
        pytest.skip(reason)
    report = conformance.run(target, tmp_path, swaps=10, clients=2, rate=15.0)
    assert report.failed == 0, report.failures
    assert len(report.merge_to_answer_s) == 10
    assert report.requests > 100
    assert report.broken_refused, f"after the broken version, {report.serving_after_broken} answered"
