"""The pull-request summary a reviewer judges by: per model, why, what changes, and how the
candidate compares with the version production serves now (metrics with deltas, size,
framework, signer, input/output signature).

Everything shown comes from the PR (cards, commit messages) and is therefore an author's
text: it is escaped for Markdown and HTML, and code blocks are fenced with more backticks
than the text holds, so nothing a card says can end a block or pose as the verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from registry.errors import RegistryError
from registry.files.layout import MODELS_DIR
from registry.repo import git

if TYPE_CHECKING:
    from registry.files.cards import Card
    from registry.files.stages import Stages
    from registry.gates.result import GateResult
    from registry.repo.registry import Registry



class Move(Protocol):
    """A stage change, as the summary reads it (registry.gates.run.StageChange)."""

    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def traffic(self) -> float | None: ...


class Checked(Protocol):
    """What the summary reads of a check that has run (registry.gates.run.CheckContext).

    `registry check` calls the summary, so the summary names none of run's types: this is the
    part of the context it uses, and mypy checks that CheckContext provides it.
    """

    reg: Registry
    base: str
    head: str
    merge_base: str
    results: list[GateResult]
    recomputed: dict[tuple[str, str], frozenset[str]]

    @property
    def models(self) -> list[str]: ...
    @property
    def new_versions(self) -> list[tuple[str, str]]: ...
    @property
    def stage_changes(self) -> Sequence[Move]: ...
    def stages_at(self, rev: str, model: str) -> Stages: ...
    def card_at(self, rev: str, model: str, version: str) -> Card | None: ...
    def read(self, rev: str, path: str) -> bytes | None: ...


STAGE_RANK = {"production": 3, "canary": 2, "staging": 1}
MAX_EXAMPLE_CHARS = 2000


@dataclass(frozen=True)
class MetricRow:
    name: str
    candidate: float | None
    production: float | None
    source: str  # "recomputed" | "self-reported"

    @property
    def delta(self) -> float | None:
        if self.candidate is None or self.production is None:
            return None
        return self.candidate - self.production


@dataclass(frozen=True)
class VersionFacts:
    version: str
    framework: str
    task: str
    size: int
    signer: str
    inputs: str
    outputs: str
    input_example: str | None


@dataclass(frozen=True)
class ModelChange:
    model: str
    reasons: tuple[str, ...]
    moves: tuple[str, ...]
    new_versions: tuple[str, ...]
    candidate: VersionFacts | None
    production: VersionFacts | None
    metrics: tuple[MetricRow, ...]


def describe(ctx: Checked) -> tuple[ModelChange, ...]:
    """One entry per model the PR touches, read from base and head (nothing is run)."""
    changes = []
    for model in ctx.models:
        moves = [c for c in ctx.stage_changes if c.model == model]
        new = [v for m, v in ctx.new_versions if m == model]
        target = max(moves, key=lambda c: STAGE_RANK.get(c.target, 0), default=None)
        candidate_version = (target.version if target and target.target in STAGE_RANK
                             else (new[-1] if new else None))
        production_version = ctx.stages_at(ctx.base, model).production
        candidate_card = ctx.card_at(ctx.head, model, candidate_version) if candidate_version else None
        production_card = (ctx.card_at(ctx.base, model, production_version)
                           if production_version and production_version != candidate_version else None)
        recomputed = ctx.recomputed.get((model, candidate_version or ""), frozenset())
        changes.append(ModelChange(
            model=model,
            reasons=_reasons(ctx, model),
            moves=tuple(_move_text(c.version, c.source, c.target, c.traffic) for c in moves),
            new_versions=tuple(new),
            candidate=_facts(ctx, ctx.head, candidate_card) if candidate_card else None,
            production=_facts(ctx, ctx.base, production_card) if production_card else None,
            metrics=_metric_rows(candidate_card, production_card, recomputed) if candidate_card else (),
        ))
    return tuple(changes)


def _move_text(version: str, source: str, target: str, traffic: float | None) -> str:
    share = f" ({traffic:.0%} of traffic)" if traffic is not None else ""
    return f"{version}: {source} → {target}{share}"


def _reasons(ctx: Checked, model: str) -> tuple[str, ...]:
    """The `Reason:` of each PR commit that touches the model, else those commits' subjects."""
    commits = git.subjects_and_trailer(ctx.reg.root, f"{ctx.merge_base}..{ctx.head}", "Reason",
                                       f"{MODELS_DIR}/{model}/")
    subjects, reasons = [s for s, _ in commits], [r for _, r in commits]
    found = [r.strip() for r in reasons if r.strip()]
    if not found:
        found = [s.strip() for s in subjects if s.strip()]
    return tuple(dict.fromkeys(found))


def _facts(ctx: Checked, rev: str, card: Card) -> VersionFacts:
    io = card.data.get("signature") or {}
    example = card.data.get("input_example")
    return VersionFacts(
        version=card.version,
        framework=str(card.data.get("framework", "")),
        task=str(card.data.get("task", "")),
        size=sum(a.size for a in card.artifacts),
        signer=_signer(ctx, rev, card),
        inputs=_io_text(io.get("inputs")),
        outputs=_io_text(io.get("outputs")),
        input_example=None if example is None else json.dumps(example, default=str),
    )


