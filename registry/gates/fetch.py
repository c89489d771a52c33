"""`registry fetch`: pull from the DVC remote only what a pull request's gates will read.

A registry's remote may hold terabytes; a PR touches one or two versions. The
versions are the ones `registry check` looks at (new registrations and versions
moved to staging, canary or production), found the same diff-aware way; their DVC
pointers at HEAD, plus those of the evaluation sets the metrics gate recomputes on
(the gate's own list), are pulled into the work tree in one DVC call, so the check
then reads local files instead of fetching artifact by artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from registry.gates import run as check
from registry.repo import storage
from registry.repo.registry import MODELS_DIR, Registry


@dataclass(frozen=True)
class FetchPlan:
    base: str
    head: str
    versions: tuple[tuple[str, str], ...]
    targets: tuple[str, ...]  # repo-relative paths of DVC pointer files at head

    def as_json(self) -> dict[str, Any]:
        return {"base": self.base, "head": self.head,
                "versions": [f"{model}@{version}" for model, version in self.versions],
                "targets": list(self.targets)}


def _context(reg: Registry, base: str) -> check.CheckContext:
    """What `registry check --base BASE` would look at, with HEAD (the work tree's commit) as head."""
    return check.context(reg, base)


def plan(reg: Registry, base: str) -> FetchPlan:
    ctx = _context(reg, base)
    try:
        versions = tuple((model, version) for model, version, _target in ctx.checked_versions())
        targets: list[str] = []
        for model, version in versions:
            folder = f"{MODELS_DIR}/{model}/{version}"
            targets += [e.path for e in ctx.files_at(ctx.head, folder) if e.path.endswith(".dvc")]
            targets += _evaluation_pointer(ctx, model, version)
    finally:
        ctx.close()
    return FetchPlan(ctx.base, ctx.head, versions, tuple(dict.fromkeys(targets)))


def _evaluation_pointer(ctx: check.CheckContext, model: str, version: str) -> list[str]:
    """The pointers of the evaluation sets the metrics gate runs the model on (the gate's own list:
    registry.yaml and model.yaml on base, plus the card's set).

    Only a pointer that head has is pulled, and for a set the policy pins, only when head's
    pointer is base's (the gate reads that set at base; if a PR changed it, the gate fetches
    base's object itself, or fails).
    """
    from registry.errors import RegistryError
    from registry.gates import metrics

    card = ctx.card_at(ctx.head, model, version)
    if card is None:
        return []
    try:
        evaluation = metrics.evaluation_for(ctx, model, card)
    except RegistryError:
        return []  # the metrics gate reports it
    pointers = []
    for eval_set in evaluation.sets:
        pointer = f"{eval_set.path}.dvc"
        at_head = ctx.read(ctx.head, pointer)
        from_base = not eval_set.declared_in.endswith("/card.yaml")
        if at_head is not None and (not from_base or at_head == ctx.read(ctx.base, pointer)):
            pointers.append(pointer)
    return pointers


def fetch(reg: Registry, base: str, *, dry_run: bool = False,
          progress: storage.Progress | None = None) -> FetchPlan:
    """Pull the planned pointers' files into the work tree (one DVC pull), unless dry_run.

    progress hears each file's bytes as they download (storage.Progress); none for a file the
    DVC cache already has.
    """
    planned = plan(reg, base)
    if planned.targets and not dry_run:
        storage.pull(reg.root, planned.targets, progress)
    return planned

