"""The serving folder that `registry pull` maintains, and the only code that writes in it.

Layout of DIR (model names never start with a dot nor contain one, so nothing clashes)::

    DIR/<name>/versions/<version>/   a verified copy of the version folder
    DIR/<name>/current               symlink to versions/<version>, switched by rename
    DIR/<name>/canary                symlink to the canary's version (`pull --with-canary`)
    DIR/state.json                   what was applied (registry commit, versions, digests)
    DIR/.registry-cache/             the registry mirror (a cache)
    DIR/.lock                        flock'ed by the pull that is working in DIR
    DIR/.tmp-*                       work in progress; removed by the next pull

Every change is made by a rename of something complete (a folder that was written,
fsynced and verified; a symlink; a state file), so a pull killed at any moment leaves
either the old or the new version being served, plus ``.tmp-*`` leftovers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files.fsutil import atomic_write, fsync_dir
from registry.files.names import MODEL_NAME_RE
from registry.files.promtext import label_value

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
RECEIPTS_FILE = "receipts.jsonl"  # registry.serving.receipts appends to it
CACHE_DIR = ".registry-cache"
TMP_PREFIX = ".tmp-"
CURRENT = "current"
CANARY = "canary"
VERSIONS = "versions"
STATE_FORMAT = 1


class PullError(RegistryError):
    """A pull could not be applied; the last good version keeps serving."""

    repeated = False
    reported = False  # a `failed` event already said it
    model: str | None = None  # the model that blocked the pull, when one did


class RewindError(PullError):
    """The registry commit does not descend from the one last applied."""


class Stopped(RegistryError):
    """A signal asked the pull to stop; it abandoned its work safely."""

    exit_code = 143


class Unwritable(RegistryError):
    """--to or --metrics-file cannot be created or written there (exit 1)."""


# The errors of creating or writing a file that are about the place, not about the registry.
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                          errno.ENOTDIR, errno.EISDIR, errno.EFBIG, errno.EEXIST, errno.ELOOP})


def unwritable(option: str, path: Path, exc: OSError, what: str = "folder") -> Unwritable:
    """The one message for a --to or --metrics-file that cannot be created or written."""
    reason = exc.strerror or type(exc).__name__
    culprit = Path(os.fsdecode(exc.filename)) if exc.filename else None
    if exc.errno == errno.ENOTDIR and culprit is not None and culprit != path:
        reason = f"{culprit} is not a folder"
    elif culprit is not None and culprit != path:
        reason += f": {culprit}"
    return Unwritable(f"{option} {path}: cannot create or write this {what} ({reason}); give a {what} "
                      "that this user can write, on a file system with free space")


def is_write_error(exc: BaseException, root: Path) -> bool:
    """Whether exc is about creating or writing in root (not, say, reading a remote's file)."""
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return False
    if not exc.filename:
        return True  # a write or fsync that failed (ENOSPC, EDQUOT): ours, in root
    where = Path(os.fsdecode(exc.filename))
    return where.is_relative_to(root) or root.is_relative_to(where)


def make_folder(path: Path) -> Path | None:
    """mkdir -p that leaves nothing behind when it fails; returns the topmost folder it made."""
    missing = []
    probe = path
    while not probe.is_dir():
        if os.path.lexists(probe):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(probe))
        missing.append(probe)
        probe = probe.parent
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return made[0] if made else None


def probe_file(option: str, path: Path) -> None:
    """Refuse, before anything is pulled, a file that could not be written where it is to be:
    the nearest existing folder above it must take a new file (one is made and removed)."""
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        folder = path.parent
        while not os.path.lexists(folder):
            folder = folder.parent
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.{TMP_PREFIX}probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise unwritable(option, path, exc, "file") from None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --- state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionRecord:
    """A version folder on disk: the registry tree it came from and its files' sha256."""

    tree: str
    sha256: Mapping[str, str]
    signed_by: str | None  # the trusted key's id; None when verification was skipped

    def as_json(self) -> dict[str, Any]:
        return {"tree": self.tree, "sha256": dict(self.sha256), "signed_by": self.signed_by}


@dataclass(frozen=True)
class Canary:
    """The canary assignment served beside production (`--with-canary`): DIR/<name>/canary."""

    version: str
    traffic: float | None


