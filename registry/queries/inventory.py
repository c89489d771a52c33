"""`registry ls` and `registry show`: what is registered and which stage each version holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from functools import partial

from registry.errors import UsageError
from registry.files import yamlio
from registry.files.names import ALL_STAGES, check_model_name
from registry.files.stages import Stages
from registry.queries.shapes import (
    ModelDetail,
    ModelSummary,
    SigningStatus,
    VersionBrief,
    VersionDetail,
)
from registry.repo.registry import Registry


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


def show_model(reg: Registry, name: str) -> ModelDetail:
    check_model_name(name)
    if not reg.has_model(name):
        raise UsageError(f"no model named {name!r} in this registry; see `registry ls`")
    info = reg.model_info(name)
    held = reg.stages(name)
    versions = []
    for version in reg.versions(name):
        text = yamlio.read_bytes(reg.version_dir(name, version) / "card.yaml")
        card = yamlio.loads(text) or {}
        versions.append(VersionBrief(version, held.stage_of(version), card.get("created"),  # type: ignore[arg-type]
                                     card.get("metrics", {})))
    return ModelDetail(name, info.description, tuple(info.owners), info.task, info.tags, held, tuple(versions),
                       tuple(past_sunset(held)))


def show_version(reg: Registry, name: str, version: str) -> VersionDetail:
    reg.require_version(name, version)
    card = reg.card(name, version)
    held = reg.stages(name)
    deprecation = None
    if version in held.deprecated:
        deprecation = (held.deprecated[version].sunset, tuple(p for p in past_sunset(held) if p[0] == version))
    traffic = held.canary.traffic if held.canary and held.canary.version == version else None
    from registry.signing import verify as sign

    # present, path, status ("verified by KEY" / "invalid: why" / "unverified: why" / "unsigned"), key_id.
    # Its own key: the card's `signature` field is the model's I/O schema and stays as it is.
    signing = SigningStatus(**sign.signature_status(reg, name, version))
    from registry.queries import audit

    history = tuple(audit.log(reg, name=name, version=version))[-10:]
    return VersionDetail(card.data, held.stage_of(version), signing, history,  # type: ignore[arg-type]
                         deprecation, traffic)
