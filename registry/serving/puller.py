"""`registry pull`: the serving client. Pull a stage's versions into a folder, verified, atomically.

    from registry.serving import Puller, pull
    result = pull("/srv/models", stage="production", source="git@github.com:org/registry.git",
                  trusted_keys="release.pub")
    result.models["credit-approval"].path          # /srv/models/credit-approval/current

    puller = Puller("/srv/models", stage="production", source=url, trusted_keys="release.pub")
    puller.watch(interval=30)                       # until puller.stop.set() or a signal

    pull(..., servers=["torchserve=http://127.0.0.1:8081"], per_model=True, with_canary=True)

One poll: ``git ls-remote`` the ref; if it still names the commit last applied,
stop there (no fetch, no download, no write). Otherwise fetch it into a blob-less
mirror, refuse it unless it descends from the commit last applied, resolve the stage
(`registry.serving.resolve`; with ``with_canary`` the canary beside production), and
for each model bring a verified folder to ``DIR/<name>/versions/<version>``
(`registry.serving.prepare`). Then `registry.serving.switch` switches the links, drives
the model servers given (`servers=["torchserve=URL", ...]`, `registry.serving.drive`)
and writes ``DIR/state.json``. Any refusal leaves the last good version serving and
says which model blocked the pull; with ``per_model`` the other models switch anyway and
the refused one is retried by the next poll. `watch` retries failures with back-off
(`registry.serving.watch`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import RegistryError, UsageError
from registry.files.names import check_model_name
from registry.queries import manifest
from registry.repo import git
from registry.serving import watch as watching
from registry.serving.adapters import Adapter, ServerSpec
from registry.serving.drive import Driver, load_adapters
from registry.serving.mirror import Mirror, SourceError, remote_head
from registry.serving.prepare import Preparer, Progress, blame
from registry.serving.receipts import ReceiptLog
from registry.serving.remote import ProgressFn
from registry.serving.resolve import resolve
from registry.serving.store import (
    CANARY,
    CURRENT,
    PullError,
    RewindError,
    ServingDir,
    State,
    Stopped,
    Unwritable,
    is_write_error,
    now_iso,
    probe_file,
    unwritable,
    write_metrics,
)
from registry.serving.switch import Plan, PullResult, Served, Switcher, served
from registry.serving.verify import VerificationError, Wanted, is_trusted, load_trusted_keys

__all__ = ["PullError", "PullResult", "Puller", "RewindError", "Served", "Stopped", "VerificationError",
           "pull", "stop_on_signals"]

SERVABLE = manifest.SERVABLE
MIRROR_DIR = "registry.repo.git"
EventFn = Callable[[dict[str, Any]], None]
ServerArg = str | ServerSpec | Adapter


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
        servers: Sequence[ServerArg] = (),
        per_model: bool = False,
        with_canary: bool = False,
        receipts: ReceiptLog | None = None,
    ) -> None:
        if stage not in SERVABLE:
            raise UsageError(f"--stage {stage}: serving pulls one of {', '.join(SERVABLE)}")
        if with_canary and stage != "production":
            raise UsageError(f"--with-canary goes with --stage production (the canary served beside it), not {stage}")
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
        # DIR/receipts.jsonl: one line per switch and rollback (signed when given a host key).
        self.receipts = receipts if receipts is not None else ReceiptLog(self.store.root)
        self.progress = progress
        self.stop = stop or threading.Event()
        self._polls = 0
        self._failures: int | None = None
        self._last_success: float | None = None
        self._refused: tuple[str, str] | None = None  # a rewind refused: waits until the ref moves
        self.per_model = per_model
        self.with_canary = with_canary
        self.watching = False  # set by watch(): it reports failures itself, with the next try's time
        self.switcher = Switcher(self.store, stage, self.scope, Driver(load_adapters(servers)), per_model,
                                 with_canary, self.keys is not None, False, self._check_stop)
        self.preparer = Preparer(self.store, self.keys, self._check_stop, progress)

    # --- the loop ---------------------------------------------------------------------

    def watch(self, interval: float) -> None:
        """Poll every interval seconds until `stop` is set; failures are reported as events and
        retried with back-off (`registry.serving.watch`); a refused rewind waits for the ref to move."""
        watching.run(self, interval)

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
            progress = Progress()
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
                    for event in getattr(exc, "events", ()):
                        self._emit(event)  # rolled_back, before the failure that caused them
                    raise self._report(self._failed(state, exc, progress, created_root)) from None
                # The commit refused by an earlier poll of this watch, still at the ref: say nothing new.
                if state is None:
                    self.store.remove_first_pull(created_root)
                raise
            except (RegistryError, OSError) as exc:
                self.store.drop_temps()
                raise self._report(self._failed(state, exc, progress, created_root)) from None
        self._last_success = time.time()
        self._refused = None
        self._failures = after.failures_total
        self._write_metrics(after, self._last_success)
        for event in result.events:
            self._emit(event)
        return result

    # --- one poll, under the lock ---------------------------------------------------------

    def _sync(self, state: State | None, progress: Progress) -> tuple[PullResult, State]:
        if state is not None and state.stage != self.stage:
            raise UsageError(f"--to {self.store.root} serves {state.stage}; pull {self.stage} into another folder")
        source = self.source or (state.source if state else None)
        assert source is not None
        try:
            refname, head = remote_head(source, self.ref)
        except SourceError as exc:
            raise PullError(str(exc)) from None
        if state is not None and head == state.registry_commit and self._in_sync(state, source):
            if self.switcher.driver and not self.switcher.synced:
                self.switcher.reapply(state)
            return self._unchanged(state), state
        if self._refused is not None and self._refused[0] == head:
            again = RewindError(self._refused[1])
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
            canaries: dict[str, Wanted] = {}
            if self.with_canary:
                found, canary_remote = resolve(mirror, cat, commit, source, "canary", self.scope, self._check_stop,
                                               required=False)
                canaries = {w.name: w for w in found}
                remote = remote or canary_remote
            plans: list[Plan] = []
            held: dict[str, dict[str, str]] = {}
            for want in wanted:
                doing = want
                try:
                    current = self.preparer.prepare(cat, want, state, remote, progress, CURRENT)
                    canary = None
                    if want.name in canaries:
                        doing = canaries[want.name]
                        canary = self.preparer.prepare(cat, doing, state, remote, progress, CANARY)
                    plans.append(Plan(want.name, current, canary))
                except PullError as exc:
                    named = blame(exc, doing)
                    if not self.per_model:
                        raise named from None
                    self.store.drop_temps()
                    held[want.name] = {"version": doing.version, "error": str(named)}
        return self.switcher.apply(state, source, refname, commit, plans, held, fetched, rewound)

    def _in_sync(self, state: State, source: str) -> bool:
        if state.source != source or state.scope != self.scope or state.with_canary != self.with_canary:
            return False
        if state.held:
            return False  # --per-model held a model back: try it again
        for name in state.in_scope(self.scope):
            model = state.models[name]
            record = state.record(name, model.version)
            if record is None or not is_trusted(self.keys, record.signed_by):
                return False
            if self.store.current_version(name) != model.version:
                return False
            canary = model.canary.version if model.canary else None
            if self.store.current_version(name, CANARY) != canary or (
                    canary and not is_trusted(self.keys, getattr(state.record(name, canary), "signed_by", None))):
                return False
        return True

    def _unchanged(self, state: State) -> PullResult:
        event = {"event": "unchanged", "time": now_iso(), "stage": self.stage,
                 "registry_commit": state.registry_commit}
        return PullResult(False, state.registry_commit, state.registry_commit, self.stage,
                          served(self.store, state), events=(event,))

    # --- failure, metrics, events -----------------------------------------------------

    def _report(self, failure: PullError) -> PullError:
        """A one-off poll says its failure as a `failed` event (a watch says it with the next try's time)."""
        if not self.watching:
            self._emit({"event": "failed", "error": str(failure),
                        **({"model": failure.model} if failure.model else {})})
            failure.reported = True
        return failure

    def _failed(self, state: State | None, exc: BaseException, progress: Progress, created_root: bool) -> PullError:
        if isinstance(exc, RegistryError):
            detail = str(exc)
        elif isinstance(exc, OSError) and is_write_error(exc, self.store.root):
            detail = str(unwritable("--to", self.store.root, exc))
        else:
            detail = f"{type(exc).__name__}: {exc}"
        model = exc.model if isinstance(exc, PullError) else None
        blocks = (f"; {model} blocks this all-or-nothing pull (--per-model lets the other models switch)"
                  if model else "")
        if state is not None and state.models:
            serving = ", ".join(f"{n}@{m.version}" for n, m in sorted(state.models.items()))
            message = (f"{detail}\nnothing was changed: still serving {serving} "
                       f"(registry commit {state.registry_commit[:12]}){blocks}")
        else:
            message = f"{detail}\nnothing was changed: nothing is served from {self.store.root} yet{blocks}"
        error = type(exc)(message) if isinstance(exc, PullError) else PullError(message)
        error.model = model
        self._failures = (self._failures if self._failures is not None else (state.failures_total if state else 0)) + 1
        try:
            if state is not None:
                self.store.write_state(state.with_failure(detail, progress.commit, progress.installed,
                                                          self._failures))
            else:
                self.store.remove_first_pull(created_root)
        except OSError as also:  # the disk that failed the pull may fail this too: say so, keep the cause
            error = _again(error, f"{error}\nrecording the failure in {self.store.state_path} failed too: {also}")
        if isinstance(exc, RewindError) and progress.commit:
            self._refused = (progress.commit, message)
        try:
            self._write_metrics(state, self._last_success or (state.last_success if state else None))
        except Unwritable as also:
            error = _again(error, f"{error}\n{also}")
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
        self.receipts.record(event)
        if self.on_event is not None:
            self.on_event(event)

    def _waiting(self) -> None:
        self._emit({"event": "waiting", "message": f"another pull holds {self.store.root / '.lock'}; waiting"})

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped("stopped by a signal; the step in progress was abandoned and nothing was changed")


def _again(error: PullError, message: str) -> PullError:
    """The same error with a longer message (and still naming its model)."""
    longer = type(error)(message)
    longer.model = error.model
    return longer


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
         metrics_file: str | Path | None = None, on_event: EventFn | None = None,
         servers: Sequence[ServerArg] = (), per_model: bool = False, with_canary: bool = False) -> PullResult:
    """One pull of a stage into a folder (see `Puller`)."""
    return Puller(to, stage=stage, source=source, ref=ref, models=models, trusted_keys=trusted_keys,
                  insecure_skip_signature=insecure_skip_signature, allow_rewind=allow_rewind,
                  metrics_file=metrics_file, on_event=on_event, servers=servers, per_model=per_model,
                  with_canary=with_canary).poll()


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
