"""A persistent model worker: the parent side of `child.py`'s `serve` mode, for the built-in server.

`run_child` starts one child per gate run; a server needs the model loaded once and
then many predictions. A `Worker` is one such child, started and confined exactly as
`run_child` starts its children (`registry.runner.run`: argv list, environment built
from nothing, a fresh temporary folder as working directory and `$HOME`, new session,
`unshare` and Landlock where the machine has them, this process not dumpable while it
lives), with one more pipe: requests go to the child on it, replies come back on the
reply pipe, each a length-prefixed JSON frame (`child.FRAME_HEADER`). What the model
prints goes to a kept tail of stdout and stderr, never parsed.

A worker answers one request at a time (the caller serialises: `registry.serving.server`
keeps a pool of idle workers). A model that raises answers that request with
`ModelFailed` and goes on; a worker that dies, times out or breaks the protocol is
killed (its whole process group) and raises `WorkerDied`; it is not used again.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from registry.runner.environment import EnvironmentProblem, prepare
from registry.runner.run import (
    CHILD_SCRIPT,
    OUTPUT_CAP_BYTES,
    REPLY_CAP_BYTES,
    _Drain,
    _kill_group,
    child_command,
    child_environment,
    entrypoint_problem,
    no_environment_hint,
    onnx_problem,
)
from registry.runner.sandbox import last_line, not_dumpable, sandbox

__all__ = ["FRAME_HEADER", "ModelFailed", "Worker", "WorkerDied", "WorkerError", "worker_spec"]

FRAME_HEADER = struct.Struct(">I")  # child.FRAME_HEADER: the child cannot import us, nor we it


class WorkerError(Exception):
    """The model cannot be served by this worker; the message says why."""


class ModelFailed(WorkerError):
    """The model's code raised on this request; the worker is still usable."""


class WorkerDied(WorkerError):
    """The worker process is gone (crashed, killed, timed out, broke the protocol)."""


def worker_spec(folder: Path, card: Mapping[str, Any], label: str) -> tuple[dict[str, Any], Path | None]:
    """The child request and the interpreter (a declared environment's, or None for ours) for a version.

    The card's `entrypoint` (predict.py) when it has one, else its single `.onnx` artifact
    (served with onnxruntime in the child's interpreter). Raises WorkerError when neither
    can be served.
    """
    python: Path | None = None
    environment = card.get("environment")
    if isinstance(environment, str):
        try:
            python = prepare(folder, environment, f"{label}/{environment}")
        except EnvironmentProblem as exc:
            raise WorkerError(str(exc)) from None
    entrypoint = card.get("entrypoint")
    if isinstance(entrypoint, str):
        problem = entrypoint_problem(folder, entrypoint)
        if problem:
            raise WorkerError(problem)
        return {"mode": "serve", "folder": str(folder.resolve()), "entrypoint": entrypoint}, python
    onnx = [a["path"] for a in card.get("artifacts", ()) if isinstance(a, Mapping)
            and str(a.get("path", "")).endswith(".onnx")]
    if len(onnx) == 1:
        problem = onnx_problem(folder, onnx[0])
        if problem:
            raise WorkerError(problem)
        return {"mode": "serve", "folder": str(folder.resolve()), "artifact": onnx[0]}, python
    raise WorkerError("the card names no entrypoint (predict.py with load and predict) and no single .onnx "
                      "artifact: nothing to serve (see docs/model-code.md)")


