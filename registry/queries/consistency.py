"""The one consistency rule: card ↔ folder ↔ DVC pointer ↔ bytes, and every file under models/.

`registry validate` asks it about the work tree, the consistency gate about a pull
request's head commit: one rule, one set of messages. What it needs of either comes
through a :class:`Tree`.

Every file under ``models/`` is one of
- ``models/<model>/model.yaml`` or ``models/<model>/stages.yaml``;
- ``models/<model>/<version>/`` ``card.yaml``, ``signature.json`` or ``.gitignore`` (DVC's; also
  in a subfolder holding an artifact the card stores in DVC);
- an artifact the version's card lists, by its full path in the version folder
  (``onnx/model.onnx`` when the card lists ``onnx/model.onnx``), or the ``.dvc`` pointer of
  one the card stores in DVC;
and is a regular file: a symbolic link or a submodule is refused wherever it is. Anything
else (a file directly under ``models/`` or a model folder, a folder that is not a semantic
version such as ``1.3.0.bak/`` or ``latest/``, a nested ``sub/card.yaml``) is a problem
naming the path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from registry.errors import Problem, RegistryError
from registry.files import cards, stages, yamlio
from registry.files.cards import Artifact
from registry.files.layout import MODEL_FILE, MODELS_DIR
from registry.files.names import MODEL_NAME_RE, Version

VERSION_FILES = (cards.CARD_FILE, "signature.json", ".gitignore")
MODEL_FILES = (MODEL_FILE, stages.STAGES_FILE)
SYMLINK, SUBMODULE = "120000", "160000"
REGULAR = ("100644", "100755")  # git modes of plain files


@dataclass(frozen=True)
class CardFacts:
    """What the rule needs of a card that passed its schema."""

    name: str
    version: str
    artifacts: tuple[Artifact, ...]


class Tree(Protocol):
    """A registry's files as the rule sees them: a commit's tree or a work tree."""

    def files(self) -> Mapping[str, str]:
        """Path (from the registry root) → git mode, of every file the rule may look at."""

    def tracked(self, path: str) -> bool:
        """Whether the file is committed to git (for a work tree: in the index)."""

    def read(self, path: str) -> bytes | None:
        """The file's bytes; None when it is missing or not a regular file."""

    def card(self, path: str) -> CardFacts | None:
        """The card at path; None when it is missing or invalid (the schema check reports that)."""

    def pointer_size(self, path: str) -> tuple[bool, int | None]:
        """(whether the DVC pointer at path is valid, the size it records)."""

    def assignments(self, model: str) -> list[tuple[str, str]] | None:
        """(version, stage) pairs of the model's stages.yaml; None when missing or invalid."""

    def dvc_digest(self, model: str, version: str, artifact: Artifact) -> tuple[str, int] | None:
        """sha256 and size of a DVC-stored artifact's bytes; None when they are not at hand.

        May raise RegistryError when fetching them fails.
        """

    @property
    def require_bytes(self) -> bool:
        """Whether a DVC artifact whose bytes are not at hand is a problem."""


Folders = Mapping[str, Sequence[str]]


def folders_of(files: Iterable[str]) -> dict[str, list[str]]:
    """The files of each version folder (`models/<model>/<version>`), in one pass."""
    found: dict[str, list[str]] = {}
    for path in files:
        parts = path.split("/", 3)
        if len(parts) == 4 and parts[0] == MODELS_DIR:
            found.setdefault("/".join(parts[:3]), []).append(path)
    return found


def path_problems(tree: Tree, paths: Iterable[str], folders: Folders | None = None) -> list[Problem]:
    """Each path under models/ that is not a registry file or an artifact its card lists.

    folders: `folders_of(tree.files())`, when the caller has it already.
    """
    files = tree.files()
    problems: list[Problem] = []
    for path in sorted(set(paths)):
        mode = files.get(path)
        parts = path.split("/")
        if mode is None or parts[0] != MODELS_DIR or len(parts) < 2:
            continue
        if mode == SYMLINK:
            problems.append(Problem(path, "is a symbolic link; a registry holds regular files only "
                                    "(commit the file itself)"))
            continue
        if mode == SUBMODULE:
            problems.append(Problem(path, "is a git submodule; a registry holds regular files only"))
            continue
        if len(parts) == 2:
            problems.append(Problem(path, "stray file: models/ holds one folder per model"))
            continue
        model = parts[1]
        if not MODEL_NAME_RE.fullmatch(model):
            problems.append(Problem(path, f"{model!r} is not a valid model name (lowercase letters, digits, '-')"))
            continue
        if len(parts) == 3:
            if parts[2] not in MODEL_FILES:
                problems.append(Problem(path, "stray file: a model folder holds model.yaml, stages.yaml and "
                                        "version folders"))
            continue
        version = parts[2]
        if not Version.is_valid(version):
            problems.append(Problem(path, f"{version!r} is not a semantic version folder (e.g. 1.2.0)"))
            continue
        folder = f"{MODELS_DIR}/{model}/{version}"
        card_path = f"{folder}/{cards.CARD_FILE}"
        if card_path not in files:
            if folders is None:
                folders = folders_of(files)
            problems.append(_no_card(tree, folder, folders))
            continue
        rel = "/".join(parts[3:])
        if rel in VERSION_FILES:
            continue
        card = tree.card(card_path)
        if card is None:
            continue  # an invalid card: the schema check reports it, and the version cannot pass
        listed = {a.path: a for a in card.artifacts}
        pointed = {f"{a.path}.dvc" for a in card.artifacts if a.storage == "dvc"}
        if rel in listed:
            if listed[rel].storage == "dvc" and tree.tracked(path):
                problems.append(Problem(path, f"is committed to git, but the card stores {rel} in DVC "
                                        f"(through {rel}.dvc): git rm --cached it"))
            continue
        if rel in pointed:
            continue
        if rel.endswith("/.gitignore") and any(a.path.startswith(rel[: -len(".gitignore")])
                                               for a in card.artifacts if a.storage == "dvc"):
            continue  # DVC's, next to a nested artifact it tracks (onnx/.gitignore for onnx/model.onnx)
        problems.append(Problem(path, "is not listed in card.yaml's artifacts; list it there by its path in "
                                "the version folder, or remove it"))
    return problems


