"""Runs a version's model for the smoke and latency gates (and, for `metrics`, its predictions) in a child.

The model's code (the card's `entrypoint`, a Python file with `load(path)` and
`predict(model, inputs)`) or its ONNX artifact is never run in this process. Each call
starts one child process (`registry/runner/child.py`) and:

- runs it with this interpreter (`sys.executable`, so NumPy and the like import) as
  `python -s -P -B`: no user site-packages, no script directory on `sys.path`, no
  bytecode written into the version folder. That is `-I` without `-E`: `-E` would
  only make Python ignore `PYTHON*` variables, and the environment below is built
  from nothing, so the one thing `-E` would add is to drop `PYTHONHASHSEED=0`.
  When the card declares an environment (`registry.runner.environment`), the same child
  runs with that environment's Python instead, as `python -S -s -P -B`: its
  site-packages (and any `.pth` file a package installed there) are read by the child
  only after it has confined itself;
- gives it an environment built from nothing: `PATH`, `LANG`, `HOME` and `TMPDIR`
  (a fresh temp dir, also its working directory), `PYTHONHASHSEED=0` (hash order is
  reproducible) and `PYTHONDONTWRITEBYTECODE=1`. Nothing else of ours is inherited:
  no `PYTHONPATH`, no `AWS_*`, `GITHUB_TOKEN`, `GIT_*` or any other credential;
- closes its stdin and keeps only the last `OUTPUT_CAP_BYTES` of its stdout and
  stderr, which are for people and never parsed;
- reads the result as one JSON object from a dedicated pipe, so whatever the user's
  code prints cannot be mistaken for it;
- runs it in a new session and, on timeout and after every run, kills its whole
  process group with SIGKILL, so nothing the model started outlives the gate;
- confines it (see `registry.runner.sandbox`).

Everything the gates conclude is computed here, in the parent: latency percentiles
from raw per-call timings, metrics (`registry.runner.metrics`) from the model's raw
predictions against the pinned labels. Numbers the model's code might report are never read.

POSIX only (process groups, `start_new_session`), as are the CI runners.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from registry.runner.environment import DECLARE_HINT
from registry.runner.sandbox import last_line, not_dumpable, sandbox, with_notes

__all__ = [
    "OUTPUT_CAP_BYTES",
    "REPLY_CAP_BYTES",
    "WARMUP_CALLS",
    "LatencyResult",
    "Outcome",
    "RunResult",
    "child_command",
    "entrypoint_problem",
    "latency",
    "no_environment_hint",
    "onnx_smoke",
    "percentile",
    "run_child",
    "smoke",
]

Status = Literal["pass", "fail", "skip"]

CHILD_SCRIPT = Path(__file__).with_name("child.py")
OUTPUT_CAP_BYTES = 64 * 1024  # of stdout and of stderr, each: the tail is kept
REPLY_CAP_BYTES = 256 * 1024 * 1024  # predictions for a large evaluation set fit
PREVIEW_CHARS = 200
WARMUP_CALLS = 3


@dataclass(frozen=True)
class RunResult:
    status: Status
    message: str
    seconds: float  # wall clock of the whole child: interpreter start, load, predict
    output_preview: str | None = None  # the output as JSON, cut at PREVIEW_CHARS


@dataclass(frozen=True)
class LatencyResult:
    status: Status
    message: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    runs: int = 0  # calls timed (warm-up calls excluded)


# --- the child process -------------------------------------------------------------


def child_environment(home: Path) -> dict[str, str]:
    """The child's whole environment: nothing is inherited beyond PATH and LANG."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class _Drain(threading.Thread):
    """Reads a pipe to its end, keeping at most `cap` bytes (the head or the tail)."""

    def __init__(self, fd: int, cap: int, keep: Literal["head", "tail"]) -> None:
        super().__init__(daemon=True)
        self.fd, self.cap, self.keep = fd, cap, keep
        self.data = bytearray()
        self.overflowed = False

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
                self.data += chunk
                if len(self.data) > self.cap:
                    self.overflowed = True
                    if self.keep == "tail":
                        del self.data[: len(self.data) - self.cap]
                    else:
                        del self.data[self.cap :]
        finally:
            os.close(self.fd)


