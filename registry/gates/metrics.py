"""metrics gate: card metrics meet the target stage's thresholds, production does not regress,
and where the card pins an evaluation set the metrics are recomputed rather than trusted.

Regression direction: a metric with a `max` bound in the policy (a loss, an error
rate) is better when lower; every other metric is better when higher.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import storage
from registry.errors import RegistryError
from registry.gates import MODEL_RUN_PREREQUISITES, GateResult

if TYPE_CHECKING:
    from registry.cards import Card
    from registry.check import CheckContext
    from registry.config import StagePolicy

# The recomputation runs the model: scan and format run first, whatever --gate selects.
REQUIRES = MODEL_RUN_PREREQUISITES
DEFAULT_TOLERANCE = 0.005


def _thresholds(card: Card, policy: StagePolicy, target: str) -> list[str]:
    problems = []
    for metric, bounds in policy.metrics.items():
        value = card.metrics.get(metric)
        if value is None:
            problems.append(f"{metric} is required by the {target} policy but missing from the card")
            continue
        if "min" in bounds and value < bounds["min"]:
            problems.append(f"{metric} {value} is below the {target} minimum {bounds['min']}")
        if "max" in bounds and value > bounds["max"]:
            problems.append(f"{metric} {value} is above the {target} maximum {bounds['max']}")
    return problems


def _regressions(card: Card, current: Card, policy: StagePolicy) -> list[str]:
    problems = []
    for metric, tolerance in policy.max_regression.items():
        new, old = card.metrics.get(metric), current.metrics.get(metric)
        if new is None or old is None:
            if new is None:
                problems.append(f"{metric} is missing, so regression against {current.version} cannot be checked")
            continue
        lower_is_better = "max" in policy.metrics.get(metric, {})
        worse_by = (new - old) if lower_is_better else (old - new)
        allowed = tolerance.get("absolute", abs(old) * tolerance.get("relative", 0.0))
        if worse_by > allowed + 1e-12:
            problems.append(f"{metric} {new} regresses from production {current.version}'s {old} "
                            f"by {worse_by:.4g} (allowed {allowed:.4g})")
    return problems


def _recompute(ctx: CheckContext, model: str, version: str, card: Card) -> tuple[list[str], str]:
    """Run the model on the pinned evaluation set and compare with the card's claims."""
    from registry import runner

    evaluation: dict[str, Any] = dict(card.data.get("evaluation") or {})
    data = evaluation.get("data") or {}
    names = list(evaluation.get("metrics") or card.metrics)
    tolerance = float(evaluation.get("tolerance", DEFAULT_TOLERANCE))
    with tempfile.TemporaryDirectory(prefix="registry-eval-") as tmp:
        local = Path(tmp) / Path(data["path"]).name
        try:
            if ctx.read(ctx.head, data["path"] + ".dvc") is not None:
                storage.fetch_at(ctx.reg.root, data["path"], ctx.head, local)
            else:
                blob = ctx.read(ctx.head, data["path"])
                if blob is None:
                    return [f"evaluation data {data['path']} is not in the registry at head"], ""
                local.write_bytes(blob)
        except RegistryError as exc:
            return [f"evaluation data {data['path']}: {exc}"], ""
        pinned = str(data.get("hash", "")).removeprefix("sha256:")
        if pinned:
            actual = hashlib.sha256(local.read_bytes()).hexdigest()
            if actual != pinned:
                return [f"evaluation data {data['path']} has sha256 {actual}, but the card pins {pinned}"], ""
        policy = ctx.config.policy.get("production")
        timeout = policy.smoke_timeout_s if policy else 60
        result = runner.evaluate(ctx.version_folder(model, version), card.data.get("entrypoint"), local, names,
                                 timeout_s=max(timeout, 60))
    if result.status != "pass":
        return [f"recomputing metrics failed: {result.message}"], ""
    problems = []
    for name, value in result.metrics.items():
        claimed = card.metrics.get(name)
        if claimed is None:
            continue
        if abs(value - claimed) > tolerance:
            problems.append(f"{name}: the card claims {claimed} but the pinned evaluation set gives {value:.4f} "
                            f"(tolerance {tolerance})")
    shown = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    return problems, f"recomputed on {data['path']}: {shown}"


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    for model, version, target in ctx.checked_versions():
        card = ctx.card_at(ctx.head, model, version)
        if card is None:
            continue
        problems: list[str] = []
        notes = []
        if card.data.get("evaluation", {}).get("data"):
            if not (ctx.passed("scan", model, version) and ctx.passed("format", model, version)):
                results.append(GateResult("metrics", model, version, "skip",
                                          "not recomputed: the security scan or format check did not pass"))
                continue
            recomputed, note = _recompute(ctx, model, version, card)
            problems += recomputed
            if note:
                notes.append(note)
        policy = ctx.config.policy.get(target) if target else None
        if policy is not None:
            problems += _thresholds(card, policy, target or "")
            current_version = ctx.stages_at(ctx.base, model).production if target == "production" else None
            rollback = any(c.model == model and c.version == version and c.source == "deprecated"
                           and c.target == "production" for c in ctx.stage_changes)
            if rollback and current_version:
                # Back to a version that passed these gates before: an emergency is no time to block on it.
                notes.append(f"rollback: no regression check against {current_version}")
            elif current_version and current_version != version and policy.max_regression:
                current = ctx.card_at(ctx.base, model, current_version)
                if current is not None:
                    problems += _regressions(card, current, policy)
        elif not notes:
            results.append(GateResult("metrics", model, version, "skip",
                                      "no target stage: thresholds apply when the version is promoted"))
            continue
        path = f"models/{model}/{version}/card.yaml"
        if problems:
            results += [GateResult("metrics", model, version, "fail", f"{path}: {p}", path) for p in problems]
        else:
            claimed = ", ".join(f"{k}={v}" for k, v in card.metrics.items())
            where = f" for {target}" if target else ""
            results.append(GateResult("metrics", model, version, "pass",
                                      "; ".join([f"{claimed} meet the policy{where}", *notes]), path))
    if not results:
        results.append(GateResult("metrics", None, None, "skip", "no version to check"))
    return results
