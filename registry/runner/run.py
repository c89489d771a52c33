"""Runs a version's model for the smoke, latency and metrics gates, in a sandboxed child.

The model's code (the card's `entrypoint`, a Python file with `load(path)` and
`predict(model, inputs)`) or its ONNX artifact is never run in this process. Each call
starts one child process (`registry/runner/child.py`) and:

- runs it with this interpreter (`sys.executable`, so NumPy and the like import) as
  `python -s -P -B`: no user site-packages, no script directory on `sys.path`, no
  bytecode written into the version folder. That is `-I` without `-E`: `-E` would
  only make Python ignore `PYTHON*` variables, and the environment below is built
  from nothing, so the one thing `-E` would add is to drop `PYTHONHASHSEED=0`;
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
- confines it (see `sandbox()`), on Linux: this process is not dumpable while a child
  runs, so the child cannot read its `/proc/<pid>/environ` or memory nor ptrace it; the
  child starts in new user and network namespaces (`unshare`: no network at all, not
  even loopback), sets no-new-privileges, drops every capability and, with Landlock,
  may write only below its own temporary folder (the version folder, the registry's
  work tree and everything else are read-only to it), may not open TCP connections,
  nor ptrace or signal any process outside its sandbox. What the OS does not allow
  here is named in the gate's message (`sandbox: network not isolated: ...`); what the
  parent found available and the child then cannot apply fails the gate.

Everything the gates conclude is computed here, in the parent: latency percentiles
from raw per-call timings, metrics from the model's raw predictions against the
pinned labels. Numbers the model's code might report are never read.

POSIX only (process groups, `start_new_session`), as are the CI runners.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import functools
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

__all__ = [
    "METRICS",
    "OUTPUT_CAP_BYTES",
    "REPLY_CAP_BYTES",
    "WARMUP_CALLS",
    "EvalResult",
    "LatencyResult",
    "RunResult",
    "compute_metrics",
    "evaluate",
    "latency",
    "onnx_smoke",
    "percentile",
    "sandbox",
    "smoke",
]

Status = Literal["pass", "fail", "skip"]
Label = int | float | str

CHILD_SCRIPT = Path(__file__).with_name("child.py")
OUTPUT_CAP_BYTES = 64 * 1024  # of stdout and of stderr, each: the tail is kept
REPLY_CAP_BYTES = 256 * 1024 * 1024  # predictions for a large evaluation set fit
PREVIEW_CHARS = 200
WARMUP_CALLS = 3
LABEL_COLUMN = "label"


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


@dataclass(frozen=True)
class EvalResult:
    status: Status
    message: str
    metrics: dict[str, float]


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


# --- the sandbox -------------------------------------------------------------------

# New user and network namespaces for the child: it is root of a namespace that owns
# nothing, and it has only a loopback interface that is down.
UNSHARE = ("unshare", "--user", "--map-root-user", "--net", "--")
LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_NET_ABI = 4  # TCP bind/connect rules
PR_GET_DUMPABLE, PR_SET_DUMPABLE = 3, 4


@dataclass(frozen=True)
class Sandbox:
    """How children are confined on this machine, decided once per process."""

    prefix: tuple[str, ...]  # prepended to the child's command: UNSHARE, or nothing
    landlock_abi: int  # the kernel's Landlock ABI version; 0 when there is none
    notes: tuple[str, ...]  # what is not confined here, said in every gate message


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _landlock_abi() -> tuple[int, str]:
    libc = _libc()
    if libc is None:
        return 0, f"no Landlock on {sys.platform}"
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if abi <= 0:
        return 0, f"Landlock unavailable ({os.strerror(ctypes.get_errno())})"
    return int(abi), ""


def _unshare_problem() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"no network namespaces on {sys.platform}"
    if shutil.which(UNSHARE[0]) is None:
        return f"{UNSHARE[0]} not found on PATH"
    try:
        probe = subprocess.run([*UNSHARE, "true"], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{UNSHARE[0]} could not run: {exc}"
    if probe.returncode != 0:
        return _last_line(probe.stderr) or f"{UNSHARE[0]} exited with code {probe.returncode}"
    return None


@functools.cache
def sandbox() -> Sandbox:
    """Probe what this machine allows: unshare (user + network namespaces) and Landlock."""
    notes: list[str] = []
    unshare_problem = _unshare_problem()
    abi, landlock_problem = _landlock_abi()
    if unshare_problem is None:
        prefix: tuple[str, ...] = UNSHARE
    elif abi >= LANDLOCK_NET_ABI:
        prefix = ()
        notes.append(f"network partly isolated: TCP refused by Landlock, not UDP ({unshare_problem})")
    else:
        prefix = ()
        notes.append(f"network not isolated: {unshare_problem}")
    if abi == 0:
        notes.append(f"writes not confined to the child's temporary folder: {landlock_problem}")
    if _libc() is None:
        notes.append(f"parent environment not protected: no prctl on {sys.platform}")
    return Sandbox(prefix, abi, tuple(notes))


_dumpable_lock = threading.Lock()
_dumpable_holders = 0
_dumpable_before = 1


@contextlib.contextmanager
def _not_dumpable() -> Iterator[None]:
    """While a child runs, no process of the same user can read this one's
    /proc/<pid>/environ or memory, nor ptrace it (PR_SET_DUMPABLE 0)."""
    global _dumpable_holders, _dumpable_before
    libc = _libc()
    if libc is None:
        yield
        return
    with _dumpable_lock:
        if _dumpable_holders == 0:
            _dumpable_before = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
            if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        _dumpable_holders += 1
    try:
        yield
    finally:
        with _dumpable_lock:
            _dumpable_holders -= 1
            if _dumpable_holders == 0 and _dumpable_before > 0:
                libc.prctl(PR_SET_DUMPABLE, _dumpable_before, 0, 0, 0)


def _with_notes(message: str) -> str:
    notes = sandbox().notes
    return f"{message}; sandbox: {'; '.join(notes)}" if notes else message


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
class _Outcome:
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


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= 300 else line[:299] + "…"


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
    last = _last_line(stderr)
    return f"{message}; stderr ends: {last}" if last else message


def _run_child(request: dict[str, Any], timeout_s: float) -> _Outcome:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    try:
        request_text = json.dumps(request, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return _Outcome(None, f"input_example is not JSON-like: {exc}", None, 0.0)
    confinement = sandbox()
    with tempfile.TemporaryDirectory(prefix="registry-run-") as root, _not_dumpable():
        work = Path(root, "work")
        work.mkdir()
        request_file = Path(root, "request.json")
        request_file.write_text(request_text, encoding="utf-8")
        reply_read, reply_write = os.pipe()
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                [*confinement.prefix, sys.executable, "-s", "-P", "-B", str(CHILD_SCRIPT), str(request_file),
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
        return _Outcome(None, f"the model's output is larger than {REPLY_CAP_BYTES >> 20} MiB", None, seconds)
    try:
        reply = json.loads(bytes(reply_drain.data)) if reply_drain.data else None
    except ValueError:
        reply = None  # cut short by a crash or a kill: fall through to why
    if isinstance(reply, dict) and reply.get("ok") is True:
        return _Outcome(reply, None, None, seconds)
    if isinstance(reply, dict) and isinstance(reply.get("skip"), str):
        return _Outcome(None, None, reply["skip"], seconds)
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        return _Outcome(None, reply["error"], None, seconds)
    if not finished:
        return _Outcome(None, f"timed out after {timeout_s:g} s", None, seconds)
    return _Outcome(None, _exit_failure(returncode, bytes(stderr_drain.data)), None, seconds)


def _entrypoint_problem(folder: Path, entrypoint: str) -> str | None:
    relative = PurePosixPath(entrypoint)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".py":
        return f"entrypoint {entrypoint!r} must name a .py file inside the version folder"
    return _file_problem(folder, entrypoint, "entrypoint")


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


def smoke(folder: Path, entrypoint: str | None, input_example: Any, timeout_s: float) -> RunResult:
    """Load the model and predict once on the card's input example."""
    if entrypoint is None:
        return RunResult("skip", "the card names no entrypoint", 0.0)
    if input_example is None:
        return RunResult("skip", "the card has no input_example to run the model on", 0.0)
    problem = _entrypoint_problem(folder, entrypoint)
    if problem:
        return RunResult("fail", problem, 0.0)
    request = {
        "mode": "smoke",
        "folder": str(folder.resolve()),
        "entrypoint": entrypoint,
        "input_example": input_example,
    }
    return _run_result(_run_child(request, timeout_s), entrypoint)


