"""metrics gate: card metrics meet the target stage's thresholds, production and canary do not
regress against the production version, and the metrics are recomputed on every evaluation set
the policy pins rather than trusted.

Policy comes from the base branch: thresholds from registry.yaml, evaluation sets and
tolerances from registry.yaml and the model's model.yaml. A card's own `evaluation` only adds
(another set, a smaller tolerance). A recomputation that disagrees with the card fails
whatever the stage, a plain registration included.

Every number compared is finite: the schema refuses .nan and .inf, and the comparisons here
refuse them again, because any comparison with NaN is false and would pass.

Direction (`lower_is_better`, also what `registry evaluate` calls a drop): a metric with a
`max` bound in the policy is better when lower, one with a `min` bound when higher; a metric
the policy does not bound goes by its name (mae, mse, rmse, a loss or an error: lower).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import RegistryError
from registry.files import config
from registry.gates.common import (
    MODEL_RUN_PREREQUISITES,
    environment_python,
    policy_task,
    stage_policy,
)
from registry.gates.result import GateResult
from registry.repo import storage
from registry.repo.registry import MODEL_FILE, MODELS_DIR

if TYPE_CHECKING:
    from registry.files.cards import Card
    from registry.files.config import EvalSet, Evaluation, StagePolicy
    from registry.gates.common import EnvironmentFailure
    from registry.gates.run import CheckContext
    from registry.runner.metrics import EvalResult

# The recomputation runs the model: scan and format run first, whatever --gate selects.
REQUIRES = MODEL_RUN_PREREQUISITES

# Stages a version serves live traffic from: checked for regression against production.
AGAINST_PRODUCTION = ("production", "canary")

# Metrics that are better when lower, for a policy that does not bound them (`lower_is_better`).
LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse", "loss", "log_loss", "error", "error_rate"})


def lower_is_better(metric: str, policy: StagePolicy | None) -> bool:
    """Whether a smaller value of metric is the better one: the policy's bound says so (max: yes,
    min: no); without one, its name (LOWER_IS_BETTER, or a name ending in _loss or _error)."""
    bounds = policy.metrics.get(metric, {}) if policy is not None else {}
    if "max" in bounds or "min" in bounds:
        return "max" in bounds
    name = metric.lower()
    return name in LOWER_IS_BETTER or name.endswith(("_loss", "_error"))


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _not_finite(card: Card) -> list[str]:
    return [f"metrics.{name}: {value!r} is not a finite number" for name, value in card.metrics.items()
            if not _finite(value)]


def _thresholds(card: Card, policy: StagePolicy, target: str, task: str | None = None) -> list[str]:
    problems = []
    for metric, bounds in policy.metrics.items():
        value = card.metrics.get(metric)
        if value is None:
            problems.append(f"{metric} is required by the {target} policy but missing from the card "
                            "(registry.yaml on the base branch can set other thresholds for a task: "
                            f"policy.tasks.{task or 'TASK'}.{target}.metrics)")
            continue
        if not _finite(value):
            continue  # reported once, by _not_finite
        for bound, limit in bounds.items():
            if not _finite(limit):
                problems.append(f"the {target} policy's {metric} {bound} {limit!r} is not a finite number")
            elif bound == "min" and value < limit:
                problems.append(f"{metric} {value} is below the {target} minimum {limit}")
            elif bound == "max" and value > limit:
                problems.append(f"{metric} {value} is above the {target} maximum {limit}")
    return problems


def _regressions(card: Card, current: Card, policy: StagePolicy) -> list[str]:
    problems = []
    for metric, tolerance in policy.max_regression.items():
        new, old = card.metrics.get(metric), current.metrics.get(metric)
        if new is None or old is None:
            if new is None:
                problems.append(f"{metric} is missing, so regression against {current.version} cannot be checked")
            continue
        if not _finite(new):
            continue  # reported once, by _not_finite
        if not _finite(old):
            problems.append(f"{metric}: production {current.version}'s {old!r} is not a finite number, "
                            "so regression cannot be checked")
            continue
        worse_by = (new - old) if lower_is_better(metric, policy) else (old - new)
        # Both kinds given (a model.yaml tightening the registry's): the smaller allowance.
        allowed = min((value if kind == "absolute" else abs(old) * value for kind, value in tolerance.items()),
                      default=0.0)
        if not _finite(allowed):
            problems.append(f"{metric}: the allowed regression {allowed!r} is not a finite number")
        elif worse_by > allowed + 1e-12:
            problems.append(f"{metric} {new} regresses from production {current.version}'s {old} "
                            f"by {worse_by:.4g} (allowed {allowed:.4g})")
    return problems


def evaluation_for(ctx: CheckContext, model: str, card: Card) -> Evaluation:
    """The sets this version is recomputed on: base's registry.yaml and model.yaml, then the card's."""
    model_file = f"{MODELS_DIR}/{model}/{MODEL_FILE}"
    policy = config.model_evaluation(ctx.model_data(ctx.base, model), model_file, ctx.config.evaluation)
    card_path = f"{MODELS_DIR}/{model}/{card.version}/card.yaml"
    card_evaluation = card.data.get("evaluation")
    return policy.with_card(dict(card_evaluation) if isinstance(card_evaluation, dict) else None, card_path)


def _data_rev(ctx: CheckContext, eval_set: EvalSet) -> tuple[str, str]:
    """Which commit an evaluation set's data is read from: a set the policy pins, from base
    (the PR cannot swap the data); a set only the card names, from head."""
    if eval_set.declared_in.endswith("/card.yaml"):
        return ctx.head, "head"
    return ctx.base, "the base branch"


def run_model_on(ctx: CheckContext, model: str, version: str, card: Card, data_file: Path,
                 names: list[str]) -> EvalResult | EnvironmentFailure:
    """The version's model run on a labelled data file and scored: its card's entrypoint, in
    the sandbox (`registry.runner.metrics.evaluate`), with its declared environment's Python
    when it has one; `names` computed here from its predictions. What this gate recomputes on
    an evaluation set and `registry evaluate` (registry.gates.drift) on new data.

    Only for a version whose scan and format gates passed (the callers check).
    """
    from registry.runner import metrics as runner

    policy = ctx.config.policy.get("production")
    timeout = policy.smoke_timeout_s if policy else 60
    folder = ctx.version_folder(model, version)
    python, problem = environment_python(folder, model, version, card.data.get("environment"))
    if problem:
        return problem
    return runner.evaluate(folder, card.data.get("entrypoint"), data_file, names,
                           timeout_s=max(timeout, 60), python=python)


def _recompute(ctx: CheckContext, model: str, version: str, card: Card, eval_set: EvalSet) -> tuple[list[str], str]:
    """Run the model on one evaluation set and compare with the card's claims."""
    from registry.runner import metrics as runner

    path = eval_set.path
    names = list(eval_set.metrics or card.metrics)
    rev, where = _data_rev(ctx, eval_set)
    problems = [f"{name}: the evaluation set {path} ({eval_set.declared_in}) recomputes it, "
                "but the card claims no value" for name in names if name not in card.metrics]
    with tempfile.TemporaryDirectory(prefix="registry-eval-") as tmp:
        local = Path(tmp) / Path(path).name
        try:
            if ctx.read(rev, path + ".dvc") is not None:
                storage.fetch_at(ctx.reg.root, path, rev, local)
            else:
                blob = ctx.read(rev, path)
                if blob is None:
                    return [*problems, f"evaluation data {path} ({eval_set.declared_in}) is not in the registry "
                                       f"on {where}"], ""
                local.write_bytes(blob)
        except RegistryError as exc:
            return [*problems, f"evaluation data {path}: {exc}"], ""
        if eval_set.hash:
            with local.open("rb") as handle:
                actual = hashlib.file_digest(handle, "sha256").hexdigest()
            if actual != eval_set.hash:
                return [*problems, f"evaluation data {path} has sha256 {actual}, but {eval_set.declared_in} "
                                   f"pins {eval_set.hash}"], ""
        result = run_model_on(ctx, model, version, card, local, names)
        if not isinstance(result, runner.EvalResult):
            return [*problems, f"recomputing metrics on {path}: {result.message}"], ""
    if result.status != "pass":
        return [*problems, f"recomputing metrics on {path} ({eval_set.declared_in}) failed: {result.message}"], ""
    # The PR summary marks these as measured, not self-reported.
    ctx.recomputed[(model, version)] = ctx.recomputed.get((model, version), frozenset()) | frozenset(result.metrics)
    for name, value in result.metrics.items():
        claimed = card.metrics.get(name)
        if claimed is None or not _finite(claimed):
            continue  # reported above, or by _not_finite
        if not _finite(value) or not abs(value - claimed) <= eval_set.tolerance:
            problems.append(f"{name}: the card claims {claimed} but the evaluation set {path} gives {value:.4f} "
                            f"(tolerance {eval_set.tolerance}, {eval_set.declared_in})")
    shown = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    return problems, f"recomputed on {path}: {shown}"


