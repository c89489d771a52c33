"""card.yaml: a version's model card, parsed and checked against its folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry import yamlio
from registry.errors import Problem, ValidationError
from registry.layout import CARD_FILE as CARD_FILE

SCHEMA_REF = f"../../../{yamlio.REPO_SCHEMA_DIR}/card.schema.json"
# The fields `register` fills in; a card given to it may leave them out.
FILLED_BY_REGISTER = ("name", "version", "created", "artifacts")
KEY_ORDER = (
    "name", "version", "description", "created", "creator", "framework", "task", "algorithm",
    "metrics", "artifacts", "entrypoint", "signature", "input_example", "hyperparameters",
    "training", "evaluation", "features", "preprocessing", "intended_use", "limitations",
    "ethical_considerations", "explainability", "tags", "purged",
)


@dataclass(frozen=True)
class Artifact:
    path: str
    size: int
    sha256: str
    storage: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "storage": self.storage}


@dataclass(frozen=True)
class Card:
    name: str
    version: str
    artifacts: tuple[Artifact, ...]
    metrics: Mapping[str, float]
    data: Mapping[str, Any]  # every field of the card, as validated

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Card:
        return cls(
            name=data["name"],
            version=data["version"],
            artifacts=tuple(Artifact(**a) for a in data["artifacts"]),
            metrics=dict(data["metrics"]),
            data=data,
        )

    def to_text(self) -> str:
        ordered = {k: self.data[k] for k in KEY_ORDER if k in self.data}
        return yamlio.schema_header(SCHEMA_REF) + yamlio.dumps(ordered)


def parse(text: str | bytes, path: str) -> Card:
    from registry import schemas

    data = yamlio.loads(text, path)
    problems = schemas.validate("card", data, path, text)
    if problems:
        raise ValidationError(problems)
    return Card.from_data(data)


def folder_problems(card: Card, name: str, version: str, path: str, text: str | bytes | None) -> list[Problem]:
    """The card must name the model and version of the folder it sits in."""
    problems = []
    for field, expected, got in (("name", name, card.name), ("version", version, card.version)):
        if got != expected:
            line = yamlio.line_of(text, [field]) if text is not None else None
            problems.append(
                Problem(path, f"is {got!r} but the card sits in the folder for {expected!r}; "
                        "a card must describe the version folder it is in", line, field)
            )
    return problems


def duplicate_artifact_problems(card: Card, path: str, text: str | bytes | None) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for index, artifact in enumerate(card.artifacts):
        if artifact.path in seen:
            line = yamlio.line_of(text, ["artifacts", index]) if text is not None else None
            problems.append(Problem(path, f"{artifact.path!r} is listed twice", line, f"artifacts[{index}].path"))
        seen.add(artifact.path)
    return problems
