"""schema gate, and the same schemas under `validate` and `register`: known fields, finite numbers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, git, snapshot
from tests.gates.conftest import (
    CARD,
    HOLDOUT,
    check,
    checked,
    failures,
    on_main,
    register,
    version_files,
)


def test_schema_gate_wrong_type(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    card = gated / "models/m/1.1.0/card.yaml"
    card.write_text(card.read_text().replace("task: classification", "task: [classification]"))
    git(gated, "commit", "--quiet", "-am", "edit")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/1.1.0/card.yaml:" in m and "task" in m for m in fails["schema"])


def test_two_productions_fail_schema(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "two")
    (gated / "models/m/stages.yaml").write_text("production: 1.0.0\nproduction: 1.0.0\n")
    git(gated, "commit", "--quiet", "-am", "Two productions")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/stages.yaml:2: duplicate key 'production'" in m for m in fails["schema"])


@pytest.mark.parametrize(("value", "shown"), [(".nan", ".nan"), (".inf", ".inf"), ("-.inf", "-.inf")])
def test_a_non_finite_metric_fails_validation_and_the_schema_gate(
        gated: Path, tmp_path: Path, cli: Callable[..., Result], value: str, shown: str) -> None:
    src = version_files(tmp_path / "in")
    (src / "card.yaml").write_text(CARD.format(accuracy=value))
    before = snapshot(gated)
    refused = cli("register", "m", "1.1.0", "--card", str(src / "card.yaml"), "--artifact",
                  str(src / "model.safetensors"), cwd=gated)
    assert refused.code == 1 and "Traceback" not in refused.err
    assert f"card.yaml:5: metrics.accuracy: {shown} is not allowed: use a finite number" in refused.err
    assert snapshot(gated) == before
    # Committed by hand, past `register`: the schema gate fails it, and so does the metrics gate.
    register(cli, gated, tmp_path, "1.1.0")
    card = gated / "models/m/1.1.0/card.yaml"
    card.write_text(card.read_text().replace("accuracy: 0.95", f"accuracy: {value}"))
    git(gated, "commit", "--quiet", "-am", "Better numbers")
    report = checked(cli, gated, tmp_path)
    fails = failures(report)
    line = card.read_text().splitlines().index(next(t for t in card.read_text().splitlines() if value in t)) + 1
    assert f"models/m/1.1.0/card.yaml:{line}: metrics.accuracy: {shown} is not allowed: use a finite number" \
        in fails["schema"]
    assert any("models/m/1.1.0/card.yaml: no valid card" in m for m in fails["metrics"])
    result = cli("validate", cwd=gated)
    assert result.code == 1 and f"metrics.accuracy: {shown} is not allowed" in result.err


@pytest.mark.parametrize("config", [
    "policy:\n  production:\n    metrics: {accuracy: {min: .nan}}\n",
    "policy:\n  production:\n    max_regression: {accuracy: {absolute: .inf}}\n",
    "policy:\n  canary:\n    max_traffic: .nan\n",
    "evaluation:\n  tolerance: .inf\n",
])
def test_non_finite_thresholds_are_refused_in_registry_yaml(
        gated: Path, tmp_path: Path, cli: Callable[..., Result], config: str) -> None:
    git(gated, "switch", "--quiet", "-c", "relax")
    (gated / "registry.yaml").write_text(config)
    before = snapshot(gated)
    result = cli("validate", cwd=gated)
    assert result.code == 1 and "Traceback" not in result.err
    assert "registry.yaml:3: " in result.err or "registry.yaml:2: " in result.err
    assert "is not allowed: use a finite number" in result.err
    assert snapshot(gated) == before
    git(gated, "commit", "--quiet", "-am", "Relax")
    fails = failures(checked(cli, gated, tmp_path))
    assert any(m.startswith("registry.yaml:") and "is not allowed: use a finite number" in m for m in fails["schema"])


def test_non_finite_tolerance_in_model_yaml_is_refused(gated: Path, cli: Callable[..., Result]) -> None:
    model_yaml = gated / "models/m/model.yaml"
    model_yaml.write_text(model_yaml.read_text() + "evaluation: {tolerance: .nan}\n")
    result = cli("validate", cwd=gated)
    assert result.code == 1
    assert "models/m/model.yaml:" in result.err and "evaluation.tolerance: .nan is not allowed" in result.err


def test_a_card_tolerance_of_inf_is_refused(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(gated, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    card = gated / "models/m/1.1.0/card.yaml"
    card.write_text(card.read_text() + f"evaluation: {{data: {{path: {HOLDOUT}}}, tolerance: .inf}}\n")
    git(gated, "commit", "--quiet", "-am", "Any answer will do")
    fails = failures(checked(cli, gated, tmp_path))
    assert any("evaluation.tolerance: .inf is not allowed: use a finite number" in m for m in fails["schema"])


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "datasets/../../x.npz"])
def test_an_evaluation_path_outside_the_repository_is_refused(gated: Path, tmp_path: Path,
                                                              cli: Callable[..., Result], path: str) -> None:
    src = version_files(tmp_path / "in")
    (src / "card.yaml").write_text(CARD.format(accuracy=0.95) + f"evaluation: {{data: {{path: '{path}'}}}}\n")
    before = snapshot(gated)
    result = cli("register", "m", "1.1.0", "--card", str(src / "card.yaml"), "--artifact",
                 str(src / "model.safetensors"), cwd=gated)
    assert result.code == 1 and "Traceback" not in result.err
    assert f"card.yaml:8: evaluation.data.path: '{path}' does not have the required form (A path inside the " \
           "registry repository" in result.err
    assert snapshot(gated) == before


@pytest.mark.parametrize(("file", "text", "expected"), [
    ("registry.yaml", "policy:\n  tasks:\n    regression:\n      staging:\n        metric: {rmse: {max: 0.3}}\n",
     "registry.yaml:5: policy.tasks.regression.staging.metric: unknown field"),
    ("registry.yaml", "policy:\n  tasks:\n    regression:\n      prod:\n        metrics: {rmse: {max: 0.3}}\n",
     "registry.yaml:4: policy.tasks.regression.prod: unknown field"),
    ("registry.yaml", "policy:\n  tasks:\n    regression:\n      production:\n        approvals: {min: 0}\n",
     "registry.yaml:5: policy.tasks.regression.production.approvals: unknown field"),
    ("registry.yaml", "policy:\n  tasks:\n    regression:\n      staging:\n        metrics: {rmse: {max: .nan}}\n",
     "registry.yaml:5: policy.tasks.regression.staging.metrics.rmse.max: .nan is not allowed: use a finite number"),
    ("registry.yaml", "policy:\n  tasks:\n    regression:\n      staging:\n        latency: {p99_ms: .inf}\n",
     "registry.yaml:5: policy.tasks.regression.staging.latency.p99_ms: .inf is not allowed: use a finite number"),
    ("models/m/model.yaml", "policy:\n  staging:\n    metrics: {rmse: {maximum: 0.3}}\n",
     "models/m/model.yaml:3: policy.staging.metrics.rmse.maximum: unknown field"),
    ("models/m/model.yaml", "policy:\n  staging:\n    approvals: {min: 2}\n",
     "models/m/model.yaml:3: policy.staging.approvals: unknown field"),
    ("models/m/model.yaml", "policy:\n  tasks: {}\n",
     "models/m/model.yaml:2: policy.tasks: unknown field"),
    ("models/m/model.yaml", "policy:\n  canary:\n    max_traffic: -.inf\n",
     "models/m/model.yaml:3: policy.canary.max_traffic: -.inf is not allowed: use a finite number"),
])
def test_the_schema_refuses_unknown_keys_and_non_finite_values_in_task_and_model_policy(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], file: str, text: str, expected: str) -> None:
    git(regression, "switch", "--quiet", "-c", "bad-policy", "main")
    (regression / file).write_text(text)
    before = snapshot(regression)
    result = cli("validate", cwd=regression)
    assert result.code == 1 and "Traceback" not in result.err
    assert expected in result.err, result.err
    assert snapshot(regression) == before
