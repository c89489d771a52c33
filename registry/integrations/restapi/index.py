"""The REST API's read side: a private mirror of the served registry and an in-memory
index of one commit of --ref, rebuilt only when that commit changes.

The mirror is a bare repository in the cache folder. --ref is fetched from the source
(the --origin URL, or the registry the server was started in) into a private ref at
most every --refresh seconds, and a detached work tree of exactly that commit is what
the registry's own readers (inventory, manifest, audit) run on. So every answer is the
CLI's answer at that commit, never the served repository's uncommitted files, and no
reader changes anything in the served repository.

Answers are computed once per commit and kept (the manifest and the inventory eagerly,
the rest on first request); a request never waits for git unless it is the first to
ask for something at a new commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from registry.errors import GitError, NotARegistryError, RegistryError, UsageError, ValidationError
from registry.files.names import ALL_STAGES
from registry.queries import inventory, manifest
from registry.queries.shapes import ModelSummary
from registry.repo import git
from registry.repo.registry import Registry

SERVED_REF = "refs/registry-api/served"
# Keys are only ever made for models and versions that exist at the commit; this bounds
# the per-version answers (cards with their history) kept for a registry of thousands.
MAX_MEMO_ENTRIES = 4096
EAGER = (("inventory",), ("manifest", "production"))

log = logging.getLogger("registry.api")
T = TypeVar("T")


class Stale(Exception):
    """The work tree has moved on to a newer commit: answer from the newer snapshot."""


def to_json(data: Any) -> bytes:
    """The bytes the CLI's --json prints when piped (same separators, dates as text)."""
    return json.dumps(data, default=str).encode()


def default_cache(url: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "registry" / "api" / hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """What is served: where it is fetched from, which ref, where the private clones live."""

    url: str
    ref: str
    cache: Path
    link_url: str | None = None  # remote.origin.url for the audit log's commit links

    @classmethod
    def local(cls, start: Path, ref: str, cache: Path | None) -> Source:
        """The registry containing start, fetched from its own folder."""
        reg = Registry.find(start)
        link = git.remote_url(reg.root)
        url = str(reg.root)
        return cls(url, ref, cache or default_cache(url), link)

    @classmethod
    def remote(cls, url: str, ref: str, cache: Path | None) -> Source:
        return cls(url, ref, cache or default_cache(url), url)


@dataclass(frozen=True)
class Inventory:
    """Every model at one commit: its ls summary, registered versions and model.yaml state."""

    summaries: tuple[ModelSummary, ...]
    versions: dict[str, tuple[str, ...]]
    known: frozenset[str]  # models with a model.yaml

    def stage_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ALL_STAGES, 0)
        for summary in self.summaries:
            held = {stage for _, stage in summary.stages.assignments()}
            if any(summary.stages.stage_of(v) == "development" for v in self.versions[summary.name]):
                held.add("development")
            for stage in held:
                counts[stage] += 1
        return counts


class Snapshot:
    """Answers for one commit, each computed once (an invalid file's error too: it lasts as long)."""

    def __init__(self, index: ReadIndex, commit: str, committed_at: int) -> None:
        self.index = index
        self.commit = commit
        self.committed_at = committed_at
        self._memo: dict[tuple[str, ...], Any] = {}

    def get(self, key: tuple[str, ...], compute: Callable[[Registry], T]) -> T:
        value = self._memo.get(key, _MISSING)  # lock-free hit: a dict read is atomic
        if value is _MISSING:
            with self.index.lock:
                value = self._memo.get(key, _MISSING)
                if value is _MISSING:
                    if self.index.checked_out != self.commit:
                        raise Stale(self.commit)
                    try:
                        value = compute(self.index.registry)
                    except (ValidationError, UsageError) as exc:  # the commit's content: as lasting
                        value = exc
                    if len(self._memo) >= MAX_MEMO_ENTRIES:
                        self._memo.pop(next(k for k in self._memo if k not in EAGER))
                    self._memo[key] = value
        if isinstance(value, RegistryError):
            raise value.with_traceback(None)  # raised again and again: keep its traceback short
        return value  # type: ignore[no-any-return]

    def inventory(self) -> Inventory:
        return self.get(("inventory",), _inventory)


class _Missing:
    pass


_MISSING = _Missing()


def _inventory(reg: Registry) -> Inventory:
    summaries = tuple(inventory.list_models(reg))
    names = [s.name for s in summaries]
    return Inventory(summaries, {n: tuple(reg.versions(n)) for n in names},
                     frozenset(n for n in names if reg.has_model(n)))


