"""Policy resolution (config.effective_policy): stage defaults, per-task overrides, per-model tightening."""

from __future__ import annotations

from registry.files import config
from registry.files.config import RegistryConfig, StagePolicy


def test_the_default_policy_gates_canary_like_production() -> None:
    policy = RegistryConfig.from_data({}).policy["canary"]
    assert policy == StagePolicy(metrics={"accuracy": {"min": 0.90}}, max_regression={"accuracy": {"absolute": 0.01}},
                                 require_signature=True, max_traffic=0.5)
    # A registry that sets only some stages, or some keys, keeps the defaults of the rest.
    config = RegistryConfig.from_data({"policy": {"production": {"metrics": {"accuracy": {"min": 0.95}}}}})
    assert config.policy["canary"] == policy
    assert config.policy["production"].require_signature is True
    assert config.policy["production"].metrics == {"accuracy": {"min": 0.95}}


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
