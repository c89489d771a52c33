"""lifecycle gate: allowed stage transitions, and canary traffic within the base branch's policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, git, merge
from tests.gates.conftest import (
    POLICY,
    check,
    checked,
    failures,
    gate,
    on_main,
    promote,
    register,
    register_regression,
    staged,
    to_canary,
)


def test_lifecycle_gate_development_to_production(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "skip-stages")
    (gated / "models/m/stages.yaml").write_text("production: 1.0.0\n")
    git(gated, "commit", "--quiet", "-am", "Straight to production")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/stages.yaml: development → production is not allowed" in m for m in fails["lifecycle"])


def test_canary_traffic_over_the_policy_maximum_fails(in_production: Path, tmp_path: Path,
                                                      cli: Callable[..., Result],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=True)
    to_canary(cli, in_production, "0.6")
    fails = failures(checked(cli, in_production, tmp_path))
    assert fails == {"lifecycle": [
        "models/m/stages.yaml:3: canary.traffic: 0.6 is over the canary policy's max_traffic 0.5 (registry.yaml); "
        "promote with --traffic 0.5 or less"]}


def test_re_weighting_a_canary_is_checked_too(in_production: Path, tmp_path: Path, cli: Callable[..., Result],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=True)
    git(in_production, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.1.0", "--to", "canary", "--traffic", "0.1", "--reason", "try", "--no-branch",
               cwd=in_production).code == 0
    git(in_production, "switch", "--quiet", "-c", "more-traffic")
    stages_file = in_production / "models/m/stages.yaml"
    stages_file.write_text(stages_file.read_text().replace("traffic: 0.1", "traffic: 0.9"))
    git(in_production, "commit", "--quiet", "-am", "More traffic")
    fails = failures(checked(cli, in_production, tmp_path))
    assert any("canary.traffic: 0.9 is over the canary policy's max_traffic 0.5" in m for m in fails["lifecycle"])


def test_policy_on_base_can_allow_more_canary_traffic(in_production: Path, tmp_path: Path,
                                                      cli: Callable[..., Result],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    on_main(in_production, config=POLICY.replace("trusted_keys:", "  canary:\n    max_traffic: 0.8\ntrusted_keys:"))
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=True)
    to_canary(cli, in_production, "0.6")
    report = checked(cli, in_production, tmp_path)
    assert failures(report) == {}
    assert "canary traffic 0.6 is within max_traffic 0.8" in [g["message"] for g in gate(report, "lifecycle")]


def test_a_model_yaml_on_base_lowers_the_canary_traffic_limit(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    model_yaml = (regression / "models/m/model.yaml").read_text()
    on_main(regression, model_yaml=model_yaml + "policy:\n  canary:\n    max_traffic: 0.2\n")
    promote(cli, regression, "1.0.0", "staging", branch=False)
    promote(cli, regression, "1.0.0", "production", branch=False)
    register_regression(cli, regression, tmp_path, "1.1.0", rmse=0.2)
    merge(regression, "register/m/1.1.0", monkeypatch)
    promote(cli, regression, "1.1.0", "staging", branch=False)
    git(regression, "switch", "--quiet", "main")
    result = cli("promote", "m", "1.1.0", "--to", "canary", "--traffic", "0.3", "--reason", "try", cwd=regression)
    assert result.code == 0, result.err
    fails = failures(checked(cli, regression, tmp_path))
    assert fails == {"lifecycle": [
        "models/m/stages.yaml:3: canary.traffic: 0.3 is over the canary policy's max_traffic 0.2 (registry.yaml); "
        "promote with --traffic 0.2 or less"]}


@pytest.mark.parametrize("trailer", ["Imported-from: mlflow", "Imported-from: anything"])
def test_an_imported_from_trailer_does_not_open_the_lifecycle(
        gated: Path, tmp_path: Path, cli: Callable[..., Result], trailer: str) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True)
    (gated / "models/m/stages.yaml").write_text("production: 1.1.0\n")
    git(gated, "commit", "--quiet", "-am", f"Set stages of m from MLflow\n\nReason: imported\n{trailer}\n")

    report = check(cli, gated, tmp_path)

    assert report["passed"] is False
    assert any("models/m/stages.yaml: development → production is not allowed" in m
               for m in failures(report)["lifecycle"])