class ReadIndex:
    """The mirror, its work tree and the current snapshot; refreshed on demand in the background."""

    def __init__(self, source: Source, refresh_s: float) -> None:
        self.source = source
        self.refresh_s = refresh_s
        self.git_dir = source.cache / "mirror.git"
        self.tree = source.cache / "tree"
        self.lock = threading.RLock()  # the work tree, and computing answers from it
        self.checked_out: str | None = None
        self.registry = Registry(self.tree)
        self._current: Snapshot | None = None
        self._refreshing = threading.Lock()
        self._last_attempt = 0.0
        self.last_fetch: float | None = None  # wall clock of the last successful fetch
        self.fetch_failures = 0
        self.last_error: str | None = None

    def current(self) -> Snapshot:
        if self._current is None:
            raise RegistryError("the registry has not been fetched yet")
        return self._current

    def refresh(self) -> bool:
        """Fetch --ref; when its commit changed, check it out and index it. True when it changed."""
        with self._refreshing:
            return self._refresh_locked()

    def maybe_refresh(self) -> None:
        """Start a background refresh when the last one is --refresh seconds old and none is running."""
        now = time.monotonic()
        if now - self._last_attempt < self.refresh_s or not self._refreshing.acquire(blocking=False):
            return
        self._last_attempt = now
        threading.Thread(target=self._background_refresh, name="registry-api-refresh", daemon=True).start()

    def _background_refresh(self) -> None:
        try:
            self._refresh_locked()
        except RegistryError as exc:
            log.warning("refresh failed, still serving %s: %s", self._current_commit(), exc)
        except Exception:  # the thread's top: a bug, but the last good commit is still served
            log.exception("refresh failed, still serving %s", self._current_commit())
        finally:
            self._refreshing.release()

    def _current_commit(self) -> str:
        return self._current.commit[:12] if self._current else "nothing"

    def _refresh_locked(self) -> bool:
        self._last_attempt = time.monotonic()
        try:
            commit = self._fetch()
            changed = self._current is None or self._current.commit != commit
            if changed:
                self._switch(commit)
        except Exception as exc:
            self.fetch_failures += 1
            self.last_error = str(exc)
            raise
        self.last_error = None
        return changed

    def _fetch(self) -> str:
        try:
            if not (self.git_dir / "HEAD").is_file():
                git.init_bare(self.git_dir)
            # Commit links in the audit log are made from remote.origin.url, as in the served clone.
            git.set_remote_url(self.git_dir, self.source.link_url)
            commit = git.mirror_ref(self.git_dir, self.source.url, self.source.ref, SERVED_REF)
        except GitError as exc:
            raise GitError(f"cannot fetch --ref {self.source.ref} from {_redact(self.source.url)}: {exc}") from None
        self.last_fetch = time.time()
        return commit

    def _switch(self, commit: str) -> None:
        committed_at = git.commit_time(self.git_dir, commit)
        snapshot = Snapshot(self, commit, committed_at)
        with self.lock:
            self._checkout(commit)
            self.checked_out = commit
            self.registry = Registry(self.tree)
            if not (self.tree / "registry.yaml").is_file():
                self.checked_out = None
                raise NotARegistryError(
                    f"--ref {self.source.ref} of {_redact(self.source.url)} (commit {commit[:12]}) "
                    "is not a registry: it has no registry.yaml")
            for key in EAGER:
                try:
                    compute_eager(snapshot, key)
                except RegistryError as exc:  # kept in the snapshot: its requests answer with it
                    log.warning("at %s: %s", commit[:12], exc)
            self._current = snapshot
        log.info("serving %s at %s", self.source.ref, commit[:12])

    def _checkout(self, commit: str) -> None:
        if (self.tree / ".git").is_file():
            try:
                git.checkout_detached(self.tree, commit)
                return
            except GitError:
                pass  # a damaged work tree: make it again
        if self.tree.exists():
            shutil.rmtree(self.tree)
        git.add_detached_worktree(self.git_dir, self.tree, commit)


def compute_eager(snapshot: Snapshot, key: tuple[str, ...]) -> Any:
    if key == ("inventory",):
        return snapshot.inventory()
    return manifest_bytes(snapshot, key[1])


def manifest_bytes(snapshot: Snapshot, stage: str, as_of: str | None = None) -> bytes:
    def build(reg: Registry) -> bytes:
        return to_json(manifest.build(reg, stage=stage, at="HEAD", as_of=as_of).as_json())

    return snapshot.get(("manifest", stage) if as_of is None else ("manifest", stage, as_of), build)


def check_date(option: str, value: str) -> str:
    """The audit log's date check: YYYY-MM-DD only (fromisoformat alone takes 20250101 too)."""
    import datetime as dt

    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError(value)
        dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r}: use an ISO date, YYYY-MM-DD") from None
    return value


def _redact(url: str) -> str:
    """A URL without its password or token, for messages."""
    return re.sub(r"//[^/@]*@", "//***@", url)