def _no_card(tree: Tree, folder: str, folders: Folders) -> Problem:
    untracked = not any(tree.tracked(p) for p in folders.get(folder, ()))
    hint = ("; its files are untracked: left over from a registration on another branch? "
            "(git keeps untracked files when you switch) Switch back, or delete the folder" if untracked else "")
    return Problem(folder, "version folder has no card.yaml" + hint)


def version_problems(tree: Tree, model: str, version: str, folders: Folders | None = None) -> list[Problem]:
    """Everything about one version folder: its files, its card against the folder, each artifact's
    pointer and bytes (size and sha256). folders: as for `path_problems`."""
    folder = f"{MODELS_DIR}/{model}/{version}"
    card_path = f"{folder}/{cards.CARD_FILE}"
    files = tree.files()
    if folders is None:
        folders = folders_of(files)
    problems = path_problems(tree, folders.get(folder, ()), folders)
    if card_path not in files:
        return problems if problems else [_no_card(tree, folder, folders)]
    card = tree.card(card_path)
    if card is None:
        return problems  # the schema check reports it, with lines
    text = tree.read(card_path)

    def line(field_path: list[str | int]) -> int | None:
        return yamlio.line_of(text, field_path) if text is not None else None

    for field_name, expected, got in (("name", model, card.name), ("version", version, card.version)):
        if got != expected:
            problems.append(Problem(card_path, f"is {got!r} but the card sits in {folder}; a card describes "
                                    "the folder it is in", line([field_name]), field_name))
    seen: set[str] = set()
    for i, artifact in enumerate(card.artifacts):
        where, name = f"artifacts[{i}]", artifact.path
        if name in seen:
            problems.append(Problem(card_path, f"{name!r} is listed twice", line(["artifacts", i]), f"{where}.path"))
            continue
        seen.add(name)
        file_path = f"{folder}/{name}"
        if artifact.storage == "git":
            if file_path not in files:
                problems.append(Problem(card_path, f"{name} is stored in git but {file_path} is missing",
                                        line(["artifacts", i]), where))
                continue
            data = tree.read(file_path)
            if data is None:
                continue  # a symlink or submodule: path_problems named it
            found: tuple[str, int] | None = (hashlib.sha256(data).hexdigest(), len(data))
        else:
            pointer_path = f"{file_path}.dvc"
            if pointer_path not in files:
                problems.append(Problem(card_path, f"{name} is stored in DVC but {pointer_path} is missing; "
                                        "register the version again", line(["artifacts", i]), where))
                continue
            valid, size = tree.pointer_size(pointer_path)
            if not valid:
                continue  # the schema check reports the pointer
            if size not in (None, artifact.size):
                pointer_text = tree.read(pointer_path)
                problems.append(Problem(pointer_path, f"size {size} disagrees with the card's {artifact.size} "
                                        f"for {name}", yamlio.line_of(pointer_text, ["outs", 0, "size"])
                                        if pointer_text is not None else None, "outs[0].size"))
                continue
            try:
                found = tree.dvc_digest(model, version, artifact)
            except RegistryError as exc:
                problems.append(Problem(file_path, f"cannot fetch the bytes to verify them: {exc}"))
                continue
            if found is None and tree.require_bytes:
                problems.append(Problem(file_path, "not available from DVC to verify"))
        if found is None:
            continue
        digest, size_found = found
        if size_found != artifact.size or digest != artifact.sha256:
            problems.append(Problem(card_path, f"{file_path} is {size_found} bytes with sha256 {digest}; "
                                    f"the card says {artifact.size} bytes, {artifact.sha256}",
                                    line(["artifacts", i]), where))
    return problems


def model_problems(tree: Tree, model: str) -> list[Problem]:
    """A model folder has a model.yaml."""
    folder = f"{MODELS_DIR}/{model}"
    if f"{folder}/{MODEL_FILE}" in tree.files():
        return []
    return [Problem(folder, "model folder has no model.yaml")]


def stages_problems(tree: Tree, model: str) -> list[Problem]:
    """stages.yaml names only registered versions."""
    path = f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}"
    held = tree.assignments(model)
    if not held:
        return []
    files = tree.files()
    text = tree.read(path)
    return [Problem(path, f"names {model}@{version}, which is not registered",
                    yamlio.line_of(text, [stage]) if text is not None else None, stage)
            for version, stage in held if f"{MODELS_DIR}/{model}/{version}/{cards.CARD_FILE}" not in files]


def version_of(path: str) -> tuple[str | None, str | None]:
    """(model, version) a problem's path belongs to, as far as it names them."""
    parts = path.split("/")
    model = parts[1] if len(parts) > 1 and parts[0] == MODELS_DIR else None
    version = parts[2] if len(parts) > 2 and Version.is_valid(parts[2]) else None
    return model, version
