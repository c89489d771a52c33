"""What an importer hands over (a plan per model) and gets back (outcomes); checks and promotions that need no git."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import ValidationError
from registry.files import schemas, yamlio
from registry.files.cards import Artifact
from registry.files.stages import Stages
from registry.repo.registry import version_sort_key

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SourceFile:
    """One file of a version, downloaded and already named as in the version folder."""

    path: Path
    origin: str  # where it sits in the source, e.g. "data/model.pth"
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class VersionPlan:
    version: str
    label: str  # how the source names it, for messages
    source_version: str  # the source's own version id, e.g. MLflow's "3"
    card: Mapping[str, Any]  # every card field except artifacts
    files: tuple[SourceFile, ...]
    stage: str  # the stage it holds in the source; "development" for none


@dataclass(frozen=True)
class ModelPlan:
    name: str
    label: str
    branch: str
    versions: tuple[VersionPlan, ...]
    description: str | None = None  # for model.yaml, when the import creates the model
    task: str | None = None
    # model.yaml tags the importer owns: every key under tag_prefix is replaced by these.
    tag_prefix: str | None = None
    model_tags: Mapping[str, str] = field(default_factory=dict)
    # The source model's own tags: written into model.yaml when the import creates the model;
    # an existing model.yaml is reviewed registry data, left as it is (a note lists what differs).
    source_tags: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class VersionOutcome:
    version: str
    label: str
    source_version: str
    status: str  # registered | skipped | conflict
    stage: str
    artifacts: tuple[Artifact, ...]
    message: str = ""


@dataclass(frozen=True)
class ModelOutcome:
    name: str
    label: str
    status: str  # imported | up-to-date | conflict | refused
    branch: str | None = None
    versions: tuple[VersionOutcome, ...] = ()
    stages: Stages | None = None
    commits: tuple[str, ...] = ()
    pushed: bool = False
    notes: tuple[str, ...] = ()
    error: str | None = None
    # `registry promote` commands, in order, that bring the source's stages over after the merge.
    promotions: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status in ("conflict", "refused")

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.label, "status": self.status, "branch": self.branch,
            "commits": list(self.commits), "pushed": self.pushed,
            "versions": [{"version": v.version, "source": v.label, "source_version": v.source_version, "status": v.status, "stage": v.stage,
                          "artifacts": [a.as_dict() for a in v.artifacts], "message": v.message}
                         for v in self.versions],
            "stages": self.stages.as_dict() if self.stages is not None else None,
            "notes": list(self.notes), "error": self.error, "promotions": list(self.promotions),
        }


def check_card(plan: VersionPlan) -> None:
    """The whole card, with placeholder digests, must validate before anything is committed."""
    probe = dict(plan.card)
    probe["artifacts"] = [Artifact(f.name, f.size, "0" * 64, "git").as_dict() for f in plan.files]
    text = yamlio.dumps(probe)
    problems = schemas.validate("card", probe, f"card of {plan.label}", text)
    if problems:
        raise ValidationError(problems)


def promotions(current: Stages, plan: ModelPlan, present: set[str],
               transitions: Mapping[str, Sequence[str]]) -> tuple[tuple[str, ...], list[str]]:
    """The `registry promote` commands, in order, that move each version to the stage it holds
    in the source, along the shortest path the lifecycle allows; and notes for those it cannot.

    Each command is a promotion of its own, reviewed and gated like any other, to run once the
    previous one is merged. A production version that the source replaces goes where the
    lifecycle sends replaced versions when its successor is promoted; a version in no stage at
    the source, or in a stage the source cannot express, is left where it is.
    """
    commands: list[str] = []
    notes: list[str] = []
    wanted = {v.version: v.stage for v in plan.versions if v.version in present}
    order = sorted(wanted, key=lambda v: (wanted[v] == "production", version_sort_key(v)))
    for version in order:
        stage, held = wanted[version], current.stage_of(version)
        if stage not in ("staging", "canary", "production", "archived") or held == stage:
            continue
        path = _shortest_path(held, stage, transitions)
        if path is None:
            notes.append(f"{plan.name}@{version} is {stage} in {plan.label}, but the lifecycle allows no path "
                         f"from {held} to {stage}; it stays {held}")
            continue
        reason = _shell_word(f"{stage} in {plan.label}")
        commands += [f"registry promote {plan.name} {version} --to {step} --reason {reason}" for step in path]
    return tuple(commands), notes


def _shell_word(text: str) -> str:
    """text as one shell word: in double quotes when that is safe, else quoted by shlex."""
    import shlex

    return f'"{text}"' if not any(c in text for c in '"$`\\!') else shlex.quote(text)


def _shortest_path(source: str, target: str, transitions: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The stages after source on the shortest allowed way to target (breadth first), or None."""
    previous: dict[str, str] = {}
    frontier = [source]
    seen = {source}
    while frontier:
        following = []
        for stage in frontier:
            for nxt in transitions.get(stage, ()):
                if nxt in seen:
                    continue
                seen.add(nxt)
                previous[nxt] = stage
                if nxt == target:
                    path = [nxt]
                    while path[-1] in previous and previous[path[-1]] != source:
                        path.append(previous[path[-1]])
                    return path[::-1]
                following.append(nxt)
        frontier = following
    return None
