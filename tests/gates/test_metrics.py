"""metrics gate: card metrics against the stage policy, regressions, and recomputed metrics.

The policy is the base branch's (per task, tightened per model); a recomputation on an evaluation
set that disagrees with the card fails whatever the stage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from registry.files.cards import Card
from registry.files.config import StagePolicy
from registry.gates.metrics import _regressions, _thresholds
from tests.conftest import Result, git, merge
from tests.gates.conftest import (
    EVALUATION,
    HOLDOUT,
    POLICY,
    REGRESSION_CARD,
    TASKS,
    check,
    checked,
    failures,
    gate,
    on_main,
    promote,
    promote_on_main,
    register,
    register_regression,
    staged,
    to_canary,
    write_holdout,
)


def test_metrics_gate_below_production_threshold(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True, accuracy=0.85)
    merge(gated, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, gated, "1.1.0", "staging")
    assert cli("promote", "m", "1.1.0", "--to", "production", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert fails.keys() == {"metrics"}
    assert any("models/m/1.1.0/card.yaml: accuracy 0.85 is below the production minimum 0.9" in m
               for m in fails["metrics"])


def test_metrics_gate_regression_against_production(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True, accuracy=0.92)
    merge(gated, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, gated, "1.0.0", "staging", "production")
    promote_on_main(cli, gated, "1.1.0", "staging")
    assert cli("promote", "m", "1.1.0", "--to", "production", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert any("regresses from production 1.0.0's 0.95" in m for m in fails["metrics"])


def _card(accuracy: float, version: str = "1.1.0") -> Card:
    return Card("m", version, (), {"accuracy": accuracy}, {})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_metric_comparison_refuses_non_finite_numbers(value: float) -> None:
    """The comparisons fail closed on their own (any comparison with NaN is false)."""
    production = StagePolicy(metrics={"accuracy": {"min": 0.9}}, max_regression={"accuracy": {"absolute": 0.01}})
    assert _thresholds(_card(0.95), StagePolicy(metrics={"accuracy": {"min": value}}), "production")
    assert _regressions(_card(0.95), _card(value, "1.0.0"), production)
    assert _regressions(_card(0.95), _card(0.95, "1.0.0"), StagePolicy(max_regression={"accuracy": {"absolute": value}}))


def test_registry_yaml_evaluation_recomputes_a_registration_the_card_does_not_pin(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    fails = failures(checked(cli, gated, tmp_path))
    assert fails.keys() == {"metrics"}
    assert fails["metrics"] == [
        f"models/m/1.1.0/card.yaml: accuracy: the card claims 0.95 but the evaluation set {HOLDOUT} gives 0.5000 "
        "(tolerance 0.005, registry.yaml)"]


def test_an_honest_card_passes_the_evaluation_policy(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    report = checked(cli, gated, tmp_path)
    assert failures(report) == {}
    assert [g["message"] for g in gate(report, "metrics")] == [
        f"accuracy=0.5 meet the policy; recomputed on {HOLDOUT}: accuracy=0.5000"]
    # The PR summary says the number was measured, not taken from the card.
    [change] = report["changes"]  # type: ignore[index]
    assert [(m["name"], m["source"]) for m in change["metrics"]] == [("accuracy", "recomputed")]


@pytest.mark.parametrize("card_extra", [
    f"evaluation: {{data: {{path: {HOLDOUT}}}, tolerance: 0.9}}\n",
    "evaluation: {tolerance: 1.0e+300}\n",
])
def test_a_card_cannot_widen_the_tolerance(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                           card_extra: str) -> None:
    on_main(gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95, card_extra=card_extra)
    fails = failures(checked(cli, gated, tmp_path))
    assert any("the card claims 0.95 but the evaluation set" in m and "tolerance 0.005" in m
               for m in fails["metrics"]), fails


def test_a_card_can_make_the_check_stricter(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.503, card_extra="evaluation: {tolerance: 0.001}\n")
    fails = failures(checked(cli, gated, tmp_path))
    assert any("claims 0.503 but the evaluation set" in m and "tolerance 0.001" in m for m in fails["metrics"])


def test_the_pr_cannot_swap_the_data_or_drop_the_policy(gated: Path, tmp_path: Path,
                                                        cli: Callable[..., Result]) -> None:
    on_main(gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    write_holdout(gated / HOLDOUT, positives=19)  # labels that agree with the claim
    (gated / "registry.yaml").write_text(POLICY)  # and no evaluation at all
    git(gated, "commit", "--quiet", "-am", "Friendlier data and policy")
    fails = failures(checked(cli, gated, tmp_path))
    assert any("the card claims 0.95 but the evaluation set" in m and "gives 0.5000" in m for m in fails["metrics"])


def test_model_yaml_on_base_adds_sets_and_a_smaller_tolerance(gated: Path, tmp_path: Path,
                                                              cli: Callable[..., Result]) -> None:
    model_yaml = (gated / "models/m/model.yaml").read_text()
    on_main(gated, model_yaml=model_yaml + EVALUATION.replace("evaluation:\n", "evaluation:\n  tolerance: 0.0\n"),
            holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.501)
    fails = failures(checked(cli, gated, tmp_path))
    assert fails["metrics"] == [
        f"models/m/1.1.0/card.yaml: accuracy: the card claims 0.501 but the evaluation set {HOLDOUT} gives 0.5000 "
        "(tolerance 0.0, models/m/model.yaml)"]


def test_a_pinned_hash_that_does_not_match_fails(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    pinned = EVALUATION.replace(f"path: {HOLDOUT}", f"path: {HOLDOUT}, hash: 'sha256:{'0' * 64}'")
    on_main(gated, config=POLICY + pinned, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    fails = failures(checked(cli, gated, tmp_path))
    assert len(fails["metrics"]) == 1
    assert f"evaluation data {HOLDOUT} has sha256" in fails["metrics"][0]
    assert f"but registry.yaml pins {'0' * 64}" in fails["metrics"][0]


def test_a_metric_the_policy_recomputes_must_be_claimed(gated: Path, tmp_path: Path,
                                                        cli: Callable[..., Result]) -> None:
    on_main(gated, config=POLICY + EVALUATION.replace("[accuracy]", "[accuracy, f1]"), holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    fails = failures(checked(cli, gated, tmp_path))
    assert any(f"f1: the evaluation set {HOLDOUT} (registry.yaml) recomputes it, but the card claims no value" in m
               for m in fails["metrics"])


def test_a_card_pinned_set_that_disagrees_fails_a_plain_registration(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95,
             card_extra=f"evaluation: {{data: {{path: {HOLDOUT}}}, metrics: [accuracy]}}\n")
    report = checked(cli, gated, tmp_path)
    metrics = gate(report, "metrics")
    assert [g["status"] for g in metrics] == ["fail"]
    assert "no target stage" not in str(metrics)
    assert metrics[0]["message"] == (f"models/m/1.1.0/card.yaml: accuracy: the card claims 0.95 but the evaluation "
                                     f"set {HOLDOUT} gives 0.5000 (tolerance 0.005, models/m/1.1.0/card.yaml)")


def test_an_evaluation_that_cannot_run_fails_a_registration(gated: Path, tmp_path: Path,
                                                            cli: Callable[..., Result]) -> None:
    on_main(gated, config=POLICY + EVALUATION.replace(HOLDOUT, "datasets/missing.npz"))
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    fails = failures(checked(cli, gated, tmp_path))
    assert fails["metrics"] == ["models/m/1.1.0/card.yaml: evaluation data datasets/missing.npz (registry.yaml) "
                                "is not in the registry on the base branch"]


def test_a_regressing_canary_fails_against_production(in_production: Path, tmp_path: Path,
                                                      cli: Callable[..., Result],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.92, sign=True)
    to_canary(cli, in_production)
    report = checked(cli, in_production, tmp_path)
    assert failures(report).keys() == {"metrics"}
    assert [g["message"] for g in gate(report, "metrics")] == [
        "models/m/1.1.0/card.yaml: accuracy 0.92 regresses from production 1.0.0's 0.95 by 0.03 (allowed 0.01)"]


def test_a_good_canary_passes_the_canary_policy(in_production: Path, tmp_path: Path, cli: Callable[..., Result],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=True)
    to_canary(cli, in_production)
    report = checked(cli, in_production, tmp_path)
    assert failures(report) == {}
    assert [g["message"] for g in gate(report, "metrics")] == ["accuracy=0.96 meet the policy for canary"]
    assert [g["status"] for g in gate(report, "signature")] == ["pass"]


def test_fetch_plans_the_evaluation_sets_the_metrics_gate_reads(gated: Path, tmp_path: Path,
                                                                 cli: Callable[..., Result]) -> None:
    import subprocess
    import sys

    write_holdout(gated / HOLDOUT, 10)
    subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", HOLDOUT], cwd=gated, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "push", "--quiet"], cwd=gated, check=True)
    on_main(gated, config=POLICY + EVALUATION)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    result = cli("fetch", "--base", "main", "--dry-run", "--json", cwd=gated)
    assert result.code == 0, result.err
    assert f"{HOLDOUT}.dvc" in json.loads(result.out)["targets"]
    (gated / HOLDOUT).unlink()  # a fresh CI checkout: the gate reads base's set through DVC
    fails = failures(checked(cli, gated, tmp_path))
    assert any("the card claims 0.95 but the evaluation set" in m and "gives 0.5000" in m for m in fails["metrics"])


def test_a_regression_model_passes_staging_and_production_with_a_task_rmse_policy(
        regression: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    promote(cli, regression, "1.0.0", "staging")
    assert failures(checked(cli, regression, tmp_path)) == {}
    assert [g["message"] for g in gate(check(cli, regression, tmp_path), "metrics")] == ["rmse=0.2, r2=0.9 meet the policy for staging"]
    promote(cli, regression, "1.0.0", "staging", branch=False)
    promote(cli, regression, "1.0.0", "production")
    assert failures(checked(cli, regression, tmp_path)) == {}


@pytest.mark.parametrize(("stage", "limit"), [("staging", 0.4), ("production", 0.3)])
def test_a_regression_model_over_the_rmse_maximum_fails(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch,
        stage: str, limit: float) -> None:
    register_regression(cli, regression, tmp_path, "1.1.0", rmse=0.45)
    merge(regression, "register/m/1.1.0", monkeypatch)
    if stage == "production":
        promote(cli, regression, "1.1.0", "staging", branch=False)
    promote(cli, regression, "1.1.0", stage)
    fails = failures(checked(cli, regression, tmp_path))
    assert fails == {"metrics": [f"models/m/1.1.0/card.yaml: rmse 0.45 is above the {stage} maximum {limit}"]}


def test_rmse_regression_against_production_is_measured_downwards(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    promote(cli, regression, "1.0.0", "staging", branch=False)
    promote(cli, regression, "1.0.0", "production", branch=False)
    for version, rmse in (("1.1.0", 0.25), ("1.2.0", 0.1)):
        register_regression(cli, regression, tmp_path, version, rmse=rmse)
        merge(regression, f"register/m/{version}", monkeypatch)
        promote(cli, regression, version, "staging", branch=False)
    promote(cli, regression, "1.1.0", "production")
    assert failures(checked(cli, regression, tmp_path)) == {"metrics": [
        "models/m/1.1.0/card.yaml: rmse 0.25 regresses from production 1.0.0's 0.2 by 0.05 (allowed 0.01)"]}
    promote(cli, regression, "1.2.0", "production")  # a lower rmse is an improvement, not a regression
    assert failures(checked(cli, regression, tmp_path)) == {}


def test_the_default_policy_still_requires_accuracy_for_classification_whatever_a_card_claims(
        registry_dir: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    # The default stage metrics (accuracy), a looser latency for a shared CI machine, a regression override.
    (registry_dir / "registry.yaml").write_text(
        "policy:\n  staging:\n    latency: {p50_ms: 500, p99_ms: 1000, runs: 5}\n" + TASKS)
    git(registry_dir, "add", "-A")
    git(registry_dir, "commit", "--quiet", "-m", "Policy")
    # m's model.yaml (written by its first registration) says classification: a later card that
    # says regression does not pick the regression thresholds for itself.
    for version, task in (("1.0.0", "classification"), ("2.0.0", "regression")):
        register_regression(cli, registry_dir, tmp_path, version, sign=False,
                 card=REGRESSION_CARD.replace("task: regression", f"task: {task}"))
        merge(registry_dir, f"register/m/{version}", monkeypatch)
    for version in ("1.0.0", "2.0.0"):
        promote(cli, registry_dir, version, "staging")
        assert failures(checked(cli, registry_dir, tmp_path)) == {"metrics": [
            f"models/m/{version}/card.yaml: accuracy is required by the staging policy but missing from the card "
            "(registry.yaml on the base branch can set other thresholds for a task: "
            "policy.tasks.classification.staging.metrics)"]}


def test_a_model_yaml_policy_on_base_raises_a_minimum_and_is_enforced(
        regression: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    model_yaml = (regression / "models/m/model.yaml").read_text()
    on_main(regression, model_yaml=model_yaml + "policy:\n  staging:\n    metrics: {r2: {min: 0.95}, rmse: {max: 0.1}}\n")
    promote(cli, regression, "1.0.0", "staging")
    assert failures(checked(cli, regression, tmp_path)) == {"metrics": [
        "models/m/1.0.0/card.yaml: rmse 0.2 is above the staging maximum 0.1",
        "models/m/1.0.0/card.yaml: r2 0.9 is below the staging minimum 0.95"]}


def test_a_model_yaml_policy_in_the_pull_request_is_ignored(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    model_yaml = regression / "models/m/model.yaml"
    original = model_yaml.read_text()
    on_main(regression, model_yaml=original + "policy:\n  staging:\n    metrics: {rmse: {max: 0.3}}\n")
    register_regression(cli, regression, tmp_path, "1.1.0", rmse=0.35)
    merge(regression, "register/m/1.1.0", monkeypatch)
    promote(cli, regression, "1.1.0", "staging")
    # The PR drops base's stricter rule (and would relax the registry's, were it read): base still decides.
    model_yaml.write_text(original + "policy:\n  staging:\n    metrics: {rmse: {max: 0.9}}\n")
    git(regression, "commit", "--quiet", "-am", "Our own rules")
    assert failures(checked(cli, regression, tmp_path)).get("metrics") == [
        "models/m/1.1.0/card.yaml: rmse 0.35 is above the staging maximum 0.3"]


def test_a_model_yaml_on_base_that_relaxes_does_not_relax(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    model_yaml = (regression / "models/m/model.yaml").read_text()
    on_main(regression, model_yaml=model_yaml + (
        "policy:\n"
        "  staging:\n    metrics: {rmse: {max: 0.9}}\n"
        "  production:\n    metrics: {rmse: {max: 0.9}}\n    require_signature: false\n"))
    register_regression(cli, regression, tmp_path, "1.1.0", rmse=0.35, sign=False)
    merge(regression, "register/m/1.1.0", monkeypatch)
    promote(cli, regression, "1.1.0", "staging", branch=False)
    promote(cli, regression, "1.1.0", "production")
    fails = failures(checked(cli, regression, tmp_path))
    assert fails["metrics"] == ["models/m/1.1.0/card.yaml: rmse 0.35 is above the production maximum 0.3"]
    assert [m for m in fails["signature"] if "unsigned; the production policy requires a signature" in m]
