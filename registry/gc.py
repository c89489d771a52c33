"""`registry gc`: apply the retention policy of registry.yaml.

Kept, always: every version in production, canary, staging or deprecated, and the
newest `retention.keep_latest` versions of each model. Purged: versions in
development or archived, older than `retention.purge_unstaged_after_days` (by
their card's `created` date) and outside the newest N. Purging removes their DVC
objects from the remote and the local cache (unless a kept version shares them)
and marks their cards `purged` in a commit; history is never rewritten, so the
audit trail stays whole and the purge itself is an audit entry.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass

from registry import branches, cards, git, storage, yamlio
from registry.errors import UsageError
from registry.repo import Registry, version_sort_key

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


def plan(reg: Registry, today: dt.date | None = None) -> Plan:
    config = reg.config
    cutoff = (today or dt.date.today()) - dt.timedelta(days=config.purge_unstaged_after_days)
    keep_md5s: set[str] = set()
    maybe: list[tuple[str, str, str, str, dict[str, int]]] = []
    kept = 0
    for name in reg.model_names():
        held = reg.stages(name)
        versions = reg.versions(name)
        newest = set(sorted(versions, key=version_sort_key)[-config.keep_latest:])
        for version in versions:
            card = reg.card(name, version)
            objects = _objects(reg, name, version, card)
            stage = held.stage_of(version)
            created = str(card.data.get("created", ""))
            removable = (stage in REMOVABLE_STAGES and version not in newest and "purged" not in card.data
                         and created and dt.date.fromisoformat(created[:10]) < cutoff)
            if removable:
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
    """Apply the policy; returns the plan, the branch (if any) and the commit (None on a dry run)."""
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
        git.run(["checkout", "--quiet", "--", *paths], reg.root, check=False)

    with branches.change_on_branch(reg.root, branch, restore):
        for c in result.candidates:
            path = reg.version_dir(c.model, c.version) / cards.CARD_FILE
            card = reg.card(c.model, c.version)
            data = dict(card.data)
            data["purged"] = {"date": date, "reason": f"retention policy: {c.stage}, created {c.created}, "
                              f"outside the newest {reg.config.keep_latest}"}
            yamlio.atomic_write(path, cards.Card.from_data(data).to_text())
            paths.append(reg.rel(path))
        git.run(["add", "--", *paths], reg.root)
        listing = "\n".join(f"- {c.model}@{c.version} ({c.stage}, created {c.created})" for c in result.candidates)
        message = (f"Purge {len(result.candidates)} version(s) under the retention policy\n\n{listing}\n\n"
                   f"Reason: retention policy (keep_latest {reg.config.keep_latest}, "
                   f"purge_unstaged_after_days {reg.config.purge_unstaged_after_days})\n")
        git.run(["commit", "--quiet", "-m", message], reg.root)
    commit = git.run(["rev-parse", "HEAD"], reg.root).strip()
    # The marks are committed: now the bytes go, from the remote, the cache and the work tree.
    storage.delete_objects(reg.root, sorted({md5 for c in result.candidates for md5 in c.md5s}))
    for c in result.candidates:
        card = reg.card(c.model, c.version)
        for artifact in card.artifacts:
            if artifact.storage == "dvc":
                local = reg.version_dir(c.model, c.version) / artifact.path
                if local.is_file() or local.is_symlink():
                    local.unlink()
                elif local.is_dir():
                    shutil.rmtree(local)
    return result, branch, commit
