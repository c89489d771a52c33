"""The fast stages reader agrees with the authorities it stands in for (PyYAML + the JSON Schema)."""

from __future__ import annotations

import random

import pytest

from registry.errors import ValidationError
from registry.files import schemas, stages, yamlio
from registry.files.fastcheck import stages_ok
from registry.files.stages import Canary, Deprecation, Stages, _read_canonical

VERSIONS = ["1.0.0", "0.9.0", "1.1.0-rc.1", "2.0.0-build.7", "10.20.30"]


def random_stages(rng: random.Random) -> Stages:
    pool = rng.sample(VERSIONS, k=rng.randint(0, len(VERSIONS)))
    held = Stages()
    for version in pool:
        stage = rng.choice(["production", "canary", "staging", "deprecated", "archived"])
        if (stage == "production" and held.production) or (stage == "canary" and held.canary):
            stage = "staging"
        held = held.with_stage(version, stage, traffic=rng.choice([0.1, 0.25, 0.5, 0.05]),
                               sunset=rng.choice([None, "2027-03-01"]))
    return held


@pytest.mark.parametrize("seed", range(200))
def test_canonical_reader_matches_yaml(seed: int) -> None:
    text = random_stages(random.Random(seed)).to_text()
    assert _read_canonical(text) == (yamlio.loads(text) or {})


@pytest.mark.parametrize("text", [
    "production: 1.0.0\nproduction: 1.1.0\n",            # duplicate key
    "production: '1.0.0'\n",                             # quoted
    "staging:\n  - 1.0.0\n",                             # block style
    "production: 1.0\n",                                 # not a version
    "canary: {version: 1.0.0, traffic: 1.5}\n",          # out of range
    "deprecated: {1.0.0: {sunset: 2027-03-01, reason: \"x\"}}\n",
    "{}\nproduction: 1.0.0\n",
    "production: 1.0.0 # note\n",
])
def test_anything_else_goes_to_yaml(text: str) -> None:
    assert _read_canonical(text) is None


def test_reason_round_trips_through_yaml() -> None:
    held = Stages(deprecated={"1.0.0": Deprecation("2027-03-01", 'replaced: "better", faster')})
    assert stages.parse(held.to_text(), "stages.yaml") == held


def schema_says(kind: str, data: object) -> bool:
    return not schemas.validate(kind, data, "x.yaml")


STAGE_DOCS = [
    None, {}, {"production": "1.0.0"}, {"production": 1.0}, {"production": ["1.0.0"]},
    {"canary": {"version": "1.0.0", "traffic": 0.1}}, {"canary": {"version": "1.0.0", "traffic": 0}},
    {"canary": {"version": "1.0.0", "traffic": 1}}, {"canary": {"version": "1.0.0"}},
    {"canary": {"version": "1.0.0", "traffic": True}}, {"canary": {"version": "1.0.0", "traffic": 0.5, "x": 1}},
    {"staging": []}, {"staging": ["1.0.0", "1.0.0"]}, {"staging": ["v1"]}, {"archived": ["1.0.0"]},
    {"deprecated": {"1.0.0": None}}, {"deprecated": {"1.0.0": {}}}, {"deprecated": {"1.0.0": {"sunset": "2027-02-30"}}},
    {"deprecated": {"1.0.0": {"sunset": "2027-02-03", "reason": "r"}}}, {"deprecated": {"x": {}}},
    {"deprecated": {"1.0.0": {"sunset": "2027-02-03", "why": "r"}}}, {"prod": "1.0.0"}, [], "text",
    {"production": "1.0.0-rc.01"}, {"production": "01.0.0"},
]


@pytest.mark.parametrize("doc", STAGE_DOCS, ids=range(len(STAGE_DOCS)))
def test_stages_check_agrees_with_schema(doc: object) -> None:
    assert stages_ok(doc) == schema_says("stages", doc)


def test_canary_equality_helper() -> None:
    assert Stages(canary=Canary("1.0.0", 0.1)).to_text().splitlines()[1] == "canary: {version: 1.0.0, traffic: 0.1}"


@pytest.mark.parametrize("seed", range(200, 400))
def test_canonical_reader_output_is_schema_valid(seed: int) -> None:
    """Stages read without YAML skip the structural check: what the reader accepts must be valid."""
    text = random_stages(random.Random(seed)).to_text()
    data = _read_canonical(text)
    assert data is not None and stages_ok(data) and schema_says("stages", data)


@pytest.mark.parametrize("text", [
    "staging: [1.0.0, 1.0.0]\n",                         # not unique
    "canary: {version: 1.0.0, traffic: 0.0}\n",          # no share
    "deprecated: {1.0.0: {sunset: 2027-02-30}}\n",       # no such day
])
def test_canonical_reader_leaves_invalid_files_to_the_schema(text: str) -> None:
    assert _read_canonical(text) is None
    with pytest.raises(ValidationError):
        stages.parse(text, "stages.yaml")
