"""`registry gc`: apply the retention policy of registry.yaml, in two reviewed steps.

Kept, always: every version in production, canary, staging or deprecated, and the
newest `retention.keep_latest` versions of each model. Purgeable: versions in
development or archived, older than `retention.purge_unstaged_after_days` (by their
card's `created` date) and outside the newest N (`keep_reason` is that one rule; the
immutability gate asks it too, with base's policy and stages, before a `purged:` mark
may be added to a merged card).

1. `registry gc` proposes: it marks the cards `purged` in a commit on a `gc/<date>`
   branch (or the current one with `--no-branch`) and deletes nothing. The branch is a
   pull request like any other.
2. `registry gc --apply`, run after that pull request is merged, deletes the DVC objects
   of the versions whose `purged:` mark is on the default branch (origin's, when there is
   an origin) from the remote, the local cache and the work tree, unless a version that is
   not purged shares them.

History is never rewritten, so the audit trail stays whole and the purge is an audit entry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from registry.changes import branches
from registry.errors import GitError, UsageError, ValidationError
from registry.files import cards, yamlio
from registry.files.config import RegistryConfig
from registry.repo import git, storage
from registry.repo.registry import MODELS_DIR, Registry, version_sort_key

REMOVABLE_STAGES = ("development", "archived")


@dataclass(frozen=True)
class Candidate:
    model: str
    version: str
    stage: str
    created: str
    size: int  # bytes in DVC that go (shared objects excluded)
    md5s: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    candidates: tuple[Candidate, ...]
    kept: int

    @property
    def size(self) -> int:
        return sum(c.size for c in self.candidates)


def keep_reason(config: RegistryConfig, version: str, stage: str, versions: Iterable[str], created: str,
                today: dt.date) -> str | None:
    """Why the retention policy keeps a version; None when it may be purged."""
    if stage not in REMOVABLE_STAGES:
        return f"it is in {stage}; the retention policy purges only development and archived versions"
    ordered = sorted(versions, key=version_sort_key)
    if version in ordered[max(len(ordered) - config.keep_latest, 0):]:
        return f"it is one of the newest {config.keep_latest} versions, which the retention policy keeps"
    try:
        day = dt.date.fromisoformat(created[:10])
    except ValueError:
        return "its card has no valid created date"
    cutoff = today - dt.timedelta(days=config.purge_unstaged_after_days)
    if day >= cutoff:
        return (f"it was created {day.isoformat()}, less than {config.purge_unstaged_after_days} days "
                "before today; the retention policy keeps it")
    return None


def plan(reg: Registry, today: dt.date | None = None) -> Plan:
    config = reg.config
    day = today or dt.date.today()
    keep_md5s: set[str] = set()
    maybe: list[tuple[str, str, str, str, dict[str, int]]] = []
    kept = 0
    for name in reg.model_names():
        held = reg.stages(name)
        versions = reg.versions(name)
        for version in versions:
            card = reg.card(name, version)
            objects = _objects(reg, name, version, card)
            stage = held.stage_of(version)
            created = str(card.data.get("created", ""))
            if "purged" not in card.data and keep_reason(config, version, stage, versions, created, day) is None:
                maybe.append((name, version, stage, created, objects))
            else:
                kept += 1
                keep_md5s.update(objects)
    candidates = tuple(
        Candidate(name, version, stage, created,
                  sum(size for md5, size in objects.items() if md5 not in keep_md5s),
                  tuple(md5 for md5 in objects if md5 not in keep_md5s))
        for name, version, stage, created, objects in maybe
    )
    return Plan(candidates, kept)


def _objects(reg: Registry, name: str, version: str, card: cards.Card) -> dict[str, int]:
    """md5 → size of the version's DVC-stored artifacts, from their pointers."""
    found = {}
    for artifact in card.artifacts:
        if artifact.storage != "dvc":
            continue
        pointer_path = reg.version_dir(name, version) / f"{artifact.path}.dvc"
        if pointer_path.is_file():
            pointer = storage.parse_pointer(pointer_path.read_bytes(), reg.rel(pointer_path))
            found[pointer.md5] = artifact.size
    return found


