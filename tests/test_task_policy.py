"""Policy per task (registry.yaml `policy.tasks.<task>.<stage>`) and per model (model.yaml `policy`),
both read from the base branch, a model's own rules only ever tightening the registry's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from registry.files import config
from registry.files.config import RegistryConfig, StagePolicy
from registry.signing.keys import generate_keypair
from tests import test_check
from tests.conftest import Result, git, merge, snapshot
from tests.test_check import check, failures, register_card

REGRESSION_CARD = """\
description: A small regression model.
framework: numpy
task: regression
creator: "@dana"
metrics: {{rmse: {rmse}, r2: 0.9}}
entrypoint: predict.py
input_example: [[0.1, 0.2, 0.3, 0.4]]
"""

TASKS = """\
  tasks:
    regression:
      staging:
        metrics: {rmse: {max: 0.4}}
      production:
        metrics: {rmse: {max: 0.3}}
        max_regression: {rmse: {absolute: 0.01}}
      canary:
        metrics: {rmse: {max: 0.3}}
        max_regression: {rmse: {absolute: 0.01}}
"""

# test_check's policy (and key, roles) with the task overrides added under `policy`.
POLICY = test_check.POLICY.replace("trusted_keys:", TASKS + "trusted_keys:", 1)


def register(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, *, rmse: float = 0.2,
             sign: bool = True, card: str = REGRESSION_CARD) -> None:
    register_card(cli, repo, tmp_path, version, card.format(rmse=rmse), sign=sign)


@pytest.fixture
def regression(registry_dir: Path, tmp_path: Path, cli: Callable[..., Result],
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with per-task policy and a trusted key; m@1.0.0 (regression, rmse 0.2) merged, signed."""
    (registry_dir / "keys").mkdir()
    generate_keypair(tmp_path / "release")
    (registry_dir / "keys/release.pub").write_bytes((tmp_path / "release.pub").read_bytes())
    (registry_dir / "registry.yaml").write_text(POLICY)
    assert cli("codeowners", cwd=registry_dir).code == 0
    git(registry_dir, "add", "-A")
    git(registry_dir, "commit", "--quiet", "-m", "Policy and key")
    register(cli, registry_dir, tmp_path, "1.0.0")
    merge(registry_dir, "register/m/1.0.0", monkeypatch)
    return registry_dir


def promote(cli: Callable[..., Result], repo: Path, version: str, stage: str, *, branch: bool = True) -> None:
    """From main: a promotion PR branch (branch=True), or straight onto main as a merged one."""
    git(repo, "switch", "--quiet", "main")
    args = ["promote", "m", version, "--to", stage, "--reason", "test"]
    result = cli(*args, cwd=repo) if branch else cli(*args, "--no-branch", cwd=repo)
    assert result.code == 0, result.err


