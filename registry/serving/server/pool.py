"""One version of one model, live: a small pool of persistent workers, with in-flight accounting for drains.

A `Served` version holds `size` workers (`registry.runner.worker`), each answering one
request at a time; a request takes an idle worker from a queue and gives it back. It is
made only by `launch`, which returns once every worker has loaded the model AND answered
the card's `input_example` (when the card has one), so a half-loaded model is never
reachable. Retiring a version (after a swap) waits until the requests already routed to
it have finished (the drain), then kills its workers.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.runner.worker import ModelFailed, Worker, WorkerDied, WorkerError, worker_spec

__all__ = ["Busy", "Served", "launch"]


class Busy(Exception):
    """No worker of the version became free in time."""


@dataclass(frozen=True)
class Timeouts:
    load_s: float = 300.0
    request_s: float = 60.0
    drain_s: float = 90.0


@dataclass
class Served:
    name: str
    version: str
    folder: Path
    card: Mapping[str, Any]
    request: dict[str, Any]
    python: Path | None
    timeouts: Timeouts
    workers: list[Worker] = field(default_factory=list)
    _starting: list[Worker] = field(default_factory=list)
    _idle: queue.Queue[Worker] = field(default_factory=queue.Queue)
    _inflight: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)
    retired: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def platform(self) -> str:
        return "onnxruntime" if "artifact" in self.request else "registry-python"

    # -- start ----------------------------------------------------------------------

    def _start_worker(self) -> Worker:
        worker = Worker(self.request, self.python, self.label)
        with self._changed:
            if self.retired:
                raise WorkerError(f"{self.label}: retired while starting")
            self._starting.append(worker)
        try:
            worker.start(self.timeouts.load_s)
            example = self.card.get("input_example")
            if example is not None:
                try:
                    worker.predict(example, self.timeouts.request_s)
                except ModelFailed as exc:
                    raise WorkerError(f"input_example: {exc}") from None
        except BaseException:
            worker.stop()
            raise
        finally:
            with self._changed:
                self._starting.remove(worker)
        return worker

    def add_worker(self) -> None:
        worker = self._start_worker()
        with self._changed:
            if self.retired:  # retired while it started: it must not outlive the version
                worker.stop()
                raise WorkerError(f"{self.label}: retired while starting")
            self.workers.append(worker)
        self._idle.put(worker)

    def heal(self, size: int) -> None:
        """Replace workers that died (a crash or a timeout) with fresh ones."""
        if self.retired:
            return
        with self._changed:
            dead = [w for w in self.workers if not w.alive]
            self.workers = [w for w in self.workers if w.alive]
        for worker in dead:
            worker.stop()
        for _ in range(size - len(self.workers)):
            if self.retired:
                return
            self.add_worker()

    # -- requests --------------------------------------------------------------------

    def enter(self) -> None:
        """Count a request routed here (called while the router holds its lock)."""
        with self._changed:
            self._inflight += 1

    def leave(self) -> None:
        with self._changed:
            self._inflight -= 1
            self._changed.notify_all()

    def predict(self, inputs: Any) -> Any:
        deadline = time.monotonic() + self.timeouts.request_s
        worker = self._acquire(deadline)
        try:
            return worker.predict(inputs, max(0.001, deadline - time.monotonic()))
        finally:
            if worker.alive:
                self._idle.put(worker)

    def _acquire(self, deadline: float) -> Worker:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Busy(f"{self.label}: no worker became free within {self.timeouts.request_s:g} s")
            try:
                worker = self._idle.get(timeout=min(left, 0.2))
            except queue.Empty:
                if not any(w.alive for w in self.workers):
                    raise WorkerDied(f"{self.label}: no live worker (restarting)") from None
                continue
            if worker.alive:
                return worker

    # -- stop -------------------------------------------------------------------------

    def retire(self, drain: bool = True) -> None:
        """Wait for the requests routed here to finish (at most drain_s), then kill the workers."""
        self.retired = True
        if drain:
            deadline = time.monotonic() + self.timeouts.drain_s
            with self._changed:
                while self._inflight > 0 and time.monotonic() < deadline:
                    self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        with self._changed:
            workers = [*self.workers, *self._starting]
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.stop()

    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid is not None]


def launch(name: str, version: str, folder: Path, card: Mapping[str, Any], size: int,
           timeouts: Timeouts, track: Callable[[Served], None] = lambda served: None) -> Served:
    """A version with `size` workers that have loaded it and answered input_example. Raises WorkerError.

    `track` gets the version before its workers start, so that a server stopping meanwhile
    can retire it (which kills the workers still starting).
    """
    request, python = worker_spec(folder, card, f"{name}/{version}")
    served = Served(name, version, folder, card, request, python, timeouts)
    track(served)
    try:
        for _ in range(size):
            served.add_worker()
    except BaseException:
        served.retire(drain=False)
        raise
    return served