def run(reg: Registry, *, dry_run: bool = False, no_branch: bool = False,
        today: dt.date | None = None) -> tuple[Plan, str | None, str | None]:
    """Propose the purge: mark the cards in a commit; returns the plan, the branch and the commit.

    No bytes are deleted here: `apply` does that once the marks are merged.
    """
    result = plan(reg, today)
    if dry_run or not result.candidates:
        return result, None, None
    dirty = git.dirty_paths(reg.root)
    if dirty:
        raise UsageError(f"the registry has uncommitted changes ({', '.join(dirty[:3])}); commit or stash them first")
    date = (today or dt.date.today()).isoformat()
    branch = None if no_branch else f"gc/{date}"
    if branch and git.rev_parse(f"refs/heads/{branch}", reg.root):
        raise UsageError(f"branch {branch} already exists; merge or delete it first")
    paths: list[str] = []

    def restore() -> None:
        git.restore_paths(reg.root, paths)

    with branches.change_on_branch(reg.root, branch, restore):
        for c in result.candidates:
            path = reg.version_dir(c.model, c.version) / cards.CARD_FILE
            card = reg.card(c.model, c.version)
            data = dict(card.data)
            data["purged"] = {"date": date, "reason": f"retention policy: {c.stage}, created {c.created}, "
                              f"outside the newest {reg.config.keep_latest}"}
            yamlio.atomic_write(path, cards.Card.from_data(data).to_text())
            paths.append(reg.rel(path))
        listing = "\n".join(f"- {c.model}@{c.version} ({c.stage}, created {c.created})" for c in result.candidates)
        message = (f"Purge {len(result.candidates)} version(s) under the retention policy\n\n{listing}\n\n"
                   f"Reason: retention policy (keep_latest {reg.config.keep_latest}, "
                   f"purge_unstaged_after_days {reg.config.purge_unstaged_after_days})\n")
        commit = git.commit_paths(reg.root, paths, message)
    return result, branch, commit


@dataclass(frozen=True)
class Applied:
    ref: str  # where the merged purge marks were read
    versions: tuple[tuple[str, str], ...]  # (model, version) whose bytes were deleted
    objects: int  # DVC objects removed from the remote


def merged_ref(reg: Registry) -> str:
    """The default branch, as origin has it when there is an origin: where a purge counts as merged."""
    branch = git.remote_default_branch(reg.root) or "main"
    for ref in (f"refs/remotes/origin/{branch}", f"refs/heads/{branch}"):
        if git.rev_parse(ref, reg.root):
            return ref
    raise UsageError(f"no branch {branch} to read merged purge marks from; run `registry gc --apply` in a "
                     "clone of the registry whose default branch is fetched")


def apply(reg: Registry) -> Applied:
    """Delete the DVC objects of the versions whose purge is merged (see `merged_ref`)."""
    ref = merged_ref(reg)
    purged: list[tuple[str, str, dict[str, str]]] = []
    keep: set[str] = set()
    prefix = f"{MODELS_DIR}/"
    entries = [e for e in git.ls_tree(ref, reg.root, [prefix]) if e.kind == "blob"]
    pointers = {e.path: e for e in entries if e.path.endswith(".dvc")}
    with git.CatFile(reg.root) as cat:
        for entry in entries:
            parts = entry.path.split("/")
            if len(parts) != 4 or parts[3] != cards.CARD_FILE:
                continue
            try:
                card = cards.parse(_read(cat, ref, entry), f"{ref}:{entry.path}")
            except ValidationError:
                # The gates refuse an invalid card; its version is not purged, and whatever
                # its pointers name stays (a version sharing those objects must not lose them).
                folder = f"{MODELS_DIR}/{parts[1]}/{parts[2]}/"
                for pointer_entry in (p for p in entries if p.path.startswith(folder) and p.path.endswith(".dvc")):
                    with contextlib.suppress(ValidationError):
                        keep.add(storage.parse_pointer(_read(cat, ref, pointer_entry), pointer_entry.path).md5)
                continue
            objects: dict[str, str] = {}
            for artifact in card.artifacts:
                pointer_path = f"{MODELS_DIR}/{parts[1]}/{parts[2]}/{artifact.path}.dvc"
                if artifact.storage != "dvc" or pointer_path not in pointers:
                    continue
                try:
                    pointer = storage.parse_pointer(_read(cat, ref, pointers[pointer_path]), pointer_path)
                except ValidationError:
                    continue
                objects[pointer.md5] = artifact.path
            if "purged" in card.data:
                purged.append((parts[1], parts[2], objects))
            else:
                keep.update(objects)
    doomed = sorted({md5 for _, _, objects in purged for md5 in objects} - keep)
    removed = storage.delete_objects(reg.root, doomed)
    for model, version, objects in purged:
        for md5, path in objects.items():
            local = reg.version_dir(model, version) / path
            if md5 in keep:
                continue
            if local.is_file() or local.is_symlink():
                local.unlink()
            elif local.is_dir():
                shutil.rmtree(local)
    return Applied(ref, tuple((m, v) for m, v, _ in purged), removed)


def _read(cat: git.CatFile, ref: str, entry: git.TreeEntry) -> bytes:
    """A blob ls-tree just listed: None from cat-file is git failing, not a missing file."""
    data = cat.read(entry.sha)
    if data is None:
        raise GitError(f"git could not read {ref}:{entry.path} (object {entry.sha[:12]}); nothing was deleted")
    return data
