"""Policy the gates enforce, and only from the base branch: finite numbers, evaluation sets and
tolerances a card cannot relax, recomputation that fails whatever the stage, and canary gated
like the live traffic it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry.files.cards import Card
from registry.files.config import RegistryConfig, StagePolicy
from registry.gates.metrics import _regressions, _thresholds
from tests import test_check
from tests.conftest import Result, git, merge, snapshot
from tests.test_check import (
    CARD,
    POLICY,
    check,
    failures,
    promote_on_main,
    register_card,
    version_files,
)

gated = test_check.gated  # the fixture: policy, a trusted key, m@1.0.0 (accuracy 0.95) signed on main

HOLDOUT = "datasets/holdout.npz"
EVALUATION = f"""\
evaluation:
  sets:
  - data: {{path: {HOLDOUT}}}
    metrics: [accuracy]
"""


def write_holdout(path: Path, positives: int, total: int = 20) -> None:
    """Inputs the test model labels 1 (all positive), so its accuracy is positives / total."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.full((total, 4), 0.5, np.float32)
    y = np.array([1] * positives + [0] * (total - positives), np.int64)
    with path.open("wb") as handle:
        np.savez(handle, x=x, y=y)


def on_main(cli: Callable[..., Result], repo: Path, *, config: str | None = None, model_yaml: str | None = None,
            holdout: int | None = None) -> None:
    """Commit policy straight to main, as an admin's merged change."""
    git(repo, "switch", "--quiet", "main")
    if config is not None:
        (repo / "registry.yaml").write_text(config)
    if model_yaml is not None:
        (repo / "models/m/model.yaml").write_text(model_yaml)
    if holdout is not None:
        write_holdout(repo / HOLDOUT, holdout)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "Policy")


def register(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, *, accuracy: object = 0.95,
             card_extra: str = "", sign: bool = False) -> None:
    register_card(cli, repo, tmp_path, version, CARD.format(accuracy=accuracy) + card_extra, sign=sign)


def gate(report: dict[str, object], name: str) -> list[dict[str, object]]:
    return [g for g in report["gates"] if g["gate"] == name]  # type: ignore[attr-defined]