@dataclass(frozen=True)
class Outcome:
    """What one child run came to: its reply, or why there is none."""

    reply: dict[str, Any] | None  # the child's report, when it made one
    failure: str | None  # why there is no usable report
    skip: str | None
    seconds: float


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_unreaped(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait for the child to exit without reaping it; False on timeout.

    Left a zombie, the child keeps its process group id reserved, so the group can be
    killed afterwards without any risk of hitting a reused id.
    """
    if not hasattr(os, "waitid"):  # macOS: reap, then kill what is left of the group
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout_s
    pause = 0.001
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.02)
    return True


def _exit_failure(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        why = "out of memory?" if number == signal.SIGKILL else name
        message = f"killed by signal {number} ({why})"
    elif returncode > 0:
        message = f"exited with code {returncode} before reporting a result"
    else:
        message = "exited before reporting a result"
    last = last_line(stderr)
    return f"{message}; stderr ends: {last}" if last else message


def child_command(python: Path | None) -> list[str]:
    """The interpreter and its flags: this one, or a declared environment's (site read late, by the child)."""
    if python is None:
        return [sys.executable, "-s", "-P", "-B"]
    return [str(python), "-S", "-s", "-P", "-B"]


def run_child(request: dict[str, Any], timeout_s: float, python: Path | None = None) -> Outcome:
    """Run the child on one request, confined, within timeout_s; kill its process group after.

    `python` is a declared environment's interpreter (`environment.prepare`); None runs
    the child with this one.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if python is not None:
        request = {**request, "site": True}
    try:
        request_text = json.dumps(request, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return Outcome(None, f"input_example is not JSON-like: {exc}", None, 0.0)
    confinement = sandbox()
    with tempfile.TemporaryDirectory(prefix="registry-run-") as root, not_dumpable():
        work = Path(root, "work")
        work.mkdir()
        request_file = Path(root, "request.json")
        request_file.write_text(request_text, encoding="utf-8")
        reply_read, reply_write = os.pipe()
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [*confinement.prefix, *child_command(python), str(CHILD_SCRIPT), str(request_file),
                 str(reply_write), str(confinement.landlock_abi)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=work,
                env=child_environment(work),
                pass_fds=(reply_write,),
                start_new_session=True,
            )
        except BaseException:
            os.close(reply_read)
            raise
        finally:
            os.close(reply_write)
        assert process.stdout is not None and process.stderr is not None
        drains = [
            _Drain(reply_read, REPLY_CAP_BYTES, "head"),
            _Drain(os.dup(process.stdout.fileno()), OUTPUT_CAP_BYTES, "tail"),
            _Drain(os.dup(process.stderr.fileno()), OUTPUT_CAP_BYTES, "tail"),
        ]
        process.stdout.close()
        process.stderr.close()
        for drain in drains:
            drain.start()
        try:
            finished = _wait_unreaped(process, timeout_s)
        finally:
            _kill_group(process.pid)  # on timeout, and whatever the model left running
            returncode = process.wait()
        seconds = time.monotonic() - started
        # Pipes still open now are held by a process that left the group (setsid): stop
        # reading rather than wait for it.
        deadline = time.monotonic() + 2
        for drain in drains:
            drain.join(timeout=max(0.0, deadline - time.monotonic()))
        reply_drain, _, stderr_drain = drains
    if reply_drain.overflowed:
        return Outcome(None, f"the model's output is larger than {REPLY_CAP_BYTES >> 20} MiB", None, seconds)
    try:
        reply = json.loads(bytes(reply_drain.data)) if reply_drain.data else None
    except ValueError:
        reply = None  # cut short by a crash or a kill: fall through to why
    if isinstance(reply, dict) and reply.get("ok") is True:
        return Outcome(reply, None, None, seconds)
    if isinstance(reply, dict) and isinstance(reply.get("skip"), str):
        return Outcome(None, None, reply["skip"], seconds)
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return Outcome(None, reply["error"], None, seconds)
    if not finished:
        return Outcome(None, f"timed out after {timeout_s:g} s", None, seconds)
    return Outcome(None, _exit_failure(returncode, bytes(stderr_drain.data)), None, seconds)


def entrypoint_problem(folder: Path, entrypoint: str) -> str | None:
    """Why the card's entrypoint cannot be run (not a .py file inside the folder), or None."""
    relative = PurePosixPath(entrypoint)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".py":
        return f"entrypoint {entrypoint!r} must name a .py file inside the version folder"
    return _file_problem(folder, entrypoint, "entrypoint")


def onnx_problem(folder: Path, artifact: str) -> str | None:
    """Why an ONNX artifact cannot be run (not a .onnx file inside the folder), or None."""
    relative = PurePosixPath(artifact)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".onnx":
        return f"{artifact!r} must name a .onnx file inside the version folder"
    return _file_problem(folder, artifact, "ONNX artifact")


def _file_problem(folder: Path, relative: str, what: str) -> str | None:
    path = folder / relative
    if not path.is_file():
        return f"{what} {relative} not found in {folder}"
    if not path.resolve().is_relative_to(folder.resolve()):
        return f"{what} {relative} points outside the version folder"
    return None


def _preview(output: Any) -> str:
    text = json.dumps(output)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


# --- smoke -------------------------------------------------------------------------


def no_environment_hint(failure: str | None, python: Path | None) -> str | None:
    """A failure to import a module, with no environment declared: say how to declare one."""
    if failure and python is None and "No module named" in failure:
        return f"{failure} (the model ran in the registry's own Python: {DECLARE_HINT})"
    return failure


def smoke(folder: Path, entrypoint: str | None, input_example: Any, timeout_s: float,
          python: Path | None = None) -> RunResult:
    """Load the model and predict once on the card's input example (with `python`, a
    declared environment's interpreter, when given)."""
    if entrypoint is None:
        return RunResult("skip", "the card names no entrypoint", 0.0)
    if input_example is None:
        return RunResult("skip", "the card has no input_example to run the model on", 0.0)
    problem = entrypoint_problem(folder, entrypoint)
    if problem:
        return RunResult("fail", problem, 0.0)
    request = {
        "mode": "smoke",
        "folder": str(folder.resolve()),
        "entrypoint": entrypoint,
        "input_example": input_example,
    }
    return _run_result(run_child(request, timeout_s, python), entrypoint, python)


def onnx_smoke(folder: Path, artifact: str, input_example: Any, timeout_s: float,
               python: Path | None = None) -> RunResult:
    """Run an ONNX artifact once on the input example with onnxruntime, if installed.

    `input_example` is either a map from the model's input names to values or, for a
    model with one input, the value itself; values are cast to the declared dtypes.
    """
    if python is None and importlib.util.find_spec("onnxruntime") is None:  # the child runs this interpreter
        return RunResult("skip", "onnxruntime not installed", 0.0)
    if input_example is None:
        return RunResult("skip", "the card has no input_example to run the model on", 0.0)
    problem = onnx_problem(folder, artifact)
    if problem:
        return RunResult("fail", problem, 0.0)
    request = {
        "mode": "onnx",
        "folder": str(folder.resolve()),
        "artifact": artifact,
        "input_example": input_example,
    }
    return _run_result(run_child(request, timeout_s, python), artifact, python)


def _run_result(outcome: Outcome, label: str, python: Path | None) -> RunResult:
    if outcome.skip is not None:
        return RunResult("skip", outcome.skip, outcome.seconds)
    if outcome.reply is None:
        return RunResult("fail", no_environment_hint(outcome.failure, python) or "no result", outcome.seconds)
    reply = outcome.reply
    message = f"{label}: loaded in {reply['load_s']:.3f} s, predicted in {reply['predict_s']:.3f} s"
    return RunResult("pass", with_notes(message), outcome.seconds, _preview(reply["output"]))


# --- latency -----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with at least p% of values <= it.

    Always a measured value, never an interpolation between two (the same as
    `numpy.percentile(values, p, method="inverted_cdf")`). With 100 runs, p99 is the
    second slowest call; with fewer than 100, it is the slowest.
    """
    if not values:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def latency(
    folder: Path, entrypoint: str | None, input_example: Any, runs: int, timeout_s: float,
    python: Path | None = None,
) -> LatencyResult:
    """Time `runs` predict calls on the input example, after loading (untimed) and
    `WARMUP_CALLS` untimed warm-up calls. `timeout_s` bounds the whole child.

    Each call is timed in the child with `time.perf_counter_ns`; P50 and P99 are
    computed here from those timings (see `percentile`). Thresholds are the gate's.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    if entrypoint is None:
        return LatencyResult("skip", "the card names no entrypoint")
    if input_example is None:
        return LatencyResult("skip", "the card has no input_example to time the model on")
    problem = entrypoint_problem(folder, entrypoint)
    if problem:
        return LatencyResult("fail", problem)
    request = {
        "mode": "latency",
        "folder": str(folder.resolve()),
        "entrypoint": entrypoint,
        "input_example": input_example,
        "warmup": WARMUP_CALLS,
        "runs": runs,
    }
    outcome = run_child(request, timeout_s, python)
    if outcome.reply is None:
        return LatencyResult("fail", no_environment_hint(outcome.failure, python) or "no result")
    timings = outcome.reply.get("timings_ns")
    if (
        not isinstance(timings, list)
        or len(timings) != runs
        or not all(isinstance(t, int) and t >= 0 for t in timings)
    ):
        return LatencyResult("fail", "the child reported malformed timings")
    p50 = percentile(timings, 50) / 1e6
    p99 = percentile(timings, 99) / 1e6
    message = f"p50 {p50:.2f} ms, p99 {p99:.2f} ms over {runs} runs ({WARMUP_CALLS} warm-up calls before)"
    return LatencyResult("pass", with_notes(message), p50, p99, runs)

