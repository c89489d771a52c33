"""A registry on disk: where its files are and how to read them from the work tree."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import NotARegistryError, ValidationError
from registry.files import stages, yamlio
from registry.files.layout import CARD_FILE, CONFIG_FILE
from registry.files.layout import MODEL_FILE as MODEL_FILE
from registry.files.layout import MODELS_DIR as MODELS_DIR
from registry.files.names import MODEL_NAME_RE, Version

if TYPE_CHECKING:
    from registry.files.cards import Card
    from registry.files.config import RegistryConfig


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    owners: tuple[str, ...]
    task: str | None
    tags: dict[str, object]


def parse_model_info(name: str, text: bytes, rel: str) -> ModelInfo:
    """A model.yaml's bytes (from the work tree or a commit) as ModelInfo, schema-checked."""
    from registry.files import schemas

    data = yamlio.loads(text, rel) or {}
    problems = schemas.validate("model", data, rel, text)
    if problems:
        raise ValidationError(problems)
    return ModelInfo(
        name=name,
        description=data.get("description", ""),
        owners=tuple(data.get("owners", [])),
        task=data.get("task"),
        tags=dict(data.get("tags", {})),
    )


def _worktree_top(start: Path) -> Path | None:
    """The nearest folder holding .git, as `git rev-parse --show-toplevel` finds it when no
    GIT_* variable redirects git; None sends the caller to git itself (no process spawned here)."""
    if any(name in os.environ for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_CEILING_DIRECTORIES")):
        return None
    for folder in (start, *start.parents):
        marker = folder / ".git"
        if marker.is_dir() or marker.is_file():
            return folder
    return None


# Version folders picked out of one NUL-joined directory listing (no file name holds a NUL)
# with one regex call per model instead of Python work per folder: plain X.Y.Z names are
# keyed straight from the match; the rare pre-release or build names go through Version.
_PLAIN_VERSIONS = re.compile(r"(?<![^\0])(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?![^\0])")
_OTHER_VERSIONS = re.compile(r"(?<![^\0])[0-9][^\0]*[-+][^\0]*(?![^\0])")


def version_folders(names: list[str]) -> list[tuple[tuple[Any, ...], str]]:
    """(semver sort key, name) for each entry of a listing that is a semantic version."""
    listing = "\0".join(names)
    keyed: list[tuple[tuple[Any, ...], str]] = [
        ((int(major), int(minor), int(patch), 1, ()), f"{major}.{minor}.{patch}")
        for major, minor, patch in _PLAIN_VERSIONS.findall(listing)
    ]
    if "-" in listing or "+" in listing:
        keyed += [(Version.parse(n).sort_key(), n) for n in _OTHER_VERSIONS.findall(listing) if Version.is_valid(n)]
    return keyed


def version_sort_key(text: str) -> tuple[object, ...]:
    """Semver precedence as a plain tuple, so sorting compares tuples in C (text already valid)."""
    if "-" not in text and "+" not in text:
        major, minor, patch = text.split(".")
        return (int(major), int(minor), int(patch), 1, ())
    return Version.parse(text).sort_key()


class Registry:
    """A registry repository's work tree. Create with :func:`registry.open`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def find(cls, start: Path | str = ".") -> Registry:
        start = Path(start).resolve()
        if not start.is_dir():
            raise NotARegistryError(f"{start}: no such directory")
        top = _worktree_top(start)
        if top is None:
            from registry.repo import git

            top = git.toplevel(start)
        if top is None or not (top / CONFIG_FILE).is_file():
            where = top or start
            raise NotARegistryError(
                f"{where}: not a registry (no {CONFIG_FILE} at the top of a git repository); "
                "run `registry init` to make one, or cd into one"
            )
        return cls(top)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @cached_property
    def config(self) -> RegistryConfig:
        from registry.files.config import load

        return load(self.root)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def model_dir(self, name: str) -> Path:
        return self.root / MODELS_DIR / name

    def version_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / version

    def model_names(self) -> list[str]:
        # os.scandir and plain strings: a registry holds thousands of models.
        try:
            entries = os.scandir(os.path.join(self.root, MODELS_DIR))
        except FileNotFoundError:
            return []
        with entries:
            return sorted(e.name for e in entries if e.is_dir() and MODEL_NAME_RE.fullmatch(e.name))

    def has_model(self, name: str) -> bool:
        return (self.model_dir(name) / MODEL_FILE).is_file()

    def require_version(self, name: str, version: str) -> None:
        """Refuse (usage error) a bad name or version, an unknown model or an unregistered version."""
        from registry.errors import UsageError
        from registry.files.names import check_model_name, check_version

        check_model_name(name)
        check_version(version)
        if not self.has_model(name):
            raise UsageError(f"no model named {name!r} in this registry; see `registry ls`")
        if version not in self.versions(name):
            raise UsageError(f"{name}@{version} is not registered; see `registry show {name}` for its versions")

    def versions(self, name: str) -> list[str]:
        """Registered versions (folders holding a card.yaml), oldest first by semver."""
        base = os.path.join(self.root, MODELS_DIR, name)
        try:
            entries = os.scandir(base)
        except FileNotFoundError:
            return []
        with entries:
            found = [e.name for e in entries if e.is_dir() and Version.is_valid(e.name)]
        found = [v for v in found if os.path.isfile(os.path.join(base, v, CARD_FILE))]
        return sorted(found, key=version_sort_key)

    def latest_version(self, name: str) -> str | None:
        """The highest registered version: one card lookup, not one per version."""
        base = os.path.join(self.root, MODELS_DIR, name)
        try:
            names = os.listdir(base)  # names only, in C: the card lookup below is the real test
        except FileNotFoundError:
            return None
        keyed = version_folders(names)
        while keyed:  # usually one round: the highest version has its card
            best = max(keyed)
            if os.path.isfile(os.path.join(base, best[1], CARD_FILE)):
                return best[1]
            keyed.remove(best)
        return None

    def stages(self, name: str) -> stages.Stages:
        rel = f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}"
        try:
            text = yamlio.read_present(os.path.join(self.root, rel), rel)
        except OSError:
            text = yamlio.read_bytes(self.root / rel, rel)  # reports why, with the path
        if text is None:
            return stages.Stages()
        return stages.parse(text, rel)

    def card(self, name: str, version: str) -> Card:
        from registry.files import cards

        path = self.version_dir(name, version) / CARD_FILE
        if not path.is_file():
            raise ValidationError.one(
                self.rel(path), f"{name}@{version} is not registered (no card); "
                "see `registry show " + name + "` for its versions"
            )
        rel = self.rel(path)
        text = yamlio.read_bytes(path, rel)
        card = cards.parse(text, rel)
        problems = cards.folder_problems(card, name, version, rel, text)
        if problems:
            raise ValidationError(problems)
        return card

    def model_info(self, name: str) -> ModelInfo:
        path = self.model_dir(name) / MODEL_FILE
        rel = self.rel(path)
        return parse_model_info(name, yamlio.read_bytes(path, rel), rel)

    def resolve(self, name: str, stage: str = "production", at: str | None = "main") -> str | None:
        """The version that holds stage (the newest one for staging) on main, or None.

        `at` names another commit, branch or tag; None reads the work tree (the checked-out
        branch, e.g. an unmerged promotion). Main is the default because merging is what
        promotes: a PR branch's stages are a proposal."""
        from registry.errors import UsageError
        from registry.files.names import ALL_STAGES, check_model_name
        from registry.repo import git

        check_model_name(name)
        if stage not in ALL_STAGES or stage == "development":
            raise UsageError(f"unknown stage {stage!r}")
        if at is None:
            held = self.stages(name)
        else:
            rel = f"{MODELS_DIR}/{name}/{stages.STAGES_FILE}"
            with git.CatFile(self.root) as cat:
                [(commit, _)] = cat.read_many_with_ids([f"{at}^{{commit}}"]) if "\n" not in at else [(None, None)]
                if commit is None:
                    raise UsageError(f"at={at!r}: no such commit, branch or tag in this registry")
                blob = cat.read(f"{commit}:{rel}")
            held = stages.parse(blob, rel) if blob is not None else stages.Stages()
        versions = held.versions_in(stage)
        return max(versions, key=Version.parse) if versions else None