def checked(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> dict[str, object]:
    """`check` on the current branch, asserting it changed nothing in the registry."""
    before = snapshot(repo)
    report = check(cli, repo, tmp_path)
    assert snapshot(repo) == before
    return report


# --- 1. non-finite numbers --------------------------------------------------------------------------


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


def _card(accuracy: float, version: str = "1.1.0") -> Card:
    return Card("m", version, (), {"accuracy": accuracy}, {})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_metric_comparison_refuses_non_finite_numbers(value: float) -> None:
    """The comparisons fail closed on their own (any comparison with NaN is false)."""
    production = StagePolicy(metrics={"accuracy": {"min": 0.9}}, max_regression={"accuracy": {"absolute": 0.01}})
    assert _thresholds(_card(0.95), StagePolicy(metrics={"accuracy": {"min": value}}), "production")
    assert _regressions(_card(0.95), _card(value, "1.0.0"), production)
    assert _regressions(_card(0.95), _card(0.95, "1.0.0"), StagePolicy(max_regression={"accuracy": {"absolute": value}}))


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


# --- 2. evaluation sets and tolerances come from the base branch ------------------------------------


def test_registry_yaml_evaluation_recomputes_a_registration_the_card_does_not_pin(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(cli, gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    fails = failures(checked(cli, gated, tmp_path))
    assert fails.keys() == {"metrics"}
    assert fails["metrics"] == [
        f"models/m/1.1.0/card.yaml: accuracy: the card claims 0.95 but the evaluation set {HOLDOUT} gives 0.5000 "
        "(tolerance 0.005, registry.yaml)"]


def test_an_honest_card_passes_the_evaluation_policy(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(cli, gated, config=POLICY + EVALUATION, holdout=10)
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
    on_main(cli, gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95, card_extra=card_extra)
    fails = failures(checked(cli, gated, tmp_path))
    assert any("the card claims 0.95 but the evaluation set" in m and "tolerance 0.005" in m
               for m in fails["metrics"]), fails


def test_a_card_tolerance_of_inf_is_refused(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(cli, gated, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    card = gated / "models/m/1.1.0/card.yaml"
    card.write_text(card.read_text() + f"evaluation: {{data: {{path: {HOLDOUT}}}, tolerance: .inf}}\n")
    git(gated, "commit", "--quiet", "-am", "Any answer will do")
    fails = failures(checked(cli, gated, tmp_path))
    assert any("evaluation.tolerance: .inf is not allowed: use a finite number" in m for m in fails["schema"])


def test_a_card_can_make_the_check_stricter(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(cli, gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.503, card_extra="evaluation: {tolerance: 0.001}\n")
    fails = failures(checked(cli, gated, tmp_path))
    assert any("claims 0.503 but the evaluation set" in m and "tolerance 0.001" in m for m in fails["metrics"])


def test_the_pr_cannot_swap_the_data_or_drop_the_policy(gated: Path, tmp_path: Path,
                                                        cli: Callable[..., Result]) -> None:
    on_main(cli, gated, config=POLICY + EVALUATION, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    write_holdout(gated / HOLDOUT, positives=19)  # labels that agree with the claim
    (gated / "registry.yaml").write_text(POLICY)  # and no evaluation at all
    git(gated, "commit", "--quiet", "-am", "Friendlier data and policy")
    fails = failures(checked(cli, gated, tmp_path))
    assert any("the card claims 0.95 but the evaluation set" in m and "gives 0.5000" in m for m in fails["metrics"])


def test_model_yaml_on_base_adds_sets_and_a_smaller_tolerance(gated: Path, tmp_path: Path,
                                                              cli: Callable[..., Result]) -> None:
    model_yaml = (gated / "models/m/model.yaml").read_text()
    on_main(cli, gated, model_yaml=model_yaml + EVALUATION.replace("evaluation:\n", "evaluation:\n  tolerance: 0.0\n"),
            holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.501)
    fails = failures(checked(cli, gated, tmp_path))
    assert fails["metrics"] == [
        f"models/m/1.1.0/card.yaml: accuracy: the card claims 0.501 but the evaluation set {HOLDOUT} gives 0.5000 "
        "(tolerance 0.0, models/m/model.yaml)"]


def test_a_pinned_hash_that_does_not_match_fails(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    pinned = EVALUATION.replace(f"path: {HOLDOUT}", f"path: {HOLDOUT}, hash: 'sha256:{'0' * 64}'")
    on_main(cli, gated, config=POLICY + pinned, holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    fails = failures(checked(cli, gated, tmp_path))
    assert len(fails["metrics"]) == 1
    assert f"evaluation data {HOLDOUT} has sha256" in fails["metrics"][0]
    assert f"but registry.yaml pins {'0' * 64}" in fails["metrics"][0]


def test_a_metric_the_policy_recomputes_must_be_claimed(gated: Path, tmp_path: Path,
                                                        cli: Callable[..., Result]) -> None:
    on_main(cli, gated, config=POLICY + EVALUATION.replace("[accuracy]", "[accuracy, f1]"), holdout=10)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.5)
    fails = failures(checked(cli, gated, tmp_path))
    assert any(f"f1: the evaluation set {HOLDOUT} (registry.yaml) recomputes it, but the card claims no value" in m
               for m in fails["metrics"])


# --- 3. a recomputation that disagrees fails whatever the stage -------------------------------------


def test_a_card_pinned_set_that_disagrees_fails_a_plain_registration(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    on_main(cli, gated, holdout=10)
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
    on_main(cli, gated, config=POLICY + EVALUATION.replace(HOLDOUT, "datasets/missing.npz"))
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    fails = failures(checked(cli, gated, tmp_path))
    assert fails["metrics"] == ["models/m/1.1.0/card.yaml: evaluation data datasets/missing.npz (registry.yaml) "
                                "is not in the registry on the base branch"]


# --- 4. canary is gated like the live traffic it is -------------------------------------------------


@pytest.fixture
def in_production(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    """m@1.0.0 (accuracy 0.95) in production on main."""
    promote_on_main(cli, gated, "1.0.0", "staging", "production")
    return gated


def staged(cli: Callable[..., Result], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           accuracy: float, sign: bool) -> None:
    git(repo, "switch", "--quiet", "main")
    register(cli, repo, tmp_path, "1.1.0", accuracy=accuracy, sign=sign)
    merge(repo, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, repo, "1.1.0", "staging")


def to_canary(cli: Callable[..., Result], repo: Path, traffic: str = "0.1") -> None:
    result = cli("promote", "m", "1.1.0", "--to", "canary", "--traffic", traffic, "--reason", "try", cwd=repo)
    assert result.code == 0, result.err


def test_the_default_policy_gates_canary_like_production() -> None:
    policy = RegistryConfig.from_data({}).policy["canary"]
    assert policy == StagePolicy(metrics={"accuracy": {"min": 0.90}}, max_regression={"accuracy": {"absolute": 0.01}},
                                 require_signature=True, max_traffic=0.5)
    # A registry that sets only some stages, or some keys, keeps the defaults of the rest.
    config = RegistryConfig.from_data({"policy": {"production": {"metrics": {"accuracy": {"min": 0.95}}}}})
    assert config.policy["canary"] == policy
    assert config.policy["production"].require_signature is True
    assert config.policy["production"].metrics == {"accuracy": {"min": 0.95}}


def test_an_unsigned_canary_fails(in_production: Path, tmp_path: Path, cli: Callable[..., Result],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=False)
    to_canary(cli, in_production)
    fails = failures(checked(cli, in_production, tmp_path))
    assert fails.keys() == {"signature"}
    assert any("unsigned; the canary policy requires a signature" in m for m in fails["signature"])


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
    on_main(cli, in_production, config=POLICY.replace("trusted_keys:", "  canary:\n    max_traffic: 0.8\ntrusted_keys:"))
    staged(cli, in_production, tmp_path, monkeypatch, accuracy=0.96, sign=True)
    to_canary(cli, in_production, "0.6")
    report = checked(cli, in_production, tmp_path)
    assert failures(report) == {}
    assert "canary traffic 0.6 is within max_traffic 0.8" in [g["message"] for g in gate(report, "lifecycle")]


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


def test_fetch_plans_the_evaluation_sets_the_metrics_gate_reads(gated: Path, tmp_path: Path,
                                                                 cli: Callable[..., Result]) -> None:
    import json
    import subprocess
    import sys

    write_holdout(gated / HOLDOUT, 10)
    subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", HOLDOUT], cwd=gated, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "push", "--quiet"], cwd=gated, check=True)
    on_main(cli, gated, config=POLICY + EVALUATION)
    register(cli, gated, tmp_path, "1.1.0", accuracy=0.95)
    result = cli("fetch", "--base", "main", "--dry-run", "--json", cwd=gated)
    assert result.code == 0, result.err
    assert f"{HOLDOUT}.dvc" in json.loads(result.out)["targets"]
    (gated / HOLDOUT).unlink()  # a fresh CI checkout: the gate reads base's set through DVC
    fails = failures(checked(cli, gated, tmp_path))
    assert any("the card claims 0.95 but the evaluation set" in m and "gives 0.5000" in m for m in fails["metrics"])