@dataclass(frozen=True)
class ModelRecord:
    version: str
    traffic: float | None
    previous: str | None
    commit: str  # the registry commit that made this assignment
    canary: Canary | None = None


@dataclass(frozen=True)
class State:
    source: str
    ref: str
    stage: str
    scope: tuple[str, ...]  # the --model names asked for; () means every model of the stage
    registry_commit: str
    applied_at: str
    models: Mapping[str, ModelRecord]
    versions: Mapping[str, Mapping[str, VersionRecord]]  # model -> version -> folder on disk
    failures_total: int = 0
    last_failure: Mapping[str, str] | None = None
    last_success: float | None = None
    # --per-model: models refused at registry_commit (name -> version, error); retried by every poll
    held: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    with_canary: bool = False

    def record(self, name: str, version: str) -> VersionRecord | None:
        return self.versions.get(name, {}).get(version)

    def in_scope(self, scope: tuple[str, ...]) -> list[str]:
        return [n for n in self.models if not scope or n in scope]

    def as_json(self) -> dict[str, Any]:
        models: dict[str, Any] = {}
        for name, model in sorted(self.models.items()):
            entry: dict[str, Any] = {"version": model.version}
            if model.traffic is not None:
                entry["traffic"] = model.traffic
            entry["path"] = f"{name}/{VERSIONS}/{model.version}"
            record = self.record(name, model.version)
            entry["sha256"] = dict(record.sha256) if record else {}
            entry["signed_by"] = record.signed_by if record else None
            entry["tree"] = record.tree if record else None
            entry["previous"] = model.previous
            entry["commit"] = model.commit
            if model.canary is not None:
                entry["canary"] = {"version": model.canary.version, "traffic": model.canary.traffic}
            models[name] = entry
        return {
            "format": STATE_FORMAT,
            "registry_commit": self.registry_commit,
            "applied_at": self.applied_at,
            "stage": self.stage,
            "source": self.source,
            "ref": self.ref,
            "models_filter": list(self.scope),
            "models": models,
            "versions": {name: {v: r.as_json() for v, r in sorted(kept.items())}
                         for name, kept in sorted(self.versions.items()) if kept},
            "failures_total": self.failures_total,
            "last_failure": dict(self.last_failure) if self.last_failure else None,
            "last_success": self.last_success,
            "held": {name: dict(why) for name, why in sorted(self.held.items())},
            "with_canary": self.with_canary,
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> State:
        try:
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {STATE_FORMAT}")
            versions = {
                name: {v: VersionRecord(str(r["tree"]), dict(r["sha256"]), r.get("signed_by"))
                       for v, r in kept.items()}
                for name, kept in data.get("versions", {}).items()
            }
            models = {
                name: ModelRecord(str(m["version"]), m.get("traffic"), m.get("previous"), str(m["commit"]),
                                  Canary(str(m["canary"]["version"]), m["canary"].get("traffic"))
                                  if m.get("canary") else None)
                for name, m in data["models"].items()
            }
            return cls(
                source=str(data["source"]), ref=str(data["ref"]), stage=str(data["stage"]),
                scope=tuple(data.get("models_filter", ())), registry_commit=str(data["registry_commit"]),
                applied_at=str(data["applied_at"]), models=models, versions=versions,
                failures_total=int(data.get("failures_total", 0)), last_failure=data.get("last_failure"),
                last_success=data.get("last_success"),
                held={str(n): {str(k): str(v) for k, v in why.items()} for n, why in data.get("held", {}).items()},
                with_canary=bool(data.get("with_canary", False)),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PullError(f"{path}: not a state file this version of registry can read ({exc}); "
                            "pull into a new folder") from None

    def with_failure(self, message: str, commit: str | None,
                     installed: Mapping[tuple[str, str], VersionRecord], failures_total: int) -> State:
        versions = {name: dict(kept) for name, kept in self.versions.items()}
        for (name, version), record in installed.items():
            versions.setdefault(name, {})[version] = record
        failure = {"time": now_iso(), "error": message}
        if commit:
            failure["registry_commit"] = commit
        return replace(self, failures_total=failures_total, last_failure=failure, versions=versions)


# --- durable writes -----------------------------------------------------------------


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- the folder ---------------------------------------------------------------------


@dataclass
class ServingDir:
    root: Path
    _temps: list[Path] = field(default_factory=list)
    made: Path | None = None  # the topmost folder this poll made (root or a parent of it)

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    def model_dir(self, name: str) -> Path:
        return self.root / name

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / VERSIONS / version

    def check_usable(self) -> None:
        """Refuse, before anything is created, a --to that is a file or someone else's folder."""
        try:
            if self.root.exists() and not self.root.is_dir():
                raise UsageError(f"--to {self.root}: exists and is not a folder")
            if not self.root.is_dir() or self.state_path.exists() or self.cache.exists():
                return
            foreign = [e.name for e in os.scandir(self.root)
                       if e.name not in (LOCK_FILE, RECEIPTS_FILE) and not e.name.startswith(TMP_PREFIX)]
        except OSError as exc:
            raise unwritable("--to", self.root, exc) from None
        if foreign:
            raise UsageError(
                f"--to {self.root}: not empty ({', '.join(sorted(foreign)[:3])}) and not a folder that "
                "`registry pull` made; give a new or empty folder"
            )

    @contextlib.contextmanager
    def locked(self, stop: threading.Event, waiting: Callable[[], None]) -> Iterator[None]:
        """Hold DIR/.lock (flock). Waits for another pull; a signal while waiting stops the wait."""
        path = self.root / LOCK_FILE
        self.made = None  # what this poll makes
        while True:
            try:
                made = make_folder(self.root)
                self.made = self.made or made
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if self.made is not None:
                    shutil.rmtree(self.made, ignore_errors=True)
                    self.made = None
                raise unwritable("--to", self.root, exc) from None
            try:
                announced = False
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not announced:
                            waiting()
                            announced = True
                        if stop.wait(0.05):
                            raise Stopped("stopped while waiting for another pull into "
                                          f"{self.root}; nothing was changed") from None
                # A failed first pull removes the folder it made, lock file included: lock the new one.
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)

    def clean_leftovers(self) -> None:
        """Remove what a pull that was killed left behind (we hold the lock: nobody else is working)."""
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.startswith(TMP_PREFIX):
                    _remove(Path(entry.path))
                elif MODEL_NAME_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    for inner in os.scandir(entry.path):
                        if inner.name.startswith(TMP_PREFIX):
                            _remove(Path(inner.path))

    def read_state(self) -> State | None:
        try:
            text = self.state_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            raise PullError(f"{self.state_path}: not JSON; pull into a new folder") from None
        return State.from_json(data, self.state_path)

    def write_state(self, state: State) -> None:
        text = json.dumps(state.as_json(), indent=2, sort_keys=False) + "\n"
        atomic_write(self.state_path, text, mode=0o644, temp_prefix=f"{TMP_PREFIX}state-")

    def new_temp(self, label: str) -> Path:
        path = self.root / f"{TMP_PREFIX}{label}-{secrets.token_hex(4)}"
        path.mkdir()
        self._temps.append(path)
        return path

    def discard(self, path: Path) -> None:
        """Remove a folder: first renamed to .tmp-* (so a crash mid-way leaves only a leftover)."""
        if not path.exists() and not path.is_symlink():
            return
        if not path.name.startswith(TMP_PREFIX):
            target = self.root / f"{TMP_PREFIX}discard-{secrets.token_hex(4)}"
            os.rename(path, target)
            fsync_dir(path.parent)
            path = target
        _remove(path)

    def install(self, tmp: Path, name: str, version: str) -> None:
        """Move a complete, verified folder into place as versions/<version> (never the served one)."""
        versions = self.model_dir(name) / VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        target = versions / version
        if version in (self.current_version(name), self.current_version(name, CANARY)):
            raise PullError(f"{name}@{version} is being served; it is never replaced in place")
        self.discard(target)
        os.rename(tmp, target)
        fsync_dir(versions)
        fsync_dir(self.root)
        self._temps = [t for t in self._temps if t != tmp]

    def current_version(self, name: str, link: str = CURRENT) -> str | None:
        """The version `current` (or `canary`) points at, if it points at a version folder that exists."""
        try:
            target = os.readlink(self.model_dir(name) / link)
        except OSError:
            return None
        prefix = f"{VERSIONS}/"
        if not target.startswith(prefix):
            return None
        version = target[len(prefix):]
        return version if "/" not in version and (self.model_dir(name) / target).is_dir() else None

    def switch(self, name: str, version: str, link_name: str = CURRENT) -> None:
        """Point current (or canary) at versions/<version>: a new symlink renamed over the old one."""
        model_dir = self.model_dir(name)
        link = model_dir / f"{TMP_PREFIX}{link_name}-{secrets.token_hex(4)}"
        os.symlink(f"{VERSIONS}/{version}", link)
        try:
            os.replace(link, model_dir / link_name)
        except BaseException:
            link.unlink(missing_ok=True)
            raise
        fsync_dir(model_dir)

    def unlink(self, name: str, link_name: str) -> None:
        """Remove a model's link (a canary that left the stage)."""
        (self.model_dir(name) / link_name).unlink(missing_ok=True)
        fsync_dir(self.model_dir(name))

    def switch_back(self, undo: list[tuple[str, str | None, str]]) -> None:
        """Undo the switches of a pull that failed part-way: each link points at what it
        named before, newest switch first (a link new in this pull is removed again).
        Best effort: a failure here leaves that model on the verified version it was switched to."""
        for name, version, link in reversed(undo):
            with contextlib.suppress(OSError):
                if version is None:
                    self.unlink(name, link)
                else:
                    self.switch(name, version, link)

    def retire(self, name: str) -> None:
        """A model no longer in the stage: its folder goes (current first, so readers see it gone)."""
        (self.model_dir(name) / CURRENT).unlink(missing_ok=True)
        self.discard(self.model_dir(name))
        fsync_dir(self.root)

    def prune(self, name: str, keep: set[str]) -> None:
        versions = self.model_dir(name) / VERSIONS
        if not versions.is_dir():
            return
        for entry in os.scandir(versions):
            if entry.name not in keep:
                self.discard(Path(entry.path))

    def drop_temps(self) -> None:
        for path in self._temps:
            _remove(path)
        self._temps = []

    def remove_first_pull(self, created_root: bool) -> None:
        """A first pull failed: leave nothing behind, as if it had never run."""
        if created_root:
            shutil.rmtree(self.made or self.root, ignore_errors=True)  # and the parents it made
            self.made = None
            return
        for entry in os.scandir(self.root):
            if entry.name == CACHE_DIR or entry.name.startswith(TMP_PREFIX) or (
                    MODEL_NAME_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
                _remove(Path(entry.path))
        (self.root / LOCK_FILE).unlink(missing_ok=True)


# --- metrics ------------------------------------------------------------------------


def write_metrics(path: Path, stage: str, served: Mapping[str, str], last_success: float | None,
                  failures_total: int) -> None:
    """Prometheus text exposition (for node_exporter's textfile collector), replaced atomically."""
    lines = [
        "# HELP registry_serving_version_info The model version each model is serving, by stage.",
        "# TYPE registry_serving_version_info gauge",
    ]
    for name, version in sorted(served.items()):
        lines.append(f'registry_serving_version_info{{model="{label_value(name)}",version="{label_value(version)}",'
                     f'stage="{label_value(stage)}"}} 1')
    lines += [
        "# HELP registry_last_successful_pull_timestamp_seconds When a pull last succeeded (applied or up to date).",
        "# TYPE registry_last_successful_pull_timestamp_seconds gauge",
        f"registry_last_successful_pull_timestamp_seconds {last_success if last_success is not None else 0:.3f}",
        "# HELP registry_pull_failures_total Pulls that failed (refused, unreachable, unverifiable).",
        "# TYPE registry_pull_failures_total counter",
        f"registry_pull_failures_total {failures_total}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Leftovers of a writer that was killed: ours by name.
    for stale in path.parent.glob(f".{path.name}.{TMP_PREFIX}*"):
        stale.unlink(missing_ok=True)
    atomic_write(path, "\n".join(lines) + "\n", mode=0o644, temp_prefix=f".{path.name}.{TMP_PREFIX}")