def _check_version(ctx: CheckContext, model: str, version: str, target: str | None,
                   card: Card) -> tuple[list[str], list[str], StagePolicy | None]:
    problems = _not_finite(card)
    notes: list[str] = []
    try:
        evaluation = evaluation_for(ctx, model, card)
    except RegistryError as exc:  # base's model.yaml does not validate: nothing to trust, fail closed
        return [*problems, f"cannot read the evaluation policy: {exc}"], notes, None
    if evaluation.sets:
        if not (ctx.passed("scan", model, version) and ctx.passed("format", model, version)):
            problems.append("not recomputed: the security scan or format check did not pass, and the evaluation "
                            f"policy recomputes the metrics on {', '.join(s.path for s in evaluation.sets)}")
        else:
            for eval_set in evaluation.sets:
                recomputed, note = _recompute(ctx, model, version, card, eval_set)
                problems += recomputed
                if note:
                    notes.append(note)
    try:
        policy = stage_policy(ctx, model, version, target)
    except RegistryError as exc:  # base's model.yaml does not validate: fail closed
        return [*problems, f"cannot read the policy: {exc}"], notes, None
    if policy is None:
        return problems, notes, None
    task = policy_task(ctx, model, version)
    problems += _thresholds(card, policy, target or "", task)
    if task and card.data.get("task") != task:
        notes.append(f"the {task} policy applies: the task models/{model}/model.yaml names on the base branch")
    current_version = ctx.stages_at(ctx.base, model).production if target in AGAINST_PRODUCTION else None
    rollback = any(c.model == model and c.version == version and c.source == "deprecated"
                   and c.target == "production" for c in ctx.stage_changes)
    if rollback and current_version:
        # Back to a version that passed these gates before: an emergency is no time to block on it.
        notes.append(f"rollback: no regression check against {current_version}")
    elif current_version and current_version != version and policy.max_regression:
        current = ctx.card_at(ctx.base, model, current_version)
        if current is None:
            problems.append(f"production {current_version}'s card does not validate on the base branch, "
                            "so regression cannot be checked")
        else:
            problems += _regressions(card, current, policy)
    return problems, notes, policy


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    for model, version, target in ctx.checked_versions():
        path = f"{MODELS_DIR}/{model}/{version}/card.yaml"
        card = ctx.card_at(ctx.head, model, version)
        if card is None:  # the schema or consistency gate says why; its metrics are not trusted either way
            results.append(GateResult("metrics", model, version, "fail",
                                      f"{path}: no valid card, so its metrics cannot be checked "
                                      f"(`registry validate {path}` says why)", path))
            continue
        problems, notes, policy = _check_version(ctx, model, version, target, card)
        if problems:
            results += [GateResult("metrics", model, version, "fail", f"{path}: {p}", path) for p in problems]
        elif policy is None and not notes:
            results.append(GateResult("metrics", model, version, "skip",
                                      "no target stage: thresholds apply when the version is promoted"))
        else:
            claimed = ", ".join(f"{k}={v}" for k, v in card.metrics.items())
            where = f" for {target}" if policy is not None else ""
            results.append(GateResult("metrics", model, version, "pass",
                                      "; ".join([f"{claimed} meet the policy{where}", *notes]), path))
    if not results:
        results.append(GateResult("metrics", None, None, "skip", "no version to check"))
    return results