def _signer(ctx: Checked, rev: str, card: Card) -> str:
    from registry.signing.bundle import Bundle
    from registry.signing.manifest import SIGNATURE_FILE

    text = ctx.read(rev, f"{MODELS_DIR}/{card.name}/{card.version}/{SIGNATURE_FILE}")
    if text is None:
        return "unsigned"
    try:
        key = Bundle.from_json(text, "signature.json").key_id
    except (RegistryError, RecursionError):
        return "unreadable signature"
    verdict = next((r.status for r in ctx.results if r.gate == "signature" and r.model == card.name
                    and r.version == card.version and rev == ctx.head), None)
    shown = f"key {key[:16]}" if key else "a key without a hint"
    return shown + {"pass": " (verified)", "fail": " (does not verify)"}.get(verdict or "", "")


def _io_text(items: object) -> str:
    if not isinstance(items, list):
        return ""
    parts = [f"{i.get('name', '?')}: {i.get('type', '?')}" for i in items if isinstance(i, Mapping)]
    return ", ".join(parts)


def _metric_rows(candidate: Card, production: Card | None, recomputed: Iterable[str]) -> tuple[MetricRow, ...]:
    recomputed = set(recomputed)
    names = list(candidate.metrics) + [n for n in (production.metrics if production else {})
                                       if n not in candidate.metrics]
    return tuple(
        MetricRow(name, candidate.metrics.get(name), production.metrics.get(name) if production else None,
                  "recomputed" if name in recomputed else "self-reported")
        for name in names
    )


# -- Markdown ---------------------------------------------------------------------------------


_CELL_ENTITIES = {ord(c): f"&#{ord(c)};" for c in "|[]`*_#<>&!"}


def cell(text: object) -> str:
    """An author's text, safe inside a Markdown table cell: no HTML, links, images or breaks."""
    escaped = str(text).translate(_CELL_ENTITIES)
    return re.sub(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029]+", " ", escaped)


def fence(text: str, info: str = "") -> list[str]:
    """A code block whose fence is longer than any backtick run in the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marker = "`" * max(3, longest + 1)
    return [marker + info, text, marker]


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    return str(size)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _delta(value: float | None) -> str:
    return "" if value is None else f"{value:+.4g}"


def render(changes: Iterable[ModelChange]) -> list[str]:
    lines: list[str] = []
    for change in changes:
        lines += ["", f"### {cell(change.model)}", ""]
        if change.reasons:
            lines.append("**Why:** " + " · ".join(cell(r) for r in change.reasons))
        what = [cell(m) for m in change.moves] + [f"new version {cell(v)}" for v in change.new_versions]
        if what:
            lines.append("**Changes:** " + " · ".join(what))
        new, old = change.candidate, change.production
        if new is None:
            continue
        lines += ["", f"| | {cell(new.version)} (this PR) | "
                      f"{cell(old.version) + ' (production)' if old else 'production: none'} | Δ |",
                  "|---|---|---|---|"]
        for row in change.metrics:
            lines.append(f"| {cell(row.name)} ({row.source}) | {_number(row.candidate)} | "
                         f"{_number(row.production)} | {_delta(row.delta)} |")
        lines.append(f"| size | {_size(new.size)} | {_size(old.size) if old else '—'} | "
                     f"{(('+' if new.size >= old.size else '-') + _size(abs(new.size - old.size))) if old else ''} |")
        for label, attr in (("framework", "framework"), ("task", "task"), ("signed by", "signer"),
                            ("inputs", "inputs"), ("outputs", "outputs")):
            mine, theirs = getattr(new, attr), getattr(old, attr) if old else ""
            changed = "changed" if old and attr in ("framework", "task", "inputs", "outputs") and mine != theirs \
                else ""
            lines.append(f"| {label} | {cell(mine) or '—'} | {cell(theirs) or '—'} | {changed} |")
        if new.input_example is not None:
            example = new.input_example
            shown = example if len(example) <= MAX_EXAMPLE_CHARS else \
                example[:MAX_EXAMPLE_CHARS] + f"\n… ({len(example) - MAX_EXAMPLE_CHARS} more characters)"
            lines += ["", f"<details><summary>input example of {cell(new.version)} "
                          f"({len(example)} characters)</summary>", "", *fence(shown, "json"), "", "</details>"]
    return lines


def as_json(change: ModelChange) -> dict[str, Any]:
    def facts(f: VersionFacts | None) -> dict[str, Any] | None:
        return None if f is None else {k: getattr(f, k) for k in VersionFacts.__dataclass_fields__}

    return {"model": change.model, "reasons": list(change.reasons), "moves": list(change.moves),
            "new_versions": list(change.new_versions), "candidate": facts(change.candidate),
            "production": facts(change.production),
            "metrics": [{"name": r.name, "candidate": r.candidate, "production": r.production,
                         "delta": r.delta, "source": r.source} for r in change.metrics]}