class Worker:
    """One confined child holding one loaded model."""

    def __init__(self, request: Mapping[str, Any], python: Path | None, label: str) -> None:
        self.label = label
        self.python = python
        self._request = {**request, "site": True} if python is not None else dict(request)
        self._stack = contextlib.ExitStack()
        self._process: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1
        self._drains: list[_Drain] = []
        self._dead: str | None = None
        # One request on the pipes at a time; start holds it too. Re-entrant: a failure inside
        # stops the worker while holding it. `stop` from another thread kills the process group
        # first, so that whoever holds the lock sees the pipes end, and only then closes them.
        self._lock = threading.RLock()

    # -- life cycle ------------------------------------------------------------------

    def start(self, timeout_s: float) -> float:
        """Start the child and wait until the model has loaded; the load's seconds. Raises WorkerError."""
        with self._lock:
            if self._dead is not None:
                raise WorkerError(f"{self.label}: {self._dead} before it started")
            return self._start(timeout_s)

    def _start(self, timeout_s: float) -> float:
        confinement = sandbox()
        root = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-serve-")))
        work = root / "work"
        work.mkdir()
        request_file = root / "request.json"
        request_file.write_text(json.dumps(self._request), encoding="utf-8")
        self._stack.enter_context(not_dumpable())
        reply_read, reply_write = os.pipe()
        request_read, request_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [*confinement.prefix, *child_command(self.python), str(CHILD_SCRIPT), str(request_file),
                 str(reply_write), str(confinement.landlock_abi), str(request_read)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work,
                env=child_environment(work), pass_fds=(reply_write, request_read), start_new_session=True,
            )
        except BaseException:
            os.close(reply_read)
            os.close(request_write)
            self._stack.close()
            raise
        finally:
            os.close(reply_write)
            os.close(request_read)
        self._from_child, self._to_child = reply_read, request_write
        os.set_blocking(self._from_child, False)
        process = self._process
        assert process.stdout is not None and process.stderr is not None
        self._drains = [_Drain(os.dup(process.stdout.fileno()), OUTPUT_CAP_BYTES, "tail"),
                        _Drain(os.dup(process.stderr.fileno()), OUTPUT_CAP_BYTES, "tail")]
        process.stdout.close()
        process.stderr.close()
        for drain in self._drains:
            drain.start()
        try:
            hello = self._read(time.monotonic() + timeout_s, "loading")
        except WorkerDied as exc:
            raise WorkerError(no_environment_hint(str(exc), self.python) or str(exc)) from None
        if hello.get("ok") is not True or hello.get("ready") is not True:
            error = str(hello.get("error") or "the worker did not report ready")
            self.stop()
            raise WorkerError(no_environment_hint(error, self.python) or error)
        return float(hello.get("load_s", 0.0))

    @property
    def alive(self) -> bool:
        return self._dead is None and self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self, why: str = "stopped") -> None:
        """Kill the child's whole process group and release everything (idempotent; any thread)."""
        if self._dead is None:
            self._dead = why
        process = self._process
        if process is not None and process.returncode is None:  # not reaped: its group id is still its own
            _kill_group(process.pid)
        with self._lock:
            self._release()

    def _release(self) -> None:
        process = self._process
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_child = self._from_child = -1
        for drain in self._drains:
            drain.join(timeout=1)
        self._drains = []
        self._stack.close()

    # -- requests --------------------------------------------------------------------

    def predict(self, inputs: Any, timeout_s: float) -> Any:
        """The model's output for `inputs`. ModelFailed: it raised; WorkerDied: the worker is gone."""
        with self._lock:
            if not self.alive:
                raise WorkerDied(f"{self.label}: the worker is gone ({self._dead})")
            try:
                data = json.dumps({"inputs": inputs}, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise ModelFailed(f"the inputs are not JSON: {exc}") from None
            if len(data) > REPLY_CAP_BYTES:
                raise ModelFailed(f"the request is larger than {REPLY_CAP_BYTES >> 20} MiB")
            deadline = time.monotonic() + timeout_s
            try:
                self._write(FRAME_HEADER.pack(len(data)) + data)
            except OSError as exc:
                self._die(f"the worker stopped reading requests ({exc.strerror})")
            reply = self._read(deadline, "predicting")
        if reply.get("ok") is True and "output" in reply:
            return reply["output"]
        raise ModelFailed(str(reply.get("error") or "the worker sent a malformed reply"))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._to_child, view):]

    def _die(self, why: str) -> NoReturn:
        tail = last_line(bytes(self._drains[1].data)) if len(self._drains) > 1 else ""
        self.stop(why)
        if self._process is not None and self._process.returncode not in (None, 0, -9):
            why = f"{why} (exit code {self._process.returncode})"
        raise WorkerDied(f"{self.label}: {why}" + (f"; stderr ends: {tail}" if tail else ""))

    def _read(self, deadline: float, doing: str) -> dict[str, Any]:
        header = self._read_exactly(FRAME_HEADER.size, deadline, doing)
        (size,) = FRAME_HEADER.unpack(header)
        if size > REPLY_CAP_BYTES:
            self._die(f"the model's output is larger than {REPLY_CAP_BYTES >> 20} MiB")
        try:
            reply = json.loads(self._read_exactly(size, deadline, doing))
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            self._die("the worker broke the protocol")
        return reply

    def _read_exactly(self, size: int, deadline: float, doing: str) -> bytes:
        data = bytearray()
        while len(data) < size:
            if self._dead is not None:  # stopped from another thread
                self._die(self._dead)
            left = deadline - time.monotonic()
            if left <= 0:
                self._die(f"timed out {doing}")
            ready, _, _ = select.select([self._from_child], [], [], min(left, 1.0))
            if not ready:
                continue
            try:
                chunk = os.read(self._from_child, size - len(data))
            except BlockingIOError:
                continue
            if not chunk:
                self._die(f"the worker exited while {doing}")
            data += chunk
        return bytes(data)