def onnx_smoke(folder: Path, artifact: str, input_example: Any, timeout_s: float) -> RunResult:
    """Run an ONNX artifact once on the input example with onnxruntime, if installed.

    `input_example` is either a map from the model's input names to values or, for a
    model with one input, the value itself; values are cast to the declared dtypes.
    """
    if importlib.util.find_spec("onnxruntime") is None:  # the child runs this interpreter
        return RunResult("skip", "onnxruntime not installed", 0.0)
    if input_example is None:
        return RunResult("skip", "the card has no input_example to run the model on", 0.0)
    relative = PurePosixPath(artifact)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix != ".onnx":
        return RunResult("fail", f"{artifact!r} must name a .onnx file inside the version folder", 0.0)
    problem = _file_problem(folder, artifact, "ONNX artifact")
    if problem:
        return RunResult("fail", problem, 0.0)
    request = {
        "mode": "onnx",
        "folder": str(folder.resolve()),
        "artifact": artifact,
        "input_example": input_example,
    }
    return _run_result(_run_child(request, timeout_s), artifact)


def _run_result(outcome: _Outcome, label: str) -> RunResult:
    if outcome.skip is not None:
        return RunResult("skip", outcome.skip, outcome.seconds)
    if outcome.reply is None:
        return RunResult("fail", outcome.failure or "no result", outcome.seconds)
    reply = outcome.reply
    message = f"{label}: loaded in {reply['load_s']:.3f} s, predicted in {reply['predict_s']:.3f} s"
    return RunResult("pass", _with_notes(message), outcome.seconds, _preview(reply["output"]))


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
    folder: Path, entrypoint: str | None, input_example: Any, runs: int, timeout_s: float
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
    problem = _entrypoint_problem(folder, entrypoint)
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
    outcome = _run_child(request, timeout_s)
    if outcome.reply is None:
        return LatencyResult("fail", outcome.failure or "no result")
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
    return LatencyResult("pass", _with_notes(message), p50, p99, runs)


