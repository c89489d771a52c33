"""Helpers the gates share: stage policy, the clearance to run a model, the versions' folders on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from registry.errors import RegistryError
from registry.files import config
from registry.gates.result import GateResult

if TYPE_CHECKING:
    from pathlib import Path

    from registry.files.cards import Card
    from registry.files.config import StagePolicy
    from registry.gates.run import CheckContext

# The gates that must have *passed* for a version before any gate runs its model.
MODEL_RUN_PREREQUISITES = ("scan", "format")


def cleared(ctx: CheckContext, gate: str, model: str, version: str) -> GateResult | None:
    """None when the model may be run; else the result that stops `gate` from running it.

    Only a recorded pass of every prerequisite clears a version: where one failed, this gate
    skips (that failure already fails the check); where one skipped or left no result, this
    gate fails, because an unscanned model is never run and a gate that did not pass has failed.
    """
    for earlier in MODEL_RUN_PREREQUISITES:
        if ctx.passed(earlier, model, version):
            continue
        if ctx.failed(earlier, model, version):
            return GateResult(gate, model, version, "skip", f"not run: the {earlier} gate failed for this version")
        return GateResult(gate, model, version, "fail",
                          f"not run: the {earlier} gate did not pass for this version; a model is run only "
                          "after its scan and format gates passed")
    return None


def stage_policy(ctx: CheckContext, model: str, version: str | None, target: str | None) -> StagePolicy | None:
    """The policy a version is checked against for its target stage (None: no target, or no policy).

    All of it from the base branch (`config.effective_policy`): registry.yaml's stage policy,
    its policy.tasks override for the model's task, tightened by base's model.yaml `policy`.
    The task is base's model.yaml `task` when it names one, else the card's. A model.yaml on
    base that does not validate raises a ValidationError: the caller fails the gate.
    """
    if not target:
        return None
    own = base_model_data(ctx, model)
    return config.effective_policy(ctx.config, policy_task(ctx, model, version), target, own.get("policy"))


def base_model_data(ctx: CheckContext, model: str) -> dict[str, Any]:
    """The model's model.yaml on the base branch ({} for a new model); a ValidationError if invalid."""
    return ctx.model_data(ctx.base, model) or {}


def policy_task(ctx: CheckContext, model: str, version: str | None) -> str | None:
    """The task whose policy applies: base's model.yaml `task` when it names one (a card in the PR
    cannot pick another task's thresholds), else the card's."""
    task = base_model_data(ctx, model).get("task")
    if not task and version is not None:
        card = ctx.card_at(ctx.head, model, version)
        task = card.data.get("task") if card is not None else None
    return str(task) if task else None


@dataclass(frozen=True)
class CheckedVersion:
    model: str
    version: str
    target: str | None
    card: Card
    folder: Path


def checked_folders(ctx: CheckContext, gate: str, results: list[GateResult]) -> list[CheckedVersion]:
    """The versions a gate looks at, with their card and files on disk.

    A version whose files cannot be fetched gets a failing result for this gate instead.
    """
    found = []
    for model, version, target in ctx.checked_versions():
        card = ctx.card_at(ctx.head, model, version)
        if card is None:
            continue  # the schema gate reports an invalid card
        try:
            folder = ctx.version_folder(model, version)
        except RegistryError as exc:
            results.append(GateResult(gate, model, version, "fail", f"cannot fetch the artifacts: {exc}"))
            continue
        found.append(CheckedVersion(model, version, target, card, folder))
    return found


@dataclass(frozen=True)
class EnvironmentFailure:
    """Why a version's declared environment cannot be used; `of(gate)` is that gate's failure."""

    model: str
    version: str
    message: str
    file: str

    def of(self, gate: str) -> GateResult:
        return GateResult(gate, self.model, self.version, "fail", self.message, self.file)


def environment_python(folder: Path, model: str, version: str,
                       environment: object) -> tuple[Path | None, EnvironmentFailure | None]:
    """The Python the version's model runs with: its declared environment's (built or reused
    here, before the sandboxed run), or None for the registry's own when it declares none."""
    if not environment:
        return None, None
    from registry.runner import environment as envs  # a build only when a model declares one

    label = f"models/{model}/{version}/{environment}"
    try:
        return envs.prepare(folder, str(environment), label), None
    except envs.EnvironmentProblem as exc:
        return None, EnvironmentFailure(model, version, f"environment: {exc}", label)
