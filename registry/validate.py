"""`registry validate`: schema and consistency of a registry's files.

Each YAML file is parsed and schema-checked once per content: results are cached
under the git directory keyed on the file's blob id (and the schemas' fingerprint),
so a second run over an unchanged registry reads the cache instead of the files.
Cross-file checks (card ↔ folder ↔ pointer ↔ stages) run every time on the cached facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry import cards, config, git, schemas, stages, storage, yamlio
from registry.blobcache import BlobCache
from registry.errors import Problem, ValidationError
from registry.names import MODEL_NAME_RE, Version
from registry.repo import MODEL_FILE, MODELS_DIR, Registry

CACHE_NAME = "validate-cache"
VERSION_FILES = {cards.CARD_FILE, "signature.json", ".gitignore"}
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


def _tracked(reg: Registry) -> tuple[dict[str, str], set[str]]:
    """Blob ids of tracked files whose work-tree copy matches the index, and every file present."""
    index: dict[str, str] = {}
    for record in git.run(["ls-files", "-s", "-z"], reg.root).split("\0"):
        if record:
            meta, _, path = record.partition("\t")
            index[path] = meta.split()[1]

    def listing(*args: str) -> set[str]:
        return {p for p in git.run(["ls-files", "-z", *args], reg.root).split("\0") if p}

    deleted = listing("-d")
    present = (set(index) - deleted) | listing("-o", "--exclude-standard", "--", MODELS_DIR, config.CONFIG_FILE)
    for path in listing("-m") | deleted:
        index.pop(path, None)  # changed in the work tree: read it from disk, not the cache
    return index, present


def validate(reg: Registry, paths: list[Path] | None = None) -> list[Problem]:
    """Every problem found, sorted by file and line; an empty list means valid."""
    index, present = _tracked(reg)
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
    cache.save()
    problems = _consistency(reg, present, facts, index)
    for fact in facts.values():
        problems.extend(fact.problems)
    if config.CONFIG_FILE not in present:
        problems.append(Problem(config.CONFIG_FILE, "missing; every registry has one (`{}` takes the defaults)"))
    wanted = [p for p in problems if p.path in selected or not paths]
    return sorted(set(wanted), key=lambda p: (p.path, p.line or 0, p.message))


def _consistency(reg: Registry, present: set[str], facts: dict[str, _Facts], index: dict[str, str]) -> list[Problem]:
    problems: list[Problem] = []
    version_files: dict[tuple[str, str], set[str]] = {}
    models: set[str] = set()
    for path in present:
        parts = path.split("/")
        if parts[0] != MODELS_DIR or len(parts) < 2:
            continue
        model = parts[1]
        if len(parts) == 2:
            problems.append(Problem(path, "stray file: models/ holds one folder per model"))
            continue
        if not MODEL_NAME_RE.fullmatch(model):
            problems.append(Problem(path, f"{model!r} is not a valid model name (lowercase letters, digits, '-')"))
            continue
        models.add(model)
        if len(parts) == 3:
            if parts[2] not in (MODEL_FILE, stages.STAGES_FILE):
                problems.append(Problem(path, "stray file: a model folder holds model.yaml, stages.yaml and version folders"))
            continue
        version = parts[2]
        if not Version.is_valid(version):
            problems.append(Problem(path, f"{version!r} is not a semantic version folder (e.g. 1.2.0)"))
            continue
        if len(parts) > 4:
            problems.append(Problem(path, "version folders are flat: no sub-folders"))
            continue
        version_files.setdefault((model, version), set()).add(parts[3])

    registered: dict[str, set[str]] = {}
    for (model, version), files in sorted(version_files.items()):
        folder = f"{MODELS_DIR}/{model}/{version}"
        card_path = f"{folder}/{cards.CARD_FILE}"
        if cards.CARD_FILE not in files:
            untracked = all(f"{folder}/{f}" not in index for f in files)
            hint = ("; its files are untracked: left over from a registration on another branch? "
                    "(git keeps untracked files when you switch) Switch back, or delete the folder"
                    if untracked else "")
            problems.append(Problem(folder, "version folder has no card.yaml" + hint))
            continue
        registered.setdefault(model, set()).add(version)
        card = facts[card_path]
        if card.problems or not card.data:
            continue
        for field_name, expected in (("name", model), ("version", version)):
            if card.data[field_name] != expected:
                problems.append(Problem(
                    card_path, f"is {card.data[field_name]!r} but the card sits in {folder}; "
                    "a card describes the folder it is in", _line(reg, card_path, [field_name]), field_name))
        listed = set()
        for i, artifact in enumerate(card.data["artifacts"]):
            name, size, storage_kind = artifact["path"], artifact["size"], artifact["storage"]
            listed.add(name)
            where = f"artifacts[{i}]"
            if storage_kind == "dvc":
                pointer_path = f"{folder}/{name}.dvc"
                listed.add(name + ".dvc")
                pointer = facts.get(pointer_path)
                if pointer is None:
                    problems.append(Problem(card_path, f"{name} is stored in DVC but {pointer_path} is missing; "
                                            "register the version again", _line(reg, card_path, ["artifacts", i]), where))
                elif not pointer.problems and pointer.data.get("size") not in (None, size):
                    problems.append(Problem(pointer_path, f"size {pointer.data['size']} disagrees with the card's "
                                            f"{size} for {name}", _line(reg, pointer_path, ["outs", 0, "size"]),
                                            "outs[0].size"))
                local = reg.root / folder / name
                if local.is_file() and local.stat().st_size != size:
                    problems.append(Problem(f"{folder}/{name}", f"is {local.stat().st_size} bytes; the card says {size}"))
            else:
                file_path = f"{folder}/{name}"
                if name not in files:
                    problems.append(Problem(card_path, f"{name} is stored in git but {file_path} is missing",
                                            _line(reg, card_path, ["artifacts", i]), where))
                    continue
                digest, actual = storage.file_digest(reg.root / file_path)
                if actual != size or digest != artifact["sha256"]:
                    problems.append(Problem(card_path, f"{file_path} is {actual} bytes with sha256 {digest[:12]}…; "
                                            f"the card says {size} bytes, {artifact['sha256'][:12]}…",
                                            _line(reg, card_path, ["artifacts", i]), where))
        for extra in sorted(files - listed - VERSION_FILES):
            problems.append(Problem(f"{folder}/{extra}", "is not listed in card.yaml's artifacts"))

    for model in sorted(models):
        folder = f"{MODELS_DIR}/{model}"
        if f"{folder}/{MODEL_FILE}" not in present:
            problems.append(Problem(folder, "model folder has no model.yaml"))
        stages_path = f"{folder}/{stages.STAGES_FILE}"
        held = facts.get(stages_path)
        if held is None or held.problems:
            continue
        for version, stage in held.data.get("assignments", []):
            if version not in registered.get(model, set()):
                problems.append(Problem(stages_path, f"names {model}@{version}, which is not registered",
                                        _line(reg, stages_path, [stage]), stage))
    return problems


def _line(reg: Registry, path: str, field_path: list[str | int]) -> int | None:
    try:
        return yamlio.line_of((reg.root / path).read_bytes(), field_path)
    except OSError:
        return None


__all__ = ["validate"]