# --- metrics -----------------------------------------------------------------------


class MetricError(ValueError):
    """Labels or predictions that a metric cannot be computed on."""


def _canonical(label: Any) -> Label:
    """One spelling per class: True, 1 and 1.0 are the same label."""
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, float) and label.is_integer():
        return int(label)
    if isinstance(label, int | float | str):
        return label
    raise MetricError(f"a label must be a number or a string, got {type(label).__name__}")


def _is_binary(y_true: Sequence[Label], y_pred: Sequence[Label]) -> bool:
    return set(y_true) | set(y_pred) <= {0, 1}


def _per_class(y_true: Sequence[Label], y_pred: Sequence[Label], cls: Label) -> tuple[float, float, float]:
    tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == cls and p == cls)
    fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != cls and p == cls)
    fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == cls and p != cls)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _classes(y_true: Sequence[Label], y_pred: Sequence[Label]) -> list[Label]:
    return sorted(set(y_true) | set(y_pred), key=lambda c: (isinstance(c, str), str(c)))


def _macro(index: int) -> Callable[[Sequence[Label], Sequence[Label]], float]:
    def metric(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
        scores = [_per_class(y_true, y_pred, c)[index] for c in _classes(y_true, y_pred)]
        return sum(scores) / len(scores)

    return metric


def _auto(index: int) -> Callable[[Sequence[Label], Sequence[Label]], float]:
    def metric(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
        if _is_binary(y_true, y_pred):
            return _per_class(y_true, y_pred, 1)[index]
        return _macro(index)(y_true, y_pred)

    return metric


def _accuracy(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    return sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == p) / len(y_true)


def _numeric(y_true: Sequence[Label], y_pred: Sequence[Label]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if any(isinstance(v, str) for v in (*y_true, *y_pred)):
        raise MetricError("regression metrics need numeric labels and predictions")
    return np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)


def _mae(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    t, p = _numeric(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def _mse(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    t, p = _numeric(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def _rmse(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    return math.sqrt(_mse(y_true, y_pred))


def _r2(y_true: Sequence[Label], y_pred: Sequence[Label]) -> float:
    t, p = _numeric(y_true, y_pred)
    total = float(np.sum((t - t.mean()) ** 2))
    if total == 0:
        raise MetricError("r2 is undefined when every label is the same")
    return 1.0 - float(np.sum((t - p) ** 2)) / total


# precision/recall/f1 are those of class 1 when every label and prediction is 0 or 1
# (bools and 0.0/1.0 count), the unweighted mean over classes (macro, the classes
# being those in labels or predictions) otherwise; `*_macro` is always the macro
# mean. A class never predicted has precision 0 (as scikit-learn's zero_division=0).
METRICS: dict[str, Callable[[Sequence[Label], Sequence[Label]], float]] = {
    "accuracy": _accuracy,
    "precision": _auto(0),
    "recall": _auto(1),
    "f1": _auto(2),
    "precision_macro": _macro(0),
    "recall_macro": _macro(1),
    "f1_macro": _macro(2),
    "mae": _mae,
    "mse": _mse,
    "rmse": _rmse,
    "r2": _r2,
}


def compute_metrics(y_true: Sequence[Any], y_pred: Sequence[Any], names: Sequence[str]) -> dict[str, float]:
    """The named metrics of predictions against labels. Raises MetricError."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise MetricError(f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})")
    if len(y_true) != len(y_pred):
        raise MetricError(f"{len(y_pred)} predictions for {len(y_true)} labels")
    if not y_true:
        raise MetricError("no labels")
    truth = [_canonical(v) for v in y_true]
    predicted = [_canonical(v) for v in y_pred]
    return {name: METRICS[name](truth, predicted) for name in names}


@dataclass(frozen=True)
class _EvalSet:
    inputs_file: Path  # an .npz the child reads with allow_pickle=False
    inputs_key: str
    labels: list[Any]


_INTEGER = re.compile(r"[+-]?\d+")


def _csv_label(text: str) -> Label:
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _load_npz(data_file: Path) -> _EvalSet:
    try:
        with np.load(data_file, allow_pickle=False) as data:
            missing = [key for key in ("x", "y") if key not in data.files]
            if missing:
                raise MetricError(f"{data_file.name} has no array {' or '.join(missing)} (needs x and y)")
            x_shape, y = data["x"].shape, data["y"]
    except (OSError, ValueError) as exc:
        if isinstance(exc, MetricError):
            raise
        raise MetricError(f"{data_file.name} is not a readable .npz without pickles: {exc}") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise MetricError(f"{data_file.name}: y must be one label per example, has shape {y.shape}")
    if not x_shape or x_shape[0] != len(y):
        raise MetricError(f"{data_file.name}: x has shape {x_shape} for {len(y)} labels in y")
    return _EvalSet(data_file, "x", y.tolist())


def _load_csv(data_file: Path, scratch: Path) -> _EvalSet:
    try:
        with data_file.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MetricError(f"{data_file.name} cannot be read as CSV: {exc}") from None
    if not rows or LABEL_COLUMN not in [name.strip() for name in rows[0]]:
        raise MetricError(f"{data_file.name} has no {LABEL_COLUMN!r} column in its header")
    header = [name.strip() for name in rows[0]]
    label_at = header.index(LABEL_COLUMN)
    if len(header) < 2:
        raise MetricError(f"{data_file.name} has no feature columns beside {LABEL_COLUMN!r}")
    features: list[list[float]] = []
    labels: list[Label] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise MetricError(f"{data_file.name}:{line}: {len(row)} fields, the header has {len(header)}")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != label_at])
        except ValueError as exc:
            raise MetricError(f"{data_file.name}:{line}: features must be numbers: {exc}") from None
        labels.append(_csv_label(row[label_at]))
    if not labels:
        raise MetricError(f"{data_file.name} has no rows")
    inputs = scratch / "inputs.npz"
    np.savez(inputs, x=np.asarray(features, dtype=np.float64))
    return _EvalSet(inputs, "x", labels)


def _predictions(raw: Any, count: int) -> list[Any]:
    if not isinstance(raw, list):
        kind = "null" if raw is None else type(raw).__name__
        raise MetricError(f"predict() returned a single {kind}; expected {count} labels, one per example")
    if len(raw) != count:
        raise MetricError(f"predict() returned {len(raw)} predictions for {count} examples")
    flat: list[Any] = []
    for item in raw:
        if isinstance(item, list):
            if len(item) != 1:
                raise MetricError(
                    f"predict() returned {len(item)} values per example; expected one label per example"
                )
            item = item[0]
        if isinstance(item, list | dict) or item is None:
            raise MetricError(f"predict() returned {json.dumps(item)[:50]} as a label; expected a number or a string")
        flat.append(item)
    return flat


def evaluate(
    folder: Path, entrypoint: str | None, data_file: Path, metric_names: list[str], timeout_s: float
) -> EvalResult:
    """Recompute metrics on a pinned evaluation set from the model's own predictions.

    `data_file` is an `.npz` with arrays `x` (inputs, first axis = examples) and `y`
    (labels), or a `.csv` with a header, a `label` column and numeric feature columns.
    `predict(model, x)` is called once with all inputs as a NumPy array (float64 rows
    for a CSV) and must return one label per example (a list or array of length n, or
    shape (n, 1)). The metrics are computed here from those predictions.
    """
    unknown = [name for name in metric_names if name not in METRICS]
    if unknown:
        return EvalResult("fail", f"unknown metric {', '.join(unknown)} (known: {', '.join(METRICS)})", {})
    if entrypoint is None:
        return EvalResult("skip", "the card names no entrypoint", {})
    problem = _entrypoint_problem(folder, entrypoint)
    if problem:
        return EvalResult("fail", problem, {})
    if not data_file.is_file():
        return EvalResult("fail", f"evaluation set {data_file} not found", {})
    with tempfile.TemporaryDirectory(prefix="registry-eval-") as scratch:
        try:
            if data_file.suffix == ".npz":
                eval_set = _load_npz(data_file)
            elif data_file.suffix == ".csv":
                eval_set = _load_csv(data_file, Path(scratch))
            else:
                return EvalResult("fail", f"evaluation set {data_file.name}: use .npz (x, y) or .csv (label column)", {})
        except MetricError as exc:
            return EvalResult("fail", str(exc), {})
        request = {
            "mode": "predict_file",
            "folder": str(folder.resolve()),
            "entrypoint": entrypoint,
            "inputs_file": str(eval_set.inputs_file.resolve()),
            "inputs_key": eval_set.inputs_key,
        }
        outcome = _run_child(request, timeout_s)
    if outcome.reply is None:
        return EvalResult("fail", outcome.failure or "no result", {})
    try:
        predictions = _predictions(outcome.reply.get("predictions"), len(eval_set.labels))
        metrics = compute_metrics(eval_set.labels, predictions, metric_names)
    except MetricError as exc:
        return EvalResult("fail", f"{entrypoint}: {exc}", {})
    shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
    message = f"{shown} on {len(predictions)} examples of {data_file.name}, computed from the model's predictions"
    return EvalResult("pass", _with_notes(message), metrics)
