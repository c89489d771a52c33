"""`registry pull --watch`: poll forever, retrying failures with exponential back-off.

After a failed poll the next try waits interval, 2x, 4x ... up to 10x the interval
(at most 600 s, never less than the interval); a poll that succeeds resets it. Every
failure is retried, so a DVC copy that is repaired or a model server that comes back is
picked up without a restart even when the registry ref did not move. Only a rewind
(a registry commit that does not descend from the one applied) stays refused until the
ref moves: those polls cost one ``git ls-remote`` each and say nothing new.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, Protocol

from registry.errors import RegistryError, UsageError
from registry.serving.store import PullError, RewindError, ServingDir, Stopped, Unwritable

__all__ = ["MAX_BACKOFF", "backoff", "run"]

MAX_BACKOFF = 600.0
MAX_FACTOR = 10


class Puller(Protocol):
    """What the loop needs of `registry.serving.puller.Puller`."""

    stage: str
    ref: str
    store: ServingDir
    stop: threading.Event
    watching: bool
    _polls: int

    def poll(self) -> Any: ...

    def _emit(self, event: dict[str, Any]) -> None: ...

    def _source_in_use(self) -> str | None: ...


def backoff(interval: float, failures: int) -> float:
    """Seconds to wait after `failures` failed polls in a row (0: the plain interval)."""
    if failures <= 0:
        return interval
    cap = max(interval, min(MAX_FACTOR * interval, MAX_BACKOFF))
    return min(interval * 2.0 ** min(failures - 1, 60), cap)


def run(puller: Puller, interval: float) -> None:
    """Poll every interval seconds until `puller.stop` is set."""
    if interval <= 0:
        raise UsageError(f"--interval {interval}: give a number of seconds above 0")
    puller.watching = True
    try:
        puller._emit({"event": "watching", "stage": puller.stage, "to": str(puller.store.root),
                      "source": puller._source_in_use(), "ref": puller.ref, "interval": interval})
        failures = 0
        while not puller.stop.is_set():
            error: RegistryError | None = None
            try:
                result = puller.poll()
            except Stopped:
                break
            except (UsageError, Unwritable) as exc:
                if puller._polls <= 1:
                    raise
                error = exc
            except RewindError as exc:
                failures = 0  # refused until the ref moves: each poll is one ls-remote, no back-off
                if not exc.repeated:
                    _failed(puller, exc, interval, "the ref to move")
                if puller.stop.wait(interval):
                    break
                continue
            except RegistryError as exc:
                error = exc
            if error is not None:
                failures += 1
                _failed(puller, error, backoff(interval, failures))
            elif result.held:
                failures += 1  # --per-model: the held models are retried with back-off too
            else:
                failures = 0
            if puller.stop.wait(backoff(interval, failures)):
                break
    finally:
        puller.watching = False
    puller._emit({"event": "stopped"})


def _failed(puller: Puller, exc: RegistryError, wait: float, until: str | None = None) -> None:
    event: dict[str, Any] = {"event": "failed", "error": str(exc), "retry_in": wait,
                             "next_try": (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait))
                             .isoformat(timespec="seconds")}
    if isinstance(exc, PullError) and exc.model:
        event["model"] = exc.model
    if until:
        event["waiting_for"] = until
    puller._emit(event)
