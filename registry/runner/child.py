"""The child side of `registry.runner`: runs a model's code, reports back as JSON.

Started by `registry.runner` as a script, never imported by the registry itself:
`python -s -P -B child.py REQUEST_FILE REPLY_FD LANDLOCK_ABI [REQUESTS_FD]`. Before any of the
model's code runs, it confines itself (`confine`): no new privileges, no capabilities,
and with Landlock (when the parent found the kernel has it, LANDLOCK_ABI > 0) writes
only below its working directory, no TCP, no ptrace or signals outside its sandbox. It uses only the standard
library (and NumPy, lazily, where a mode needs it: `predict_file` and `onnx`), so that it runs in any interpreter
that can run the user's model and does not depend on `registry` being importable.

The reply is one JSON object written to the pipe `REPLY_FD`, never to stdout: the
user's code may print anything. `{"ok": true, ...}` when the mode completed,
`{"ok": false, "error": message}` when the user's code or the model failed, or
`{"ok": false, "skip": reason}` when the mode cannot run here (no onnxruntime).

The `serve` mode (`registry.runner.worker`, the built-in model server) is a loop instead:
it confines itself as the other modes do, loads the model once and writes one frame
(`{"ok": true, "ready": true, "load_s": ...}` or the failure), then answers each request
frame read from `REQUESTS_FD` (`{"inputs": ...}`) with one reply frame on `REPLY_FD`
(`{"ok": true, "output": ...}` or `{"ok": false, "error": ...}`: the model raised, the
worker goes on) until that pipe is closed. A frame is a 4-byte big-endian length, then
that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import os
import platform
import struct
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

MAX_MESSAGE_CHARS = 500
ENTRYPOINT_MODULE = "registry_entrypoint"


class ModelError(Exception):
    """The model or its code failed; the message is what the user reads."""


class Skip(Exception):
    """The mode cannot run in this interpreter; the message is the reason."""


class SandboxError(Exception):
    """A confinement the parent counted on could not be applied: nothing of the model runs."""


def main(argv: list[str]) -> int:
    request_path, reply_fd, landlock_abi = argv[1], int(argv[2]), int(argv[3])
    # The reply pipe must not leak into processes the user's code starts.
    os.set_inheritable(reply_fd, False)
    _no_core_dumps()
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    if request["mode"] == "serve":
        serve(request, reply_fd, int(argv[4]), landlock_abi)  # never returns
    reply_stream = os.fdopen(reply_fd, "w", encoding="utf-8")
    reply: dict[str, Any]
    try:
        _confine_and_site(request, landlock_abi)
        reply = {"ok": True, **MODES[request["mode"]](request)}
    except SandboxError as exc:
        reply = {"ok": False, "error": f"the sandbox could not be set up: {exc}"}
    except ModelError as exc:
        reply = {"ok": False, "error": str(exc)}
    except Skip as exc:
        reply = {"ok": False, "skip": str(exc)}
    try:
        text = json.dumps(reply)
    except (TypeError, ValueError) as exc:  # a bug here, not in the model: say so plainly
        text = json.dumps({"ok": False, "error": f"could not encode the reply: {exc}"})
    reply_stream.write(text)
    reply_stream.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads or atexit hooks the user's code left behind must not hold the result back.
    os._exit(0)


def _confine_and_site(request: dict[str, Any], landlock_abi: int) -> None:
    confine(os.getcwd(), landlock_abi)
    if request.get("site"):  # a declared environment's Python, started with -S: its packages now
        import site

        site.main()


def _no_core_dumps() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


# --- the sandbox -------------------------------------------------------------------

PR_SET_NO_NEW_PRIVS = 38
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE = 1 << 1
FS_REMOVE_DIR, FS_REMOVE_FILE = 1 << 4, 1 << 5
FS_MAKE = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _failed(what: str) -> SandboxError:
    return SandboxError(f"{what}: {os.strerror(ctypes.get_errno())}")


def confine(work: str, landlock_abi: int) -> None:
    """Confine this process and everything it starts. Linux only; elsewhere a no-op (the
    parent says so in the gate message)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _failed("prctl(PR_SET_NO_NEW_PRIVS)")
    capset = SYS_CAPSET.get(platform.machine())
    if capset is not None:  # no capability left, here or after any exec (no new privileges)
        data = (_CapData * 2)()
        if libc.syscall(capset, ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
            raise _failed("capset")
    if landlock_abi > 0:
        _landlock(libc, work, landlock_abi)


def _landlock(libc: ctypes.CDLL, work: str, abi: int) -> None:
    writes = FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE
    writes |= (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else 16 if abi < 6 else 24  # the struct as each ABI knows it
    attr = _RulesetAttr(writes, net, scoped)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        raise _failed("landlock_create_ruleset")
    try:
        # Everything below the working directory; /dev/null as a file to write to.
        for path, allowed, flags in ((work, writes, os.O_DIRECTORY),
                                     (os.devnull, FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0), 0)):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC | flags)
            except OSError as exc:
                raise SandboxError(f"landlock rule for {path}: {exc.strerror}") from None
            try:
                rule = _PathBeneath(allowed, fd)
                if libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), LANDLOCK_RULE_PATH_BENEATH,
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise _failed(f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise _failed("landlock_restrict_self")
    finally:
        os.close(ruleset)


# --- the user's entrypoint ---------------------------------------------------------


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def _same_file(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == b
    except OSError:
        return False


def describe_failure(exc: BaseException, entry: Path, label: str) -> str:
    """`predict.py raised ValueError: bad shape (line 7, in predict)`.

    The line is that of the last traceback frame in the user's file: where their code
    called into the library that raised, or raised itself.
    """
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename and _same_file(exc.filename, entry):
        where = f" (line {exc.lineno})"
    for frame in traceback.extract_tb(exc.__traceback__):
        if _same_file(frame.filename, entry):
            where = f" (line {frame.lineno}, in {frame.name})"
    if isinstance(exc, SystemExit):
        return f"{label} called sys.exit({exc.code!r}){where}"
    detail = _shorten(str(exc))
    return f"{label} raised {type(exc).__name__}{': ' + detail if detail else ''}{where}"


class Entrypoint:
    """The user's module with its `load(path)` and `predict(model, inputs)`."""

    def __init__(self, folder: Path, relative: str) -> None:
        self.folder = folder
        self.path = (folder / relative).resolve()
        self.label = relative
        # Helper modules beside predict.py are importable, as with MLflow's code paths.
        sys.path.insert(0, str(folder))
        self.module = self._call(self._import)
        self.load = self._function("load", "load(path)")
        self.predict = self._function("predict", "predict(model, inputs)")

    def _import(self) -> ModuleType:
        spec = importlib.util.spec_from_file_location(ENTRYPOINT_MODULE, self.path)
        if spec is None or spec.loader is None:
            raise ModelError(f"{self.label} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[ENTRYPOINT_MODULE] = module
        spec.loader.exec_module(module)
        return module

    def _function(self, name: str, signature: str) -> Callable[..., Any]:
        function = getattr(self.module, name, None)
        if function is None:
            raise ModelError(f"{self.label}: {name}() missing (define {signature})")
        if not callable(function):
            raise ModelError(f"{self.label}: {name} is not a function (define {signature})")
        return function  # type: ignore[no-any-return]

    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except ModelError:
            raise
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: user code
            raise ModelError(describe_failure(exc, self.path, self.label)) from None

    def load_model(self) -> Any:
        return self._call(self.load, str(self.folder))

    def run(self, model: Any, inputs: Any) -> Any:
        return self._call(self.predict, model, inputs)


# --- outputs -----------------------------------------------------------------------


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """JSON-ready copy of a model output: NumPy (and any `.tolist()`) arrays become lists."""
    if depth > 64:
        raise TypeError("nested more than 64 levels deep")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):  # NaN and infinities pass: Python's json reads them back
        return value
    if isinstance(value, list | tuple):
        return [to_jsonable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("a dict with non-string keys")
        return {key: to_jsonable(item, depth + 1) for key, item in value.items()}
    for convert in ("tolist", "to_numpy"):  # NumPy, PyTorch, JAX; pandas
        method = getattr(value, convert, None)
        if callable(method):
            converted = method()
            if convert == "to_numpy":
                converted = converted.tolist()
            if converted is value:
                break
            return to_jsonable(converted, depth + 1)
    raise TypeError(type(value).__module__ + "." + type(value).__qualname__)


def _jsonable_output(output: Any, label: str) -> Any:
    try:
        return to_jsonable(output)
    except TypeError as exc:
        raise ModelError(f"{label}: output is not JSON-serialisable (got {exc})") from None


# --- modes -------------------------------------------------------------------------


def smoke(request: dict[str, Any]) -> dict[str, Any]:
    entry = Entrypoint(Path(request["folder"]), request["entrypoint"])
    started = time.perf_counter()
    model = entry.load_model()
    loaded = time.perf_counter()
    output = entry.run(model, request["input_example"])
    predicted = time.perf_counter()
    return {
        "output": _jsonable_output(output, "predict()"),
        "load_s": loaded - started,
        "predict_s": predicted - loaded,
    }


def latency(request: dict[str, Any]) -> dict[str, Any]:
    entry = Entrypoint(Path(request["folder"]), request["entrypoint"])
    model = entry.load_model()
    example = request["input_example"]
    for _ in range(request["warmup"]):
        entry.run(model, example)
    timings_ns: list[int] = []
    for _ in range(request["runs"]):
        started = time.perf_counter_ns()
        entry.run(model, example)
        timings_ns.append(time.perf_counter_ns() - started)
    return {"timings_ns": timings_ns}


def predict_file(request: dict[str, Any]) -> dict[str, Any]:
    try:
        import numpy as np
    except ImportError:
        raise ModelError("the metrics recomputation hands predict() a NumPy array, and numpy is not installed "
                         "in the model's environment: add numpy to its requirements file") from None

    entry = Entrypoint(Path(request["folder"]), request["entrypoint"])
    with np.load(request["inputs_file"], allow_pickle=False) as data:
        inputs = data[request["inputs_key"]]
    model = entry.load_model()
    output = entry.run(model, inputs)
    return {"predictions": _jsonable_output(output, "predict()")}


ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


class OnnxModel:
    """An ONNX artifact in an onnxruntime session; `run` takes the input example's forms."""

    def __init__(self, request: dict[str, Any]) -> None:
        try:
            import onnxruntime  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise Skip("onnxruntime not installed") from None
        try:
            import numpy as np
        except ImportError:
            raise ModelError("onnxruntime needs numpy, which is not installed in the model's environment") from None
        self.np = np
        self.label = label = request["artifact"]
        try:
            self.session = onnxruntime.InferenceSession(
                str(Path(request["folder"]) / label), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"{label}: onnxruntime could not load it: {_shorten(str(exc))}") from None

    def run(self, example: Any) -> Any:
        label, np = self.label, self.np
        declared = self.session.get_inputs()
        names = [item.name for item in declared]
        if isinstance(example, dict) and sorted(example) == sorted(names):
            values = example
        elif len(declared) == 1:
            values = {names[0]: example}
        else:
            raise ModelError(
                f"{label} takes inputs {', '.join(names)}: input_example must map each name to a value"
            )
        feeds: dict[str, Any] = {}
        for item in declared:
            try:
                feeds[item.name] = np.asarray(values[item.name], dtype=ONNX_DTYPES.get(item.type))
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{label}: input {item.name} ({item.type}): {exc}") from None
        try:
            outputs = self.session.run(None, feeds)
        except Exception as exc:
            raise ModelError(f"{label}: onnxruntime raised {type(exc).__name__}: {_shorten(str(exc))}") from None
        output_names = [item.name for item in self.session.get_outputs()]
        return dict(zip(output_names, outputs, strict=True))


def onnx(request: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    model = OnnxModel(request)
    loaded = time.perf_counter()
    output = model.run(request["input_example"])
    predicted = time.perf_counter()
    return {
        "output": _jsonable_output(output, model.label),
        "load_s": loaded - started,
        "predict_s": predicted - loaded,
    }


# --- serve: a persistent worker ------------------------------------------------------

FRAME_HEADER = struct.Struct(">I")


def write_frame(fd: int, message: dict[str, Any]) -> None:
    try:
        data = json.dumps(message).encode("utf-8")
    except (TypeError, ValueError) as exc:
        data = json.dumps({"ok": False, "error": f"could not encode the reply: {exc}"}).encode("utf-8")
    view = memoryview(FRAME_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_frame(fd: int) -> Any:
    """The next request, or None when the parent closed the pipe."""
    header = _read_exactly(fd, FRAME_HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, FRAME_HEADER.unpack(header)[0])
    return None if body is None else json.loads(body)


def serve(request: dict[str, Any], reply_fd: int, requests_fd: int, landlock_abi: int) -> None:
    """Load once, then answer requests until the parent closes REQUESTS_FD; never returns."""
    os.set_inheritable(requests_fd, False)
    run: Callable[[Any], Any]
    label = request.get("entrypoint") or request.get("artifact") or "the model"
    try:
        _confine_and_site(request, landlock_abi)
        started = time.perf_counter()
        if request.get("entrypoint"):
            entry = Entrypoint(Path(request["folder"]), request["entrypoint"])
            model = entry.load_model()
            run = functools.partial(entry.run, model)
        else:
            run = OnnxModel(request).run
        write_frame(reply_fd, {"ok": True, "ready": True, "load_s": time.perf_counter() - started})
    except SandboxError as exc:
        write_frame(reply_fd, {"ok": False, "error": f"the sandbox could not be set up: {exc}"})
        os._exit(0)
    except (ModelError, Skip) as exc:
        write_frame(reply_fd, {"ok": False, "error": str(exc)})
        os._exit(0)
    while (message := read_frame(requests_fd)) is not None:
        started = time.perf_counter()
        try:
            output = _jsonable_output(run(message["inputs"]), f"{label}: predict()")
            reply = {"ok": True, "output": output, "predict_s": time.perf_counter() - started}
        except ModelError as exc:
            reply = {"ok": False, "error": str(exc)}
        write_frame(reply_fd, reply)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "smoke": smoke,
    "latency": latency,
    "predict_file": predict_file,
    "onnx": onnx,
}


if __name__ == "__main__":
    sys.exit(main(sys.argv))
