"""`registry validate`: schema and consistency of a registry's files.

Each YAML file is parsed and schema-checked once per content: results are cached
under the git directory keyed on the file's blob id (and the schemas' fingerprint),
so a second run over an unchanged registry reads the cache instead of the files.
Cross-file checks (card ↔ folder ↔ pointer ↔ stages) run every time on the cached facts.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import Problem, ValidationError
from registry.files import cards, config, schemas, stages, yamlio
from registry.files.cards import Artifact
from registry.files.names import MODEL_NAME_RE, Version
from registry.queries import consistency
from registry.repo import git, storage
from registry.repo.blobcache import BlobCache
from registry.repo.registry import MODEL_FILE, MODELS_DIR, Registry

CACHE_NAME = "validate-cache"
DVC_CACHE = ".dvc/cache"  # DVC's default local cache, where `registry register` leaves the weights
_CARD = re.compile(rf"{MODELS_DIR}/([^/]+)/([^/]+)/card\.yaml")


@dataclass
class _Facts:
    """What one file says, as far as the cross-file checks need it."""

    problems: list[Problem] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def kind_of(path: str) -> str | None:
    """Which schema a registry path is checked against (pointer for DVC files), or None."""
    parts = path.split("/")
    if path == config.CONFIG_FILE:
        return "registry"
    if len(parts) == 3 and parts[0] == MODELS_DIR and parts[2] == MODEL_FILE:
        return "model"
    if len(parts) == 3 and parts[0] == MODELS_DIR and parts[2] == stages.STAGES_FILE:
        return "stages"
    if len(parts) == 4 and parts[0] == MODELS_DIR and parts[3] == cards.CARD_FILE:
        return "card"
    if len(parts) == 4 and parts[0] == MODELS_DIR and parts[3].endswith(".dvc"):
        return "pointer"
    return None


def check_file(kind: str, text: bytes, path: str) -> _Facts:
    facts = _Facts()
    try:
        if kind == "pointer":
            pointer = storage.parse_pointer(text, path)
            facts.data = {"md5": pointer.md5, "size": pointer.size, "path": pointer.path}
            return facts
        data = yamlio.loads(text, path)
        facts.problems = schemas.validate(kind, data, path, text)
        if facts.problems:
            return facts
        if kind == "card":
            facts.data = {"name": data["name"], "version": data["version"], "artifacts": data["artifacts"]}
        elif kind == "stages":
            held = stages.Stages.from_data(data)
            facts.problems = stages.duplicate_problems(held, path, text)
            facts.data = {"assignments": held.assignments()}
    except ValidationError as exc:
        facts.problems = list(exc.problems)
    return facts


class _Cache:
    """Per-file results keyed on "kind:blob id"."""

    def __init__(self, reg: Registry) -> None:
        self.store = BlobCache(reg.root, CACHE_NAME, schemas.fingerprint())

    def get(self, blob: str | None, kind: str) -> _Facts | None:
        hit = self.store.get(f"{kind}:{blob}") if blob else None
        if hit is None:
            return None
        return _Facts([Problem(*p) for p in hit["p"]], hit["d"])

    def put(self, blob: str | None, kind: str, facts: _Facts) -> None:
        if blob:
            self.store.put(f"{kind}:{blob}", {
                "p": [[p.path, p.message, p.line, p.field] for p in facts.problems], "d": facts.data,
            })

    def save(self) -> None:
        self.store.save()


@dataclass(frozen=True)
class _Listing:
    index: dict[str, str]  # blob ids of tracked files whose work-tree copy matches the index
    present: set[str]  # every file present (tracked, or untracked and not ignored)
    modes: dict[str, str]  # git mode of each present file (a work-tree symlink is 120000)
    tracked: set[str]  # every file in the index


def _tracked(reg: Registry) -> _Listing:
    index: dict[str, str] = {}
    modes: dict[str, str] = {}
    for path, (mode, blob) in git.index_entries(reg.root).items():
        index[path], modes[path] = blob, mode

    tracked = set(index)
    deleted, modified = git.worktree_changes(reg.root)
    present = (tracked - deleted) | git.listed_files(reg.root, "-o", "--exclude-standard", "--", MODELS_DIR, config.CONFIG_FILE)
    for path in modified:
        index.pop(path, None)  # changed in the work tree: read it from disk, not the cache
    root = str(reg.root) + os.sep  # plain strings: this runs once per file of the registry
    for path in present:
        if modes.get(path) != consistency.SUBMODULE:
            modes[path] = consistency.SYMLINK if os.path.islink(root + path) else modes.get(path, "100644")
    return _Listing(index, present, {p: m for p, m in modes.items() if p in present}, tracked)


def validate(reg: Registry, paths: list[Path] | None = None) -> list[Problem]:
    """Every problem found, sorted by file and line; an empty list means valid."""
    listed = _tracked(reg)
    index, present = listed.index, listed.present
    if paths:
        selected = set()
        for given in paths:
            target = given.resolve()
            try:
                rel = target.relative_to(reg.root).as_posix()
            except ValueError:
                return [Problem(str(given), "is outside the registry at " + str(reg.root))]
            if target.is_dir():
                prefix = "" if rel == "." else rel + "/"
                selected |= {p for p in present if p.startswith(prefix)}
            elif rel in present or target.exists():
                selected.add(rel)
                present.add(rel)
            else:
                return [Problem(str(given), "file not found")]
    else:
        selected = set(present)
    cache = _Cache(reg)
    facts: dict[str, _Facts] = {}
    for path in sorted(present):
        kind = kind_of(path)
        if kind is None:
            continue
        blob = index.get(path)
        found = cache.get(blob, kind)
        if found is None:
            try:
                text = yamlio.read_bytes(reg.root / path, path)
            except ValidationError as exc:
                found = _Facts(list(exc.problems))
            else:
                found = check_file(kind, text, path)
                cache.put(blob, kind, found)
        facts[path] = found
    problems = _consistency(reg, listed, facts, cache)
    cache.save()
    for fact in facts.values():
        problems.extend(fact.problems)
    if config.CONFIG_FILE not in present:
        problems.append(Problem(config.CONFIG_FILE, "missing; every registry has one (`{}` takes the defaults)"))
    wanted = [p for p in problems if p.path in selected or not paths]
    return sorted(set(wanted), key=lambda p: (p.path, p.line or 0, p.message))


class _WorkTree:
    """The work tree as the consistency rule reads it, from the facts parsed (and cached) above."""

    require_bytes = False  # weights not pulled from DVC are not there to check, and that is fine

    def __init__(self, reg: Registry, listed: _Listing, facts: dict[str, _Facts], cache: _Cache) -> None:
        self.reg, self.listed, self.facts, self.cache = reg, listed, facts, cache
        self._modes = {p: m for p, m in listed.modes.items() if p.startswith(f"{MODELS_DIR}/")}
        self._cards: dict[str, consistency.CardFacts | None] = {}
        self._root = str(reg.root) + os.sep  # plain strings: these run once per file of the registry

    def files(self) -> Mapping[str, str]:
        return self._modes

    def tracked(self, path: str) -> bool:
        return path in self.listed.tracked

    def read(self, path: str) -> bytes | None:
        if self._modes.get(path) not in consistency.REGULAR:
            return None
        try:
            with open(self._root + path, "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def card(self, path: str) -> consistency.CardFacts | None:
        if path not in self._cards:
            fact = self.facts.get(path)
            self._cards[path] = None if fact is None or fact.problems or not fact.data else consistency.CardFacts(
                fact.data["name"], fact.data["version"], tuple(Artifact(**a) for a in fact.data["artifacts"]))
        return self._cards[path]

    def pointer_size(self, path: str) -> tuple[bool, int | None]:
        fact = self.facts.get(path)
        if fact is None or fact.problems:
            return False, None
        return True, fact.data.get("size")

    def assignments(self, model: str) -> list[tuple[str, str]] | None:
        fact = self.facts.get(f"{MODELS_DIR}/{model}/{stages.STAGES_FILE}")
        if fact is None or fact.problems:
            return None
        return [(str(v), str(s)) for v, s in fact.data.get("assignments", [])]

    def dvc_digest(self, model: str, version: str, artifact: Artifact) -> tuple[str, int] | None:
        """sha256 and size of the artifact's bytes in the work tree, as the card records them.

        The gate checks the bytes the DVC pointer names (it fetches them by the pointer's md5), so
        validate checks those too when DVC's local cache holds them, and the work-tree copy as
        before: the first that disagrees with the card is the one reported. Weights not pulled
        into the work tree are not checked.
        """
        if _regular(f"{self._root}{MODELS_DIR}/{model}/{version}/{artifact.path}") is None:
            return None
        local = self.reg.root / MODELS_DIR / model / version / artifact.path
        pointer = self.facts.get(f"{MODELS_DIR}/{model}/{version}/{artifact.path}.dvc")
        md5 = pointer.data.get("md5") if pointer is not None and not pointer.problems else None
        cache_object = storage.object_url(str(self.reg.root / DVC_CACHE), md5) if isinstance(md5, str) else None
        pointed = self._digest(Path(cache_object)) if cache_object else None
        if pointed is not None and pointed != (artifact.sha256, artifact.size):
            return pointed
        return self._digest(local)

    def _digest(self, local: Path) -> tuple[str, int] | None:
        """A regular file's sha256 and size, cached on (path, size, mtime, inode): weights are large."""
        info = _regular(local)
        if info is None:
            return None
        key = f"digest:{self.reg.rel(local)}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
        hit = self.cache.store.get(key)
        if isinstance(hit, dict) and isinstance(hit.get("sha256"), str) and isinstance(hit.get("size"), int):
            return hit["sha256"], hit["size"]
        digest, size = storage.file_digest(local)
        self.cache.store.put(key, {"sha256": digest, "size": size})
        return digest, size


def _regular(path: Path | str) -> os.stat_result | None:
    """The file's lstat when it is a regular file (never through a symlink at its name)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _consistency(reg: Registry, listed: _Listing, facts: dict[str, _Facts], cache: _Cache) -> list[Problem]:
    """The one consistency rule (registry.queries.consistency) over every file of the work tree."""
    tree = _WorkTree(reg, listed, facts, cache)
    files = tree.files()
    folders = consistency.folders_of(files)
    versions: set[tuple[str, str]] = set()
    models: set[str] = set()
    elsewhere = []  # files outside a version folder; version_problems looks at the others
    for path in files:
        parts = path.split("/")
        if len(parts) >= 3 and MODEL_NAME_RE.fullmatch(parts[1]):
            models.add(parts[1])
            if len(parts) >= 4 and Version.is_valid(parts[2]):
                versions.add((parts[1], parts[2]))
                continue
        elsewhere.append(path)
    problems = consistency.path_problems(tree, elsewhere, folders)
    for model, version in sorted(versions):
        problems += consistency.version_problems(tree, model, version, folders)
    for model in sorted(models):
        problems += consistency.model_problems(tree, model) + consistency.stages_problems(tree, model)
    return list(dict.fromkeys(problems))


__all__ = ["validate"]
