"""`registry ls` and `registry show`: what is registered and which stage each version holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from registry.errors import UsageError
from registry.files import yamlio
from registry.files.names import ALL_STAGES, check_model_name
from registry.files.stages import Stages
from registry.repo.registry import Registry


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest: str | None
    stages: Stages

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "latest": self.latest, "stages": self.stages.as_dict()}


def parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--tag {text!r}: use KEY=VALUE, e.g. --tag team=risk")
    return key, value


def holds_stage(held: Stages, versions: Callable[[], Sequence[str]], stage: str | None) -> bool:
    """The `ls --stage` rule (CLI and REST): a version in that stage; for development, a
    registered version in no stage."""
    if stage is None:
        return True
    if stage == "development":
        staged = {v for v, _ in held.assignments()}
        return any(v not in staged for v in versions())
    return bool(held.versions_in(stage))


def model_tags(reg: Registry, name: str) -> dict[str, object]:
    """The tags `ls --tag` matches: model.yaml's, with its latest version's card tags under them
    (a card tag counts unless model.yaml sets the same key)."""
    latest = reg.latest_version(name)
    card_tags = dict(reg.card(name, latest).data.get("tags") or {}) if latest else {}
    return {**card_tags, **reg.model_info(name).tags}


def tag_matches(tags: Mapping[str, object], tag: tuple[str, str]) -> bool:
    key, value = tag
    return key in tags and str(tags[key]) == value


def list_models(reg: Registry, stage: str | None = None, tag: tuple[str, str] | None = None) -> list[ModelSummary]:
    if stage is not None and stage not in ALL_STAGES:
        raise UsageError(f"unknown stage {stage!r}: use one of {', '.join(ALL_STAGES)}")
    summaries = []
    for name in reg.model_names():
        held = reg.stages(name)
        if not holds_stage(held, partial(reg.versions, name), stage):
            continue
        if tag is not None and not tag_matches(model_tags(reg, name), tag):
            continue
        summaries.append(ModelSummary(name, reg.latest_version(name), held))
    return summaries


def past_sunset(held: Stages, today: dt.date | None = None) -> list[tuple[str, str]]:
    today = today or dt.date.today()
    return [
        (v, d.sunset) for v, d in held.deprecated.items() if d.sunset and dt.date.fromisoformat(d.sunset) < today
    ]


def show_model(reg: Registry, name: str) -> dict[str, Any]:
    check_model_name(name)
    if not reg.has_model(name):
        raise UsageError(f"no model named {name!r} in this registry; see `registry ls`")
    info = reg.model_info(name)
    held = reg.stages(name)
    versions = []
    for version in reg.versions(name):
        text = yamlio.read_bytes(reg.version_dir(name, version) / "card.yaml")
        card = yamlio.loads(text) or {}
        versions.append({"version": version, "stage": held.stage_of(version), "created": card.get("created"),
                         "metrics": card.get("metrics", {})})
    return {
        "name": name,
        "description": info.description,
        "owners": list(info.owners),
        "task": info.task,
        "tags": info.tags,
        "stages": held.as_dict(),
        "versions": versions,
        "past_sunset": past_sunset(held),
    }


def show_version(reg: Registry, name: str, version: str) -> dict[str, Any]:
    reg.require_version(name, version)
    card = reg.card(name, version)
    held = reg.stages(name)
    out = dict(card.data)
    out["stage"] = held.stage_of(version)
    if version in held.deprecated:
        out["sunset"] = held.deprecated[version].sunset
        out["past_sunset"] = [p for p in past_sunset(held) if p[0] == version]
    if held.canary and held.canary.version == version:
        out["traffic"] = held.canary.traffic
    from registry.signing import verify as sign

    # present, path, status ("verified by KEY" / "invalid: why" / "unverified: why" / "unsigned"), key_id.
    # Its own key: the card's `signature` field is the model's I/O schema and stays as it is.
    out["signing"] = sign.signature_status(reg, name, version)
    from registry.queries import audit

    out["history"] = [e.as_json() for e in audit.log(reg, name=name, version=version)][-10:]
    return out
