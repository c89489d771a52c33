"""card.yaml: a version's model card, parsed and checked against its folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import Problem, ValidationError
from registry.files import yamlio
from registry.files.layout import CARD_FILE as CARD_FILE

SCHEMA_REF = f"../../../{yamlio.REPO_SCHEMA_DIR}/card.schema.json"
# The fields `register` fills in; a card given to it may leave them out.
FILLED_BY_REGISTER = ("name", "version", "created", "artifacts")
KEY_ORDER = (
    "name", "version", "description", "created", "creator", "framework", "task", "algorithm",
    "metrics", "artifacts", "entrypoint", "environment", "signature", "input_example", "hyperparameters",
    "training", "evaluation", "features", "preprocessing", "intended_use", "limitations",
    "ethical_considerations", "explainability", "tags", "purged",
)


# An artifact's path in the version folder: relative, maybe nested (`onnx/model.onnx`), each part
# of ASCII letters, digits and _.+-, none a dot-file (so no `.`, `..`, `.gitignore`) or a DVC
# pointer name, and never one of the version folder's own files at any depth. The card schema's
# `artifacts[].path` pattern says the same; tests/test_hf_folders.py holds them together.
ARTIFACT_PART_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-")
RESERVED_NAMES = frozenset({CARD_FILE, "signature.json"})
MAX_PART, MAX_PATH = 255, 1024


def artifact_path_problem(path: str) -> str | None:
    """Why path cannot name an artifact in a version folder (a sentence to follow the path that
    is shown); None when it can."""
    if not path or len(path) > MAX_PATH:
        return f"artifact paths are 1 to {MAX_PATH} characters long"
    if path.startswith("/"):
        return f"{path!r} is absolute; artifact paths are relative to the version folder"
    for part in path.split("/"):
        where = f" (in {path!r})" if part != path else ""
        if part == "..":
            return f"{path!r} climbs out of the version folder with '..'; artifact paths stay inside it"
        if not part:
            return f"{path!r} has an empty part ('//' or a trailing '/')"
        if part.startswith(".") or part.endswith(".dvc") or part in RESERVED_NAMES:
            return (f"the name {part!r}{where} is reserved: card.yaml, signature.json, *.dvc and "
                    "dot-files are the registry's, git's and DVC's own; rename the file")
        if not all(c in ARTIFACT_PART_CHARS for c in part) or len(part) > MAX_PART:
            return (f"file names may use ASCII letters, digits and _.+- only (at most {MAX_PART} "
                    f"characters){where}; rename {part!r}")
    return None


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


def read_fields(folder: Path, label: str | None = None) -> Mapping[str, Any]:
    """A verified version folder's card.yaml as its YAML mapping, without the schema check (what
    model servers and their adapters read: entrypoint, input_example, environment, signature).

    `registry pull` verified the folder, card included; this only parses it. ValidationError
    when it is not YAML or not a mapping (naming `label`, else the file's path)."""
    shown = label or str(folder / CARD_FILE)
    data = yamlio.load_file(folder / CARD_FILE, shown)
    if not isinstance(data, Mapping):
        raise ValidationError([Problem(shown, "not a model card (a YAML mapping is expected)")])
    return data


def parse(text: str | bytes, path: str) -> Card:
    from registry.files import schemas

    data = yamlio.loads(text, path)
    problems = schemas.validate("card", data, path, text)
    if problems:
        raise ValidationError(problems)
    card = Card.from_data(data)
    problems = environment_problems(card, path, text)
    if problems:
        raise ValidationError(problems)
    return card


def environment_problems(card: Card, path: str, text: str | bytes | None) -> list[Problem]:
    """The card's `environment` must name one of its artifacts (the requirements file itself)."""
    environment = card.data.get("environment")
    if environment is None or any(a.path == environment for a in card.artifacts):
        return []
    line = yamlio.line_of(text, ["environment"]) if text is not None else None
    return [Problem(path, f"{environment!r} is not one of the card's artifacts; register the requirements "
                    "file with the version (`--artifact requirements.txt`) so the gates can build the "
                    "model's environment from it", line, "environment")]


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