def on_main(repo: Path, path: str, text: str) -> None:
    """An admin's merged change on main."""
    git(repo, "switch", "--quiet", "main")
    (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", f"Change {path}")


def checked(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> dict[str, list[str]]:
    before = snapshot(repo)
    report = check(cli, repo, tmp_path)
    assert snapshot(repo) == before
    return failures(report)


def metric_messages(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> list[str]:
    report = check(cli, repo, tmp_path)
    return [g["message"] for g in report["gates"] if g["gate"] == "metrics"]  # type: ignore[attr-defined]


# --- per task ---------------------------------------------------------------------------------------


def test_a_regression_model_passes_staging_and_production_with_a_task_rmse_policy(
        regression: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    promote(cli, regression, "1.0.0", "staging")
    assert checked(cli, regression, tmp_path) == {}
    assert metric_messages(cli, regression, tmp_path) == ["rmse=0.2, r2=0.9 meet the policy for staging"]
    promote(cli, regression, "1.0.0", "staging", branch=False)
    promote(cli, regression, "1.0.0", "production")
    assert checked(cli, regression, tmp_path) == {}


@pytest.mark.parametrize(("stage", "limit"), [("staging", 0.4), ("production", 0.3)])
def test_a_regression_model_over_the_rmse_maximum_fails(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch,
        stage: str, limit: float) -> None:
    register(cli, regression, tmp_path, "1.1.0", rmse=0.45)
    merge(regression, "register/m/1.1.0", monkeypatch)
    if stage == "production":
        promote(cli, regression, "1.1.0", "staging", branch=False)
    promote(cli, regression, "1.1.0", stage)
    fails = checked(cli, regression, tmp_path)
    assert fails == {"metrics": [f"models/m/1.1.0/card.yaml: rmse 0.45 is above the {stage} maximum {limit}"]}


def test_rmse_regression_against_production_is_measured_downwards(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    promote(cli, regression, "1.0.0", "staging", branch=False)
    promote(cli, regression, "1.0.0", "production", branch=False)
    for version, rmse in (("1.1.0", 0.25), ("1.2.0", 0.1)):
        register(cli, regression, tmp_path, version, rmse=rmse)
        merge(regression, f"register/m/{version}", monkeypatch)
        promote(cli, regression, version, "staging", branch=False)
    promote(cli, regression, "1.1.0", "production")
    assert checked(cli, regression, tmp_path) == {"metrics": [
        "models/m/1.1.0/card.yaml: rmse 0.25 regresses from production 1.0.0's 0.2 by 0.05 (allowed 0.01)"]}
    promote(cli, regression, "1.2.0", "production")  # a lower rmse is an improvement, not a regression
    assert checked(cli, regression, tmp_path) == {}


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
        register(cli, registry_dir, tmp_path, version, sign=False,
                 card=REGRESSION_CARD.replace("task: regression", f"task: {task}"))
        merge(registry_dir, f"register/m/{version}", monkeypatch)
    for version in ("1.0.0", "2.0.0"):
        promote(cli, registry_dir, version, "staging")
        assert checked(cli, registry_dir, tmp_path) == {"metrics": [
            f"models/m/{version}/card.yaml: accuracy is required by the staging policy but missing from the card "
            "(registry.yaml on the base branch can set other thresholds for a task: "
            "policy.tasks.classification.staging.metrics)"]}


# --- per model: model.yaml on the base branch, stricter only ----------------------------------------------


def test_a_model_yaml_policy_on_base_raises_a_minimum_and_is_enforced(
        regression: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    model_yaml = (regression / "models/m/model.yaml").read_text()
    on_main(regression, "models/m/model.yaml",
            model_yaml + "policy:\n  staging:\n    metrics: {r2: {min: 0.95}, rmse: {max: 0.1}}\n")
    promote(cli, regression, "1.0.0", "staging")
    assert checked(cli, regression, tmp_path) == {"metrics": [
        "models/m/1.0.0/card.yaml: rmse 0.2 is above the staging maximum 0.1",
        "models/m/1.0.0/card.yaml: r2 0.9 is below the staging minimum 0.95"]}


def test_a_model_yaml_policy_in_the_pull_request_is_ignored(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    model_yaml = regression / "models/m/model.yaml"
    original = model_yaml.read_text()
    on_main(regression, "models/m/model.yaml", original + "policy:\n  staging:\n    metrics: {rmse: {max: 0.3}}\n")
    register(cli, regression, tmp_path, "1.1.0", rmse=0.35)
    merge(regression, "register/m/1.1.0", monkeypatch)
    promote(cli, regression, "1.1.0", "staging")
    # The PR drops base's stricter rule (and would relax the registry's, were it read): base still decides.
    model_yaml.write_text(original + "policy:\n  staging:\n    metrics: {rmse: {max: 0.9}}\n")
    git(regression, "commit", "--quiet", "-am", "Our own rules")
    assert checked(cli, regression, tmp_path).get("metrics") == [
        "models/m/1.1.0/card.yaml: rmse 0.35 is above the staging maximum 0.3"]


def test_a_model_yaml_on_base_that_relaxes_does_not_relax(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    model_yaml = (regression / "models/m/model.yaml").read_text()
    on_main(regression, "models/m/model.yaml", model_yaml + (
        "policy:\n"
        "  staging:\n    metrics: {rmse: {max: 0.9}}\n"
        "  production:\n    metrics: {rmse: {max: 0.9}}\n    require_signature: false\n"))
    register(cli, regression, tmp_path, "1.1.0", rmse=0.35, sign=False)
    merge(regression, "register/m/1.1.0", monkeypatch)
    promote(cli, regression, "1.1.0", "staging", branch=False)
    promote(cli, regression, "1.1.0", "production")
    fails = checked(cli, regression, tmp_path)
    assert fails["metrics"] == ["models/m/1.1.0/card.yaml: rmse 0.35 is above the production maximum 0.3"]
    assert [m for m in fails["signature"] if "unsigned; the production policy requires a signature" in m]


def test_a_model_yaml_on_base_lowers_the_canary_traffic_limit(
        regression: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    model_yaml = (regression / "models/m/model.yaml").read_text()
    on_main(regression, "models/m/model.yaml", model_yaml + "policy:\n  canary:\n    max_traffic: 0.2\n")
    promote(cli, regression, "1.0.0", "staging", branch=False)
    promote(cli, regression, "1.0.0", "production", branch=False)
    register(cli, regression, tmp_path, "1.1.0", rmse=0.2)
    merge(regression, "register/m/1.1.0", monkeypatch)
    promote(cli, regression, "1.1.0", "staging", branch=False)
    git(regression, "switch", "--quiet", "main")
    result = cli("promote", "m", "1.1.0", "--to", "canary", "--traffic", "0.3", "--reason", "try", cwd=regression)
    assert result.code == 0, result.err
    fails = checked(cli, regression, tmp_path)
    assert fails == {"lifecycle": [
        "models/m/stages.yaml:3: canary.traffic: 0.3 is over the canary policy's max_traffic 0.2 (registry.yaml); "
        "promote with --traffic 0.2 or less"]}


def test_effective_policy_replaces_per_task_then_only_tightens_per_model() -> None:
    registry = RegistryConfig.from_data({"policy": {
        "production": {"metrics": {"accuracy": {"min": 0.9}}, "latency": {"p50_ms": 20, "p99_ms": 100, "runs": 10},
                       "max_regression": {"accuracy": {"absolute": 0.01}}},
        "tasks": {"regression": {"production": {"metrics": {"rmse": {"max": 0.3}},
                                                "max_regression": {"rmse": {"relative": 0.1}}}}}}})
    assert config.effective_policy(registry, "classification", "production", None) == registry.policy["production"]
    task = config.effective_policy(registry, "regression", "production", None)
    assert task is not None
    assert (task.metrics, task.max_regression) == ({"rmse": {"max": 0.3}}, {"rmse": {"relative": 0.1}})
    assert task.latency == registry.policy["production"].latency and task.require_signature
    looser = {"production": {"metrics": {"rmse": {"max": 0.9, "min": 0.0}}, "require_signature": False,
                             "latency": {"p50_ms": 1000, "p99_ms": 50, "runs": 1}, "smoke_timeout_s": 600,
                             "max_regression": {"rmse": {"relative": 0.5, "absolute": 0.02}}},
              "canary": {"max_traffic": 0.9}}
    own = config.effective_policy(registry, "regression", "production", looser)
    assert own == StagePolicy(
        metrics={"rmse": {"max": 0.3, "min": 0.0}}, max_regression={"rmse": {"relative": 0.1, "absolute": 0.02}},
        latency={"p50_ms": 20, "p99_ms": 50, "runs": 10}, smoke_timeout_s=60, require_signature=True,
        approvals=registry.policy["production"].approvals)
    canary = config.effective_policy(registry, "regression", "canary", looser)
    assert canary is not None and canary.max_traffic == 0.5
    assert config.effective_policy(registry, None, "development", None) is None


# --- the schema -------------------------------------------------------------------------------------------


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


def test_the_audit_log_describes_a_task_policy_change_and_nothing_else() -> None:
    """`registry log --action policy` words: a new task override, not every default stage "removed"."""
    from registry.queries.policy_changes import describe_policy_change

    tasks = b"policy:\n  tasks:\n    regression:\n      production:\n        metrics: {rmse: {max: 0.3}}\n"
    assert describe_policy_change(b"{}", tasks) == ["tasks regression production metrics rmse max set to 0.3"]
    production = b"policy:\n  production:\n    metrics: {accuracy: {min: 0.92}}\n"
    assert describe_policy_change(b"{}", production) == ["production accuracy min 0.9 → 0.92"]
