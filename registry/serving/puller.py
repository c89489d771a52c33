"""`registry pull`: the serving client. Pull a stage's versions into a folder, verified, atomically.

    from registry.serving import Puller, pull
    result = pull("/srv/models", stage="production", source="git@github.com:org/registry.git",
                  trusted_keys="release.pub")
    result.models["credit-approval"].path          # /srv/models/credit-approval/current

    puller = Puller("/srv/models", stage="production", source=url, trusted_keys="release.pub")
    puller.watch(interval=30)                       # until puller.stop.set() or a signal

One poll: ``git ls-remote`` the ref; if it still names the commit last applied,
stop there (no fetch, no download, no write). Otherwise fetch it into a blob-less
mirror, refuse it unless it descends from the commit last applied, resolve the stage
(`registry.serving.resolve`), and for each model whose version changed download
its files into ``DIR/.tmp-*`` (hashing as they arrive), check each artifact's size
and sha256 against the card, the signature against keys given out of band
(`registry.serving.verify`), rename
the folder to ``DIR/<name>/versions/<version>`` and, once every model is ready,
switch each ``DIR/<name>/current`` symlink and write ``DIR/state.json``. Any failure
before the switch changes nothing that is served; its message says what was refused
and why.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import RegistryError, UsageError
from registry.files.fsutil import fsync_dir, write_new
from registry.files.names import check_model_name
from registry.queries import manifest
from registry.repo import git
from registry.serving.mirror import Mirror, SourceError, remote_head
from registry.serving.remote import ProgressFn, Remote, copy_hashing
from registry.serving.resolve import resolve
from registry.serving.store import (
    CURRENT,
    ModelRecord,
    PullError,
    ServingDir,
    State,
    Stopped,
    Unwritable,
    VersionRecord,
    is_write_error,
    now_iso,
    probe_file,
    unwritable,
    write_metrics,
)
from registry.serving.verify import (
    VerificationError,
    Wanted,
    check_artifact,
    check_version,
    is_trusted,
    load_trusted_keys,
    verify_in_place,
)

__all__ = ["PullError", "PullResult", "Puller", "RewindError", "Served", "Stopped", "VerificationError",
           "pull", "stop_on_signals"]

SERVABLE = manifest.SERVABLE
MIRROR_DIR = "registry.repo.git"
EventFn = Callable[[dict[str, Any]], None]


class RewindError(PullError):
    """The registry commit does not descend from the one last applied."""


@dataclass(frozen=True)
class Served:
    """A model as it is served after a poll."""

    name: str
    version: str
    traffic: float | None
    path: Path  # DIR/<name>/current
    sha256: Mapping[str, str]
    signed_by: str | None


@dataclass(frozen=True)
class PullResult:
    changed: bool  # a model switched, changed traffic or left the stage
    registry_commit: str
    previous_commit: str | None
    stage: str
    models: Mapping[str, Served]
    switched: tuple[str, ...] = ()
    fetched: bool = False  # whether git fetched anything
    downloaded_files: int = 0  # files read from the DVC remote
    downloaded_bytes: int = 0
    verified_files: int = 0  # files hashed on disk to (re)verify a folder already there
    events: tuple[dict[str, Any], ...] = ()


@dataclass
class _Ready:
    want: Wanted
    record: VersionRecord
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    verified_files: int = 0


@dataclass
class _Progress:
    installed: dict[tuple[str, str], VersionRecord] = field(default_factory=dict)
    commit: str | None = None


class Puller:
    """Keeps DIR serving one stage of a registry. One instance per DIR; `poll` once or `watch`."""

    def __init__(
        self,
        to: str | Path,
        *,
        stage: str,
        source: str | None = None,
        ref: str = "main",
        models: Sequence[str] = (),
        trusted_keys: str | Path | Sequence[ec.EllipticCurvePublicKey] | None = None,
        insecure_skip_signature: bool = False,
        allow_rewind: bool = False,
        metrics_file: str | Path | None = None,
        on_event: EventFn | None = None,
        progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if stage not in SERVABLE:
            raise UsageError(f"--stage {stage}: serving pulls one of {', '.join(SERVABLE)}")
        for name in models:
            check_model_name(name)
        if not ref or ref.startswith("-") or any(c.isspace() for c in ref):
            raise UsageError(f"--ref {ref!r}: not a branch or tag name")
        self.keys = load_trusted_keys(trusted_keys, insecure_skip_signature)
        self.store = ServingDir(Path(to).expanduser().absolute())
        self.stage = stage
        self.source = _normalise_source(source) if source is not None else None
        self.ref = ref
        self.scope = tuple(sorted(set(models)))
        self.allow_rewind = allow_rewind
        self.metrics_file = Path(metrics_file).absolute() if metrics_file is not None else None
        self.on_event = on_event
        self.progress = progress
        self.stop = stop or threading.Event()
        self._polls = 0
        self._failures: int | None = None
        self._last_success: float | None = None
        self._refused: tuple[str, str] | None = None

    # --- the loop ---------------------------------------------------------------------

    def watch(self, interval: float) -> None:
        """Poll every interval seconds until `stop` is set; failures are reported as events."""
        if interval <= 0:
            raise UsageError(f"--interval {interval}: give a number of seconds above 0")
        self._emit({"event": "watching", "stage": self.stage, "to": str(self.store.root),
                    "source": self._source_in_use(), "ref": self.ref, "interval": interval})
        while not self.stop.is_set():
            try:
                self.poll()
            except Stopped:
                break
            except (UsageError, Unwritable) as exc:
                if self._polls <= 1:
                    raise
                self._emit({"event": "failed", "error": str(exc)})
            except PullError as exc:
                if not exc.repeated:
                    self._emit({"event": "failed", "error": str(exc)})
            except RegistryError as exc:
                self._emit({"event": "failed", "error": str(exc)})
            if self.stop.wait(interval):
                break
        self._emit({"event": "stopped"})

    def _source_in_use(self) -> str | None:
        """--from, else the registry the folder was first pulled from (what `_sync` will use)."""
        if self.source is not None:
            return self.source
        try:
            state = self.store.read_state()
        except (RegistryError, OSError):
            return None  # the first poll reports it
        return state.source if state else None

    def poll(self) -> PullResult:
        """Bring DIR to what the stage says now; raises PullError (nothing served changes) on failure."""
        self._polls += 1
        self._check_stop()
        if self._polls == 1 and self.metrics_file is not None:
            probe_file("--metrics-file", self.metrics_file)
        try:
            first = not self.store.state_path.exists()
            created_root = not self.store.root.exists()
        except OSError as exc:
            raise unwritable("--to", self.store.root, exc) from None
        if first:
            self.store.check_usable()
            if self.source is None:
                raise UsageError(f"--from URL is needed for the first pull into {self.store.root}")
            if self._polls == 1:
                try:
                    remote_head(self.source, self.ref)
                except SourceError as exc:
                    raise UsageError(f"--from {self.source}: {exc}") from None
        with self.store.locked(self.stop, self._waiting):
            try:
                self.store.clean_leftovers()
                state = self.store.read_state()
            except OSError as exc:
                if created_root:
                    self.store.remove_first_pull(created_root)
                raise unwritable("--to", self.store.root, exc) from None
            progress = _Progress()
            try:
                result, after = self._sync(state, progress)
            except UsageError:
                self.store.drop_temps()
                if state is None:
                    self.store.remove_first_pull(created_root)
                raise
            except Stopped:
                self.store.drop_temps()
                if state is None:
                    self.store.remove_first_pull(created_root)
                raise
            except PullError as exc:
                if not exc.repeated:
                    self.store.drop_temps()
                    raise self._failed(state, exc, progress, created_root) from None
                # The commit refused by an earlier poll of this watch, still at the ref: say nothing new.
                if state is None:
                    self.store.remove_first_pull(created_root)
                raise
            except (RegistryError, OSError) as exc:
                self.store.drop_temps()
                raise self._failed(state, exc, progress, created_root) from None
        self._last_success = time.time()
        self._refused = None
        self._write_metrics(after, self._last_success)
        for event in result.events:
            self._emit(event)
        return result

    # --- one poll, under the lock ---------------------------------------------------------

    def _sync(self, state: State | None, progress: _Progress) -> tuple[PullResult, State]:
        if state is not None and state.stage != self.stage:
            raise UsageError(f"--to {self.store.root} serves {state.stage}; pull {self.stage} into another folder")
        source = self.source or (state.source if state else None)
        assert source is not None
        try:
            refname, head = remote_head(source, self.ref)
        except SourceError as exc:
            raise PullError(str(exc)) from None
        if state is not None and head == state.registry_commit and self._in_sync(state, source):
            return self._unchanged(state), state
        if self._refused is not None and self._refused[0] == head:
            again = PullError(self._refused[1])
            again.repeated = True
            raise again
        progress.commit = head
        mirror = Mirror(self.store.cache / MIRROR_DIR)
        mirror.clear_stale_locks()
        fetched = False
        try:
            mirror.open(source)
            if mirror.holds(head):  # fetched by a poll that then failed: try again without fetching
                commit = head
            else:
                commit, fetched = mirror.fetch(refname), True
        except RegistryError:
            # The mirror is a cache: after a killed or failed fetch, start it afresh once.
            mirror.reset(source)
            commit, fetched = mirror.fetch(refname), True
        progress.commit = commit
        self._check_stop()
        rewound = False
        if state is not None and commit != state.registry_commit and not mirror.is_ancestor(state.registry_commit, commit):
            if not self.allow_rewind:
                raise RewindError(
                    f"registry commit {commit[:12]} ({self.ref} at {source}) does not descend from "
                    f"{state.registry_commit[:12]}, the commit applied on {state.applied_at}: "
                    "a force-push or a replayed older state of the registry. Refused; "
                    "pass --allow-rewind to accept it")
            rewound = True
        with git.CatFile(mirror.path) as cat:
            wanted, remote = resolve(mirror, cat, commit, source, self.stage, self.scope, self._check_stop)
            ready = [self._prepare(cat, want, state, remote, progress) for want in wanted]
        return self._apply(state, source, refname, commit, ready, fetched, rewound)

    def _in_sync(self, state: State, source: str) -> bool:
        if state.source != source or state.scope != self.scope:
            return False
        for name in state.in_scope(self.scope):
            model = state.models[name]
            record = state.record(name, model.version)
            if record is None or not is_trusted(self.keys, record.signed_by):
                return False
            if self.store.current_version(name) != model.version:
                return False
        return True

    def _unchanged(self, state: State) -> PullResult:
        event = {"event": "unchanged", "time": now_iso(), "stage": self.stage,
                 "registry_commit": state.registry_commit}
        return PullResult(False, state.registry_commit, state.registry_commit, self.stage,
                          self._served(state), events=(event,))

    # --- prepare: a verified folder at versions/<version> ------------------------------

    def _prepare(self, cat: git.CatFile, want: Wanted, state: State | None, remote: Remote | None,
                 progress: _Progress) -> _Ready:
        self._check_stop()
        known = state.record(want.name, want.version) if state else None
        folder = self.store.version_dir(want.name, want.version)
        serving = self.store.current_version(want.name) == want.version
        if folder.is_dir():
            if known is not None and known.tree == want.tree and is_trusted(self.keys, known.signed_by):
                return _Ready(want, known)
            if serving and known is not None and known.tree != want.tree:
                raise VerificationError(
                    f"{want.ref} changed in the registry after it was applied ({want.folder} was tree "
                    f"{known.tree[:12]}, is now {want.tree[:12]}); a merged version is immutable: "
                    "register a new version instead")
            try:
                record, hashed = verify_in_place(want, folder, self.keys, self._check_stop)
            except VerificationError:
                if serving:
                    raise
                self.store.discard(folder)
            else:
                progress.installed[(want.name, want.version)] = record
                return _Ready(want, record, verified_files=hashed)
        ready = self._download(cat, want, remote)
        progress.installed[(want.name, want.version)] = ready.record
        return ready

    def _download(self, cat: git.CatFile, want: Wanted, remote: Remote | None) -> _Ready:
        tmp = self.store.new_temp(f"{want.name}-{want.version}")
        digests: dict[str, str] = {}
        sizes: dict[str, int] = {}
        got_bytes = 0
        for blob in want.git_files:
            self._check_stop()
            data = cat.read(blob.oid)
            if data is None:
                raise PullError(f"{want.folder}/{blob.path}: missing from the registry mirror")
            target = tmp / blob.path
            target.parent.mkdir(parents=True, exist_ok=True)
            write_new(target, data, executable=blob.mode == "100755")
            digests[blob.path] = hashlib.sha256(data).hexdigest()
            sizes[blob.path] = len(data)
        cards = {a.path: a for a in want.artifacts}
        for path, md5 in sorted(want.dvc_md5.items()):
            assert remote is not None
            artifact = cards[path]
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            label = f"{want.ref} {path}"
            with remote.open(md5) as src:
                size, digest = copy_hashing(src, target, artifact.size, label, self._check_stop, self.progress)
            sizes[path], digests[path] = size, digest
            got_bytes += size
            check_artifact(want, artifact, size, digest, f"the DVC remote's copy at {remote.location(md5)}")
        signed_by = check_version(want, tmp, digests, sizes, self.keys)
        for dirpath, _dirs, _files in os.walk(tmp, topdown=False):
            fsync_dir(Path(dirpath))
        self.store.install(tmp, want.name, want.version)
        record = VersionRecord(want.tree, dict(sorted(digests.items())), signed_by)
        return _Ready(want, record, downloaded_files=len(want.dvc_md5), downloaded_bytes=got_bytes)

    # --- apply: switch, record, prune ---------------------------------------------------

    def _apply(self, state: State | None, source: str, refname: str, commit: str, ready: list[_Ready],
               fetched: bool, rewound: bool) -> tuple[PullResult, State]:
        stamp = now_iso()
        events: list[dict[str, Any]] = []
        old_models = dict(state.models) if state else {}
        models: dict[str, ModelRecord] = {n: m for n, m in old_models.items() if self.scope and n not in self.scope}
        versions: dict[str, dict[str, VersionRecord]] = {}
        switched: list[str] = []
        undo: list[tuple[str, str | None]] = []  # (model, version served before), newest last
        try:
            for item in ready:
                want, old = item.want, old_models.get(item.want.name)
                serving = self.store.current_version(want.name)
                if serving != want.version:
                    self.store.switch(want.name, want.version)
                    undo.append((want.name, serving))
                previous = serving if serving not in (None, want.version) else (old.previous if old else None)
                if old is None or old.version != want.version or serving != want.version:
                    switched.append(want.name)
                    event: dict[str, Any] = {
                        "event": "switched", "time": stamp, "model": want.name, "version": want.version,
                        "previous": serving, "stage": self.stage, "registry_commit": commit,
                        "path": str(self.store.model_dir(want.name) / CURRENT)}
                    if want.traffic is not None:
                        event["traffic"] = want.traffic
                    events.append(event)
                elif old.traffic != want.traffic:
                    events.append({"event": "traffic", "time": stamp, "model": want.name, "version": want.version,
                                   "traffic": want.traffic, "previous_traffic": old.traffic, "stage": self.stage,
                                   "registry_commit": commit})
                same = old is not None and old.version == want.version and old.traffic == want.traffic
                models[want.name] = ModelRecord(want.version, want.traffic, previous,
                                                old.commit if same and old else commit)
                kept = {want.version: item.record}
                if previous is not None and state is not None and (record := state.record(want.name, previous)):
                    kept[previous] = record
                versions[want.name] = kept
            retired = [n for n in old_models if (not self.scope or n in self.scope) and n not in models]
            for name in retired:
                self.store.retire(name)
                events.append({"event": "removed", "time": stamp, "model": name, "version": old_models[name].version,
                               "stage": self.stage, "registry_commit": commit})
            for name in models:
                if name not in versions and state is not None:
                    versions[name] = dict(state.versions.get(name, {}))
            new_state = State(
                source=source, ref=refname, stage=self.stage, scope=self.scope, registry_commit=commit,
                applied_at=stamp, models=models, versions=versions,
                failures_total=state.failures_total if state else 0,
                last_failure=state.last_failure if state else None, last_success=time.time())
            self.store.write_state(new_state)
        except BaseException:
            # A disk error part-way (or an interrupt): what was switched goes back, so the
            # folder serves exactly what state.json says and the failure message is true.
            self.store.switch_back(undo)
            raise
        for item in ready:
            self.store.prune(item.want.name, set(versions[item.want.name]))
        summary: dict[str, Any] = {
            "event": "applied", "time": stamp, "stage": self.stage, "registry_commit": commit,
            "previous_commit": state.registry_commit if state else None, "rewound": rewound,
            "models": {n: _model_json(m) for n, m in sorted(models.items())},
            "switched": switched, "fetched": fetched,
            "downloaded_files": sum(r.downloaded_files for r in ready),
            "downloaded_bytes": sum(r.downloaded_bytes for r in ready),
        }
        events.append(summary)
        return PullResult(
            changed=bool(switched or retired or any(e["event"] == "traffic" for e in events)), registry_commit=commit, previous_commit=state.registry_commit if state else None,
            stage=self.stage, models=self._served(new_state), switched=tuple(switched), fetched=fetched,
            downloaded_files=summary["downloaded_files"], downloaded_bytes=summary["downloaded_bytes"],
            verified_files=sum(r.verified_files for r in ready), events=tuple(events)), new_state

    def _served(self, state: State) -> dict[str, Served]:
        served = {}
        for name, model in sorted(state.models.items()):
            record = state.record(name, model.version)
            served[name] = Served(name, model.version, model.traffic, self.store.model_dir(name) / CURRENT,
                                  dict(record.sha256) if record else {}, record.signed_by if record else None)
        return served

    # --- failure, metrics, events -----------------------------------------------------

    def _failed(self, state: State | None, exc: BaseException, progress: _Progress, created_root: bool) -> PullError:
        if isinstance(exc, RegistryError):
            detail = str(exc)
        elif isinstance(exc, OSError) and is_write_error(exc, self.store.root):
            detail = str(unwritable("--to", self.store.root, exc))
        else:
            detail = f"{type(exc).__name__}: {exc}"
        if state is not None and state.models:
            serving = ", ".join(f"{n}@{m.version}" for n, m in sorted(state.models.items()))
            message = f"{detail}\nnothing was changed: still serving {serving} (registry commit {state.registry_commit[:12]})"
        else:
            message = f"{detail}\nnothing was changed: nothing is served from {self.store.root} yet"
        error = type(exc)(message) if isinstance(exc, PullError) else PullError(message)
        self._failures = (self._failures if self._failures is not None else (state.failures_total if state else 0)) + 1
        try:
            if state is not None:
                self.store.write_state(state.with_failure(detail, progress.commit, progress.installed,
                                                          self._failures))
            else:
                self.store.remove_first_pull(created_root)
        except OSError as also:  # the disk that failed the pull may fail this too: say so, keep the cause
            error = type(error)(f"{error}\nrecording the failure in {self.store.state_path} failed too: {also}")
        if isinstance(exc, RewindError | VerificationError) and progress.commit:
            self._refused = (progress.commit, message)
        try:
            self._write_metrics(state, self._last_success or (state.last_success if state else None))
        except Unwritable as also:
            error = type(error)(f"{error}\n{also}")
        return error

    def _write_metrics(self, state: State | None, last_success: float | None) -> None:
        if self.metrics_file is None:
            return
        served = {n: m.version for n, m in state.models.items()} if state else {}
        failures = self._failures if self._failures is not None else (state.failures_total if state else 0)
        try:
            write_metrics(self.metrics_file, self.stage, served, last_success, failures)
        except OSError as exc:
            raise unwritable("--metrics-file", self.metrics_file, exc, "file") from None

    def _emit(self, event: dict[str, Any]) -> None:
        event.setdefault("time", now_iso())
        if self.on_event is not None:
            self.on_event(event)

    def _waiting(self) -> None:
        self._emit({"event": "waiting", "message": f"another pull holds {self.store.root / '.lock'}; waiting"})

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped("stopped by a signal; the step in progress was abandoned and nothing was changed")


def _model_json(model: ModelRecord) -> dict[str, Any]:
    data: dict[str, Any] = {"version": model.version}
    if model.traffic is not None:
        data["traffic"] = model.traffic
    return data


def _normalise_source(source: str) -> str:
    """A local path becomes absolute (state.json must not depend on the working directory)."""
    if not source:
        raise UsageError("--from: give the registry's git URL or path")
    if "://" in source or (":" in source.split("/", 1)[0] and not os.path.exists(source)):
        return source  # a URL, or scp-like user@host:path
    return str(Path(source).expanduser().absolute())


def pull(to: str | Path, *, stage: str, source: str | None = None, ref: str = "main", models: Sequence[str] = (),
         trusted_keys: str | Path | Sequence[ec.EllipticCurvePublicKey] | None = None,
         insecure_skip_signature: bool = False, allow_rewind: bool = False,
         metrics_file: str | Path | None = None, on_event: EventFn | None = None) -> PullResult:
    """One pull of a stage into a folder (see `Puller`)."""
    return Puller(to, stage=stage, source=source, ref=ref, models=models, trusted_keys=trusted_keys,
                  insecure_skip_signature=insecure_skip_signature, allow_rewind=allow_rewind,
                  metrics_file=metrics_file, on_event=on_event).poll()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """SIGTERM and SIGINT set stop (the pull finishes or abandons its step safely) instead of killing."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
