"""lifecycle gate: each stage change is an allowed transition; rollbacks go to earlier production versions.

The transitions come from the base branch's registry.yaml only. Nothing the pull request
writes (its commit messages and trailers, its cards) relaxes them: an import is a
registration like any other and is promoted stage by stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import RegistryError
from registry.files import stages, yamlio
from registry.gates.common import stage_policy
from registry.gates.result import GateResult
from registry.repo.registry import MODELS_DIR

if TYPE_CHECKING:
    from registry.gates.run import CheckContext, StageChange


def _was_in_production(ctx: CheckContext, change: StageChange) -> bool:
    from registry.queries import audit  # only for a rollback: most checks never read the history

    history = audit.log(ctx.reg, name=change.model, version=change.version, ref=ctx.base)
    return any(entry.to_stage == "production" for entry in history)


SERVED = ("staging", "canary", "production")


def _purged(ctx: CheckContext, change: StageChange) -> bool:
    """Whether the version's card carries gc's purged: mark on base or at head."""
    return any(card is not None and "purged" in card.data
               for card in (ctx.card_at(rev, change.model, change.version) for rev in (ctx.base, ctx.head)))


def _rebase_hint(ctx: CheckContext, change: StageChange) -> str:
    if ctx.merge_base == ctx.base:
        return ""
    then = dict(ctx.stages_at(ctx.merge_base, change.model).assignments()).get(change.version, "development")
    now = dict(ctx.stages_at(ctx.base, change.model).assignments()).get(change.version, "development")
    if then != now:
        return (f"; {change.model}@{change.version} moved from {then} to {now} on the base branch since this "
                "branch was made: rebase on the base branch and re-run the checks")
    return ""


def _canary_traffic(ctx: CheckContext) -> list[GateResult]:
    """A canary this PR sets (or re-weights) takes at most the canary policy's max_traffic
    (the effective one for that version: its task's and its model.yaml's, from base)."""
    results = []
    for model in ctx.models:
        canary = ctx.stages_at(ctx.head, model).canary
        if canary is None or canary == ctx.stages_at(ctx.base, model).canary:
            continue
        path = f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}"
        try:
            policy = stage_policy(ctx, model, canary.version, "canary")
        except RegistryError as exc:  # base's model.yaml does not validate: fail closed
            results.append(GateResult("lifecycle", model, canary.version, "fail", f"cannot read the policy: {exc}"))
            continue
        limit = policy.max_traffic if policy is not None else None
        if limit is None:
            continue
        text = ctx.read(ctx.head, path)
        line = yamlio.line_of(text, ["canary", "traffic"]) if text is not None else None
        if canary.traffic > limit:
            results.append(GateResult(
                "lifecycle", model, canary.version, "fail",
                f"{path}:{line}: canary.traffic: {canary.traffic:g} is over the canary policy's max_traffic "
                f"{limit:g} (registry.yaml); promote with --traffic {limit:g} or less", path, line))
        else:
            results.append(GateResult("lifecycle", model, canary.version, "pass",
                                      f"canary traffic {canary.traffic:g} is within max_traffic {limit:g}", path, line))
    return results


def run(ctx: CheckContext) -> list[GateResult]:
    results = _canary_traffic(ctx)
    for change in ctx.stage_changes:
        path = f"{MODELS_DIR}/{change.model}/{stages.STAGES_FILE}"
        label = f"{change.source} → {change.target}"
        if not ctx.config.allows(change.source, change.target):
            allowed = ", ".join(ctx.config.transitions.get(change.source, ())) or "nothing"
            results.append(GateResult(
                "lifecycle", change.model, change.version, "fail",
                f"{path}: {label} is not allowed (from {change.source}: {allowed})" + _rebase_hint(ctx, change), path))
        elif change.target in SERVED and _purged(ctx, change):
            results.append(GateResult(
                "lifecycle", change.model, change.version, "fail",
                f"{path}: {change.model}@{change.version} was purged by the retention policy and its weights are "
                f"gone; it cannot go to {change.target}: register a new version", path))
        elif change.source == "deprecated" and change.target == "production" and not _was_in_production(ctx, change):
            results.append(GateResult(
                "lifecycle", change.model, change.version, "fail",
                f"{path}: deprecated → production is a rollback, but {change.model}@{change.version} was never in "
                "production", path))
        else:
            results.append(GateResult("lifecycle", change.model, change.version, "pass", f"{label} is allowed", path))
    if not results:
        results.append(GateResult("lifecycle", None, None, "skip", "no stage changes"))
    return results
