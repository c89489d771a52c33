"""The security scan: could loading this file run code? Decided from its bytes alone.

Pickle-based formats (plain pickles, PyTorch zip and legacy checkpoints, joblib dumps,
NumPy object arrays) are walked opcode by opcode by a small symbolic machine. It never
unpickles, imports or calls anything: it keeps only what it needs to know which
globals a real unpickler would import and what it would call (strings, for
`STACK_GLOBAL`; globals; shapes and dtypes, to step over raw array data). Every global
must be on an exact ``module.qualname`` allow-list; anything that calls a value that
is not an allowed global, the extension registry (`EXT1/2/4`), or out-of-band buffers
is refused.

Content is identified by its bytes, never by its name, with the tests the loaders
themselves apply (`registry.sniff`; the format gate uses the same identification,
`identify_file`). Zip (PyTorch checkpoints, ``.npz``), tar, gzip, bz2, xz, lzma,
zlib and joblib's old "ZF" files are opened and every member scanned, with bounds on
decompressed bytes, compression ratio, member count and nesting. Tensor storage is
skipped by size (legacy PyTorch, joblib, ``.npy``) or, inside a recognised PyTorch
zip layout, by member name, so a large checkpoint costs a few small reads.

Fail closed: malformed, truncated, ambiguous or unrecognised content is a finding.
A file that any natural loader (pickle.load, numpy.load with allow_pickle, joblib.load,
torch.load) would unpickle is a pickle, whatever else it also looks like: content that
is not an unambiguous pickle is first walked as the unpicklers would walk it (_pickle
for pickle and numpy, pickle.py for joblib, with torch's persistent_load and find_class
in mind) up to the first point where all of them certainly raise, so a pickle behind
no-op opcodes, in front of text or inside another format is still found. Safe without
findings are only pickles on the allow-list, NumPy arrays without objects, and formats
that hold no code: safetensors (with the format gate's checks), protobuf (ONNX), GGUF,
UTF-8 text and empty files. Allowed constructors that allocate by a number (bytearray,
torch storages, array shapes) may not ask for more than the pickle holds.

Errors: a file that cannot be read (missing, a directory given to `scan_file`, a
FIFO) is reported as a finding, never raised, so a scan of many paths reports on all
of them. Only a malformed allow-list raises (`ValidationError`).
"""

from __future__ import annotations

import _compat_pickle
import ast
import bz2
import codecs
import contextlib
import io
import itertools
import json
import lzma
import math
import mmap
import os
import pickletools
import re
import stat
import struct
import sys
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from registry import formats, sniff
from registry.errors import ValidationError

__all__ = [
    "DEFAULT_LIMITS",
    "PROFILES",
    "SAFE_GLOBALS",
    "Finding",
    "ScanLimits",
    "ScanReport",
    "allow_list",
    "identify_file",
    "profile_entries",
    "scan_bytes",
    "scan_file",
    "scan_paths",
]


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One reason a file is unsafe.

    ``member`` names where inside the file: archive members and decompression layers
    from the outside in, joined by ``!`` (``inner.zip!payload.pkl``,
    ``[gzip]!model/evil.pkl``). ``offset`` is a byte offset in the innermost member
    (after decompression). ``global_name`` is the offending ``module.qualname``.
    """

    path: str
    member: str | None
    offset: int | None
    global_name: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.member is None else f"{self.path}!{self.member}"
        if self.offset is not None:
            where = f"{where}@{self.offset}"
        what = f"{self.global_name}: {self.message}" if self.global_name else self.message
        return f"{where}: {what}"


@dataclass(frozen=True)
class ScanReport:
    """The scan of one file. ``kind`` is what its bytes were identified as, outer
    layers first (``gzip/joblib``, ``torch-zip``, ``unknown``)."""

    path: str
    findings: tuple[Finding, ...]
    kind: str

    @property
    def safe(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep a hostile file from costing unbounded time or memory."""

    max_total_bytes: int = 4 * 1024**3  # decompressed bytes, over the whole file
    max_ratio: int = 200  # decompressed / compressed ...
    ratio_floor: int = 16 * 1024**2  # ... checked once a stream has produced this much
    max_members: int = 100_000  # archive members, over the whole file
    max_depth: int = 4  # nested archives and compression layers
    max_findings: int = 200  # per file; the rest are counted in one last finding
    max_pickle_nesting: int = 16  # pickles inside pickles (joblib object arrays)
    max_marks: int = 1_000_000  # open MARKs in one pickle


DEFAULT_LIMITS: Final = ScanLimits()


# -- the allow-list -----------------------------------------------------------------

_TORCH_STORAGE_ELEMENT_BYTES: Final = {
    "Double": 8,
    "Float": 4,
    "Half": 2,
    "BFloat16": 2,
    "Long": 8,
    "Int": 4,
    "Short": 2,
    "Char": 1,
    "Byte": 1,
    "Bool": 1,
    "ComplexDouble": 16,
    "ComplexFloat": 8,
}
_TORCH_QUANTIZED_ELEMENT_BYTES: Final = {
    "QUInt8": 1,
    "QInt8": 1,
    "QInt32": 4,
    "QUInt4x2": 1,
    "QUInt2x4": 1,
}

# What a legacy checkpoint's raw storage records are made of: element size per storage
# type (the global named in each storage's persistent id).
STORAGE_ELEMENT_BYTES: Final[dict[str, int]] = {
    **{f"torch.{k}Storage": v for k, v in _TORCH_STORAGE_ELEMENT_BYTES.items()},
    **{f"torch.{k}Storage": v for k, v in _TORCH_QUANTIZED_ELEMENT_BYTES.items()},
    **{f"torch.cuda.{k}Storage": v for k, v in _TORCH_STORAGE_ELEMENT_BYTES.items()},
    "torch.storage.UntypedStorage": 1,
}

_TORCH_DTYPES: Final = (  # noqa: SIM905 - 32 names read better as words
    "float16 float32 float64 bfloat16 complex32 complex64 complex128 bool uint8 uint16 "
    "uint32 uint64 int8 int16 int32 int64 qint8 quint8 qint32 quint4x2 quint2x4 "
    "float8_e4m3fn float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz float8_e8m0fnu "
    "float4_e2m1fn_x2 bits8 bits16 bits1x8 bits2x4 bits4x2"
).split()

_TORCH_REBUILD_FUNCTIONS: Final = (  # noqa: SIM905
    "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter "
    "_rebuild_parameter_with_state _rebuild_qtensor _rebuild_sparse_tensor "
    "_rebuild_nested_tensor _rebuild_device_tensor_from_numpy "
    "_rebuild_device_tensor_from_cpu_tensor _rebuild_meta_tensor_no_storage "
    "_rebuild_wrapper_subclass"
).split()

_JOBLIB_WRAPPER: Final = "joblib.numpy_pickle.NumpyArrayWrapper"
_CODECS_ENCODE: Final = "_codecs.encode"

# Exact `module.qualname` strings. Each is a constructor of plain data or a tensor /
# array rebuild function whose arguments can only be other allowed values.
SAFE_GLOBALS: Final[frozenset[str]] = frozenset(
    {
        "collections.OrderedDict",
        "builtins.set",
        "builtins.bytes",  # protocols 0-2 write b"" as bytes()
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.slice",
        "builtins.complex",
        # Protocol 0-2 pickles (numpy's among them) write bytes as
        # `_codecs.encode(str, "latin1")`. Allowed only in exactly that call: any other
        # use, another encoding or a bare reference, is refused at the call. Encoding
        # with latin1 only turns a str of code points < 256 into bytes; the codec is
        # built in, so no lookup can import anything.
        _CODECS_ENCODE,
        *(f"torch._utils.{name}" for name in _TORCH_REBUILD_FUNCTIONS),
        "torch._tensor._rebuild_from_type_v2",
        "torch.Tensor",
        "torch.nn.parameter.Parameter",
        "torch.Size",
        "torch.device",
        "torch.serialization._get_layout",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        *STORAGE_ELEMENT_BYTES,
        *(f"torch.{name}" for name in _TORCH_DTYPES),
        *(
            f"torch.{scheme}"
            for scheme in (
                "per_tensor_affine",
                "per_tensor_symmetric",
                "per_channel_affine",
                "per_channel_symmetric",
                "per_channel_affine_float_qparams",
            )
        ),
        *(f"torch.{k}Tensor" for k in _TORCH_STORAGE_ELEMENT_BYTES if "Complex" not in k),
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.numeric._frombuffer",
        "numpy.ndarray",
        "numpy.dtype",
        # joblib's placeholder for an array written raw after it; the scan steps over
        # the array the way joblib reads it (and also reads it as pickle.load would).
        _JOBLIB_WRAPPER,
    }
)

# Modules whose members run code, import, or reach arbitrary attributes: refused in
# `scan.allow_globals` whatever the qualname, so a typo'd policy cannot open the door.
_NEVER_ALLOWED_MODULES: Final = frozenset(
    (  # noqa: SIM905
        "builtins __builtin__ os posix nt subprocess sys importlib runpy pickle _pickle "
        "marshal ctypes operator code codeop pty shutil socket webbrowser pdb bdb timeit "
        "_codecs codecs types"
    ).split()
)


# Opt-in allow-lists shipped with the package (`scan: {profiles: [...]}` in
# registry.yaml), each generated by a script in tools/ (registry/profiles/NAME.txt:
# one exact ``module.qualname`` a line, ``#`` comments, the header says how and for
# which library versions it was made).
PROFILES: Final = ("sklearn",)
_PROFILE_DIR: Final = Path(__file__).resolve().parent / "profiles"


def profile_entries(name: str, *, source: str = "registry.yaml") -> tuple[str, ...]:
    """The exact globals of a scan profile; `ValidationError` for an unknown name."""
    if name not in PROFILES:
        known = ", ".join(PROFILES)
        raise ValidationError.one(
            source, f"{name!r}: unknown scan profile (known: {known})", field="scan.profiles"
        )
    text = (_PROFILE_DIR / f"{name}.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def allow_list(
    extra: Iterable[str] = (),
    *,
    profiles: Iterable[str] = (),
    source: str = "registry.yaml",
) -> frozenset[str]:
    """The default allow-list plus the ``profiles``' entries plus ``extra`` exact
    ``module.qualname`` strings.

    An entry must be a dotted path of at least two identifiers: a whole module
    (``"sklearn"``), a wildcard, a dunder attribute or a member of a module that runs
    code (``os``, ``builtins``, ``subprocess``...) is refused with `ValidationError`
    naming ``source`` and the ``scan.allow_globals`` field; an unknown profile, with
    the ``scan.profiles`` field.
    """
    allowed = set(SAFE_GLOBALS)
    for name in profiles:
        allowed.update(profile_entries(name, source=source))
    for entry in extra:
        problem = _allow_entry_problem(entry)
        if problem:
            raise ValidationError.one(source, f"{entry!r}: {problem}", field="scan.allow_globals")
        allowed.add(entry)
    return frozenset(allowed)


def _allow_entry_problem(entry: object) -> str | None:
    if not isinstance(entry, str):
        return "must be a string 'module.qualname'"
    parts = entry.split(".")
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        return (
            "must name one class or function exactly as 'module.qualname' "
            "(e.g. 'sklearn.linear_model._logistic.LogisticRegression'); "
            "a whole module or a wildcard is never allowed"
        )
    if any(part.startswith("__") and part.endswith("__") for part in parts):
        return "dunder attributes are never allowed"
    if parts[0] in _NEVER_ALLOWED_MODULES:
        return f"members of {parts[0]!r} can run code and are never allowed"
    return None


# -- the symbolic pickle machine ------------------------------------------------------

_OP: Final = {opcode.name: ord(opcode.code) for opcode in pickletools.opcodes}
_OPCODE_NAMES: Final = {code: name for name, code in _OP.items()}
# The opcodes as plain ints (the walk compares one byte against them).
MARK, STOP, POP, POP_MARK, DUP, NONE = (
    _OP[n] for n in ("MARK", "STOP", "POP", "POP_MARK", "DUP", "NONE")
)
FLOAT, INT, BININT, BININT1, BININT2 = (
    _OP[n] for n in ("FLOAT", "INT", "BININT", "BININT1", "BININT2")
)
LONG, LONG1, LONG4, BINFLOAT = (_OP[n] for n in ("LONG", "LONG1", "LONG4", "BINFLOAT"))
NEWTRUE, NEWFALSE, PROTO, FRAME = (_OP[n] for n in ("NEWTRUE", "NEWFALSE", "PROTO", "FRAME"))
STRING, BINSTRING, SHORT_BINSTRING = (_OP[n] for n in ("STRING", "BINSTRING", "SHORT_BINSTRING"))
UNICODE, BINUNICODE, BINUNICODE8 = (_OP[n] for n in ("UNICODE", "BINUNICODE", "BINUNICODE8"))
SHORT_BINUNICODE = _OP["SHORT_BINUNICODE"]
BINBYTES, SHORT_BINBYTES, BINBYTES8 = (_OP[n] for n in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"))
BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER = (
    _OP[n] for n in ("BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER")
)
GLOBAL, STACK_GLOBAL, INST, OBJ = (_OP[n] for n in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ"))
REDUCE, BUILD, NEWOBJ, NEWOBJ_EX = (_OP[n] for n in ("REDUCE", "BUILD", "NEWOBJ", "NEWOBJ_EX"))
EXT1, EXT2, EXT4, PERSID, BINPERSID = (
    _OP[n] for n in ("EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID")
)
TUPLE, EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3 = (
    _OP[n] for n in ("TUPLE", "EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3")
)
LIST, EMPTY_LIST, APPEND, APPENDS = (_OP[n] for n in ("LIST", "EMPTY_LIST", "APPEND", "APPENDS"))
DICT, EMPTY_DICT, SETITEM, SETITEMS = (
    _OP[n] for n in ("DICT", "EMPTY_DICT", "SETITEM", "SETITEMS")
)
EMPTY_SET, ADDITEMS, FROZENSET = (_OP[n] for n in ("EMPTY_SET", "ADDITEMS", "FROZENSET"))
GET, BINGET, LONG_BINGET = (_OP[n] for n in ("GET", "BINGET", "LONG_BINGET"))
PUT, BINPUT, LONG_BINPUT, MEMOIZE = (_OP[n] for n in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"))

_HIGHEST_PROTOCOL: Final = 5
_MAX_KEPT_STRING: Final = 64 * 1024  # longer strings cannot name a global; kept as opaque
_TORCH_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C


class _Dict(dict[object, object]):
    """A dict the pickle builds; ``exact`` while every key in it is a literal."""

    exact = True


class _Opaque:
    """A value the scan does not track (floats, bytes, sets, results of calls)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<opaque>"


_OPAQUE: Final = _Opaque()
# An integer the scan does not keep (over 64 bytes long, or written so that only one
# of the unpicklers may read it): as a size, unbounded.
_UNKNOWN_INT: Final = _Opaque()


@dataclass(frozen=True, eq=False)
class _Global:
    dotted: str


@dataclass(eq=False)
class _Call:
    """What a call (REDUCE, NEWOBJ, OBJ, INST) or a persistent load would return."""

    func: object
    args: object
    state: object = None


_PERSISTENT: Final = _Global("<persistent_load>")


class _Malformed(Exception):
    """The real unpickler would raise here: the stream ends (nothing after runs)."""

    def __init__(self, message: str, offset: int, *, eof: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.eof = eof


class _OverlayMemo(dict[int, object]):
    """A memo that reads through to another one and never writes to it (for probes)."""

    def __init__(self, base: dict[int, object]) -> None:
        super().__init__()
        self._base = base
        self._added = 0

    def __missing__(self, key: int) -> object:
        return self._base[key]

    def __setitem__(self, key: int, value: object) -> None:
        if not dict.__contains__(self, key) and key not in self._base:
            self._added += 1
        super().__setitem__(key, value)

    def __len__(self) -> int:
        return len(self._base) + self._added


# Values whose type the scan knows exactly (str aside): calling one, or setting its
# state, certainly fails in the real unpickler.
_LITERALS: Final = (type(None), bool, int, str, tuple, list, dict)


_NUMPY_RECONSTRUCT: Final = frozenset(
    {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}
)
_REBUILD_FROM_TYPE: Final = "torch._tensor._rebuild_from_type_v2"
_REBUILD_QTENSOR: Final = "torch._utils._rebuild_qtensor"
# Constructors whose every argument may be a size: bytes(n), bytearray(n),
# torch.FloatStorage(n), torch.Tensor(n, m), torch.storage.UntypedStorage(n).
_SIZED_BY_ARGS: Final = frozenset(
    {
        "builtins.bytes",
        "builtins.bytearray",
        "torch.Tensor",
        "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage",
        *STORAGE_ELEMENT_BYTES,
        *(f"torch.{k}Tensor" for k in _TORCH_STORAGE_ELEMENT_BYTES if "Complex" not in k),
    }
)
# Constructors with a shape at this argument index.
_SIZED_BY_SHAPE: Final = {
    **dict.fromkeys(_NUMPY_RECONSTRUCT, 1),
    "numpy.ndarray": 0,
}


def _size(value: object) -> float | None:
    """An argument as a number of elements: None when it is no number."""
    if isinstance(value, bool | int):
        return max(int(value), 0)
    if value is _UNKNOWN_INT:
        return math.inf
    if isinstance(value, _Call):  # a NumPy integer, say: unknown, unless it is bytes
        is_bytes = isinstance(value.func, _Global) and value.func.dotted == _CODECS_ENCODE
        return None if is_bytes else math.inf
    return None


def _sizes_product(values: Iterable[object]) -> float:
    total: float = 1
    for value in values:
        size = _size(value)
        if size is not None:
            total *= size
    return total


def _shape_count(shape: object) -> float:
    """Elements in an array of this shape (a tuple of sizes, or one size)."""
    if isinstance(shape, tuple | list):
        return _sizes_product(shape)
    return _size(shape) or 0


def _persistent_numel(value: object) -> int | None:
    """The element count a torch persistent id gives its storage."""
    if isinstance(value, _Call) and value.func is _PERSISTENT:
        pid = value.args
        if isinstance(pid, tuple) and len(pid) >= 5 and type(pid[4]) is int:
            return pid[4]
    return None


def _certainly_true(value: object) -> bool:
    if type(value) in (bool, int, str, tuple, list) or isinstance(value, _Dict):
        return bool(value)  # tracked lists and dicts only ever miss items, never gain any
    return False


def _certainly_true_state(state: object) -> bool:
    """BUILD's state makes both unpicklers raise on a literal (see `_Machine._build`)."""
    if isinstance(state, tuple) and len(state) == 2:
        return _certainly_true(state[0]) or _certainly_true(state[1])
    return _certainly_true(state)


def _is_dotted_identifier(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


class _Machine:
    """Walks one pickle stream, keeping the unpickler's stack, marks and memo.

    ``strict``: the data is known to be a pickle; anything malformed is a finding.
    Otherwise (a probe of content that may not be a pickle at all) the walk just ends
    at the first point where the real unpickler would certainly raise; values it
    cannot parse are taken as unknown and the walk goes on (so it may report more,
    never less). ``mutate``: apply APPEND/SETITEM/BUILD to tracked containers (off in
    probes that share containers with another walk). ``end``: where the walk stops.
    """

    def __init__(
        self,
        scan: _Scan,
        buf: memoryview,
        member: str | None,
        *,
        strict: bool,
        nesting: int = 0,
        end: int | None = None,
        note: str = "",
    ) -> None:
        self.scan = scan
        self.buf = buf
        self.member = member
        self.strict = strict
        self.nesting = nesting
        self.end = len(buf) if end is None else end
        self.note = note
        self.mutate = True
        # joblib.load reads raw array data after a NumpyArrayWrapper's BUILD; probes
        # model plain pickle.load, which does not.
        self.joblib = strict
        self.stack: list[object] = []
        self.metastack: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.frame_end = -1
        self.value: object = None
        self.ops = 0
        self.soft_problem: tuple[str, int] | None = None
        self.storages: dict[str, str] = {}  # legacy torch: storage key -> storage type
        self.storage_sizes: dict[str, float | None] = {}  # ... -> numel in its id
        self.saw_joblib_array = False
        self.ops_before_persid: int | None = None
        self.max_ops = sys.maxsize  # probes of joblib array data have a budget

    # -- small helpers --

    def _flag(self, offset: int, message: str, global_name: str | None = None) -> None:
        self.scan.flag(self.member, offset, self.note + message, global_name)

    def _soft(self, message: str, offset: int) -> None:
        """A value the real unpickler would reject: malformed in strict mode."""
        if self.strict:
            raise _Malformed(message, offset)
        if self.soft_problem is None:
            self.soft_problem = (message, offset)

    def _take(self, pos: int, size: int) -> memoryview:
        stop = pos + size
        if size < 0 or stop > self.end:
            raise _Malformed(f"truncated: {size} bytes needed at offset {pos}", pos, eof=True)
        if pos < self.frame_end < stop:
            self._soft("an opcode's argument runs past the end of its frame", pos)
        return self.buf[pos:stop]

    def _uint(self, pos: int, size: int) -> int:
        return int.from_bytes(self._take(pos, size), "little")

    def _line(self, pos: int) -> tuple[bytes, int]:
        """The line at ``pos`` without its newline, and the position after it."""
        look = pos
        step = 256
        while True:
            stop = min(self.end, look + step)
            found = bytes(self.buf[look:stop]).find(b"\n")
            if found >= 0:
                line_end = look + found
                self._take(pos, line_end + 1 - pos)  # frame check
                return bytes(self.buf[pos:line_end]), line_end + 1
            if stop >= self.end:
                raise _Malformed("truncated: a line without its newline", pos, eof=True)
            look = stop
            step = min(step * 2, 1 << 20)

    def _pop(self, offset: int) -> object:
        if not self.stack:
            raise _Malformed("stack underflow", offset)
        return self.stack.pop()

    def _top(self, offset: int) -> object:
        if not self.stack:
            raise _Malformed("stack underflow", offset)
        return self.stack[-1]

    def _pop_mark(self, offset: int) -> list[object]:
        if not self.metastack:
            raise _Malformed("no MARK to pop", offset)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _text(self, raw: bytes | memoryview, offset: int) -> object:
        try:
            text = str(raw, "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise _Malformed("a string that is not valid UTF-8", offset) from None
        return text if len(text) <= _MAX_KEPT_STRING else _OPAQUE

    def _memo_get(self, key: int, offset: int) -> None:
        try:
            self.stack.append(self.memo[key])
        except KeyError:
            raise _Malformed(f"memo key {key} was never stored", offset) from None

    def _memo_put(self, key: int, offset: int) -> None:
        if key < 0:
            raise _Malformed("negative memo key", offset)
        value = self._top(offset)
        if key > len(self.buf):
            # _pickle keeps the memo in an array of 2 * key slots, zeroed: a memory bomb.
            # Picklers number memo entries from 0, one per object, so never this high.
            # (In a probe, only once the content proves to be a pickle: text such as
            # "Copyright (c)" reads as BINBYTES then a LONG_BINPUT of "f Te".)
            message = f"memo key {key} is larger than the pickle (a memory bomb)"
            if self.strict:
                self._flag(offset, message)
            elif self.soft_problem is None:
                self.soft_problem = (message, offset)
        self.memo[key] = value

    # -- what matters: globals and calls --

    def _global(self, module: str, name: str, offset: int, opname: str) -> None:
        written = f"{module}.{name}"
        if self.proto < 3:  # what Unpickler(fix_imports=True) really imports
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        dotted = f"{module}.{name}"
        if dotted not in self.scan.allowed:
            also = "" if dotted == written else f" (written as {written})"
            self._flag(offset, f"{opname} imports a global that is not allowed{also}", dotted)
        self.stack.append(_Global(dotted))

    def _call(self, func: object, args: object, offset: int, opname: str) -> _Call:
        if not isinstance(func, _Global):
            if not self.strict and isinstance(func, _LITERALS):
                raise _Malformed(f"{opname} calls a literal", offset)  # a TypeError
            self._flag(offset, f"{opname} calls a value that is not an allowed global")
        elif func.dotted == _CODECS_ENCODE and not (
            isinstance(args, tuple | list) and len(args) == 2 and args[1] in ("latin1", "latin-1")
        ):
            self._flag(offset, f"{opname} calls _codecs.encode other than as (str, 'latin1')")
        else:
            self._check_sizes(func.dotted, args, offset, opname)
        return _Call(func, args)

    def _check_sizes(self, dotted: str, args: object, offset: int, opname: str) -> None:
        """Allowed constructors that allocate by a number: that number is bounded by the
        size of the pickle itself. A pickler only writes such a call for data that is
        in the pickle (``_reconstruct`` of shape (0,), a storage that follows it), so
        a real file never needs more, and a 35-byte ``bytearray(3_000_000_000)`` is
        refused instead of costing 3 GB."""
        args = args if isinstance(args, tuple | list) else (args,)
        bound = len(self.buf)
        if dotted == _REBUILD_FROM_TYPE and len(args) >= 3:
            # _rebuild_from_type_v2(func, type, args, state) calls func(*args).
            self._call(args[0], args[2], offset, f"{opname} (through _rebuild_from_type_v2)")
            return
        if dotted in _SIZED_BY_ARGS:  # bytearray(n), torch.Tensor(n, m): data otherwise
            sizes = [arg for arg in args if _size(arg) is not None]
            size = _sizes_product(sizes) if sizes else 0
        elif dotted in _SIZED_BY_SHAPE and len(args) > _SIZED_BY_SHAPE[dotted]:
            size = _shape_count(args[_SIZED_BY_SHAPE[dotted]])
        elif dotted == _REBUILD_QTENSOR and len(args) >= 3:
            # Allocates the tensor by its size before setting it to its storage.
            storage, size = args[0], _shape_count(args[2])
            numel = _persistent_numel(storage)
            if numel is None or size > numel:
                self._flag(
                    offset,
                    f"{opname} of {dotted} with a size that is not within its storage "
                    "(a memory bomb)",
                    dotted,
                )
            return
        else:
            return
        if size > bound:
            shown = "an unknown number of" if size == math.inf else f"{size:.0f}"
            self._flag(
                offset,
                f"{opname} asks {dotted} for {shown} elements, more than the {bound} "
                "bytes the pickle holds (a memory bomb)",
                dotted,
            )

    def _build(self, offset: int, pos: int) -> int:
        state = self._pop(offset)
        target = self._top(offset)
        if not isinstance(target, _Call) or target.func is _PERSISTENT:
            if not self.strict and isinstance(target, _LITERALS):
                # None, bool, int, str, tuple, list and dict have no __setstate__ and no
                # __dict__. pickle.py (joblib's unpickler) then ignores a false state
                # and slot state; _pickle ignores None. Only a state that is certainly
                # true fails in both; anything else may be a no-op: walk on.
                if _certainly_true_state(state):
                    raise _Malformed("BUILD on a literal with a state", offset)
                return pos
            self._flag(
                offset, "BUILD sets state on a value that is not an object made by an allowed call"
            )
            return pos
        if self.mutate:
            target.state = state
        if (
            isinstance(target.func, _Global)
            and target.func.dotted in _NUMPY_RECONSTRUCT
            and isinstance(state, tuple)
            and len(state) >= 2
            and _shape_count(state[1]) > len(self.buf)
        ):
            # ndarray.__setstate__((version, shape, dtype, fortran, data)) allocates
            # by the shape (object arrays before reading their list).
            self._flag(
                offset,
                "BUILD gives an array a shape larger than the pickle (a memory bomb)",
                target.func.dotted,
            )
        if (
            self.joblib
            and isinstance(target.func, _Global)
            and target.func.dotted == _JOBLIB_WRAPPER
        ):
            pos = self.scan.joblib_array(self, target, state, offset, pos)
            self.stack[-1] = _OPAQUE  # joblib replaces the wrapper with the array
        return pos

    # -- the walk --

    def run(self, pos: int) -> int:
        """Walk from ``pos`` to STOP; return the position after it."""
        buf = self.buf
        end = self.end
        while True:
            if pos >= end:
                raise _Malformed("truncated: no STOP opcode before the end", pos, eof=True)
            start = pos
            op = buf[pos]
            pos += 1
            self.ops += 1
            if self.ops > self.max_ops:
                self._flag(
                    start,
                    f"read as pickle.load would, the stream goes on for more than "
                    f"{_PROBE_OVERRUN} opcodes past the array: cannot be shown safe",
                )
                raise _Malformed("walk over its budget", start)
            stack = self.stack
            stack_push = stack.append
            if op == BINPUT:
                self._memo_put(self._uint(pos, 1), start)
                pos += 1
            elif op == BINGET:
                self._memo_get(self._uint(pos, 1), start)
                pos += 1
            elif op == MEMOIZE:
                self.memo[len(self.memo)] = self._top(start)
            elif op == SHORT_BINUNICODE:
                size = self._uint(pos, 1)
                stack_push(self._text(self._take(pos + 1, size), start))
                pos += 1 + size
            elif op in (BINUNICODE, BINUNICODE8):
                width = 4 if op == BINUNICODE else 8
                size = self._uint(pos, width)
                stack_push(self._text(self._take(pos + width, size), start))
                pos += width + size
            elif op == BININT1:
                stack_push(self._uint(pos, 1))
                pos += 1
            elif op == BININT2:
                stack_push(self._uint(pos, 2))
                pos += 2
            elif op == BININT:
                stack_push(int.from_bytes(self._take(pos, 4), "little", signed=True))
                pos += 4
            elif op == MARK:
                if len(self.metastack) >= self.scan.limits.max_marks:
                    # Not an error for the unpicklers: the scan cannot go on, so refuse.
                    self._flag(start, f"more than {self.scan.limits.max_marks} open MARKs")
                    raise _Malformed("too many open MARKs", start)
                self.metastack.append(stack)
                self.stack = []
            elif op in (TUPLE, LIST, FROZENSET):
                items = self._pop_mark(start)
                built: object = tuple(items) if op == TUPLE else items if op == LIST else _OPAQUE
                self.stack.append(built)
            elif op == TUPLE1:
                stack_push((self._pop(start),))
            elif op == TUPLE2:
                second = self._pop(start)
                stack_push((self._pop(start), second))
            elif op == TUPLE3:
                third = self._pop(start)
                second = self._pop(start)
                stack_push((self._pop(start), second, third))
            elif op == EMPTY_TUPLE:
                stack_push(())
            elif op == EMPTY_LIST:
                stack_push([])
            elif op == EMPTY_DICT:
                stack_push(_Dict())
            elif op == EMPTY_SET:
                stack_push(_OPAQUE)
            elif op in (NONE, NEWTRUE, NEWFALSE):
                stack_push(None if op == NONE else op == NEWTRUE)
            elif op == REDUCE:
                args = self._pop(start)
                func = self._top(start)
                stack[-1] = self._call(func, args, start, "REDUCE")
            elif op == NEWOBJ:
                args = self._pop(start)
                cls = self._pop(start)
                stack_push(self._call(cls, args, start, "NEWOBJ"))
            elif op == NEWOBJ_EX:
                self._pop(start)  # kwargs
                args = self._pop(start)
                cls = self._pop(start)
                stack_push(self._call(cls, args, start, "NEWOBJ_EX"))
            elif op == BUILD:
                pos = self._build(start, pos)
            elif op in (GLOBAL, INST):
                opname = "GLOBAL" if op == GLOBAL else "INST"
                raw_module, pos = self._line(pos)
                raw_name, pos = self._line(pos)
                try:
                    module, name = raw_module.decode("utf-8"), raw_name.decode("utf-8")
                except UnicodeDecodeError:
                    raise _Malformed(f"{opname} names that are not UTF-8", start) from None
                if (
                    not self.strict
                    and not _is_dotted_identifier(module)
                    and not (name.isidentifier() and name.endswith("Storage"))
                ):
                    # No module has this name unless a file of that very name was put on
                    # sys.path; pickle.load stops with an ImportError. (torch.load's
                    # find_class answers names with "Storage" without importing.)
                    raise _Malformed(f"{opname} of an unimportable module name", start)
                self._global(module, name, start, opname)  # pickle.py imports first
                if op == INST:
                    cls = self.stack.pop()
                    args = tuple(self._pop_mark(start))
                    self.stack.append(self._call(cls, args, start, opname))
            elif op == STACK_GLOBAL:
                name_value = self._pop(start)
                module_value = self._pop(start)
                if isinstance(module_value, str) and isinstance(name_value, str):
                    self._global(module_value, name_value, start, "STACK_GLOBAL")
                else:
                    not_str = (type(None), bool, int, tuple, list, dict, _Global)
                    if not self.strict and (
                        isinstance(module_value, not_str) or isinstance(name_value, not_str)
                    ):
                        raise _Malformed("STACK_GLOBAL of values that are not strings", start)
                    self._flag(
                        start,
                        "STACK_GLOBAL imports a global whose name is not a literal string "
                        "(cannot be determined without running the pickle)",
                    )
                    stack_push(_Global("<unknown>"))
            elif op == OBJ:
                items = self._pop_mark(start)
                if not items:
                    raise _Malformed("stack underflow", start)
                self.stack.append(self._call(items[0], tuple(items[1:]), start, "OBJ"))
            elif op in (EXT1, EXT2, EXT4):
                width = {EXT1: 1, EXT2: 2, EXT4: 4}[op]
                code = self._uint(pos, width)
                pos += width
                self._flag(
                    start,
                    f"{_OPCODE_NAMES[op]} loads extension code {code} from the copyreg "
                    "registry, whose target cannot be known from the file",
                )
                stack_push(_Global(f"<extension {code}>"))
            elif op in (PERSID, BINPERSID):
                # pickle.load has no persistent_load and raises here, but torch.load's
                # unpicklers have one (a legacy tar's "pickle" member, a zip's data.pkl
                # whatever its layout; both are scanned strictly anyway): walk on in
                # probes too, but what follows is no evidence that this is a pickle.
                if self.ops_before_persid is None:
                    self.ops_before_persid = self.ops - 1
                if op == PERSID:
                    raw, pos = self._line(pos)
                    if not raw.isascii():
                        raise _Malformed("a persistent id that is not ASCII", start)
                    pid: object = raw.decode("ascii")
                else:
                    pid = self._pop(start)
                self._note_storage(pid)
                self.stack.append(_Call(_PERSISTENT, pid))
            elif op == SETITEM:
                value = self._pop(start)
                key = self._pop(start)
                self._setitems(self._top(start), [key, value], start)
            elif op == SETITEMS:
                items = self._pop_mark(start)
                self._setitems(self._top(start), items, start)
            elif op == APPEND:
                value = self._pop(start)
                target = self._top(start)
                if self.mutate and isinstance(target, list):
                    target.append(value)
            elif op == APPENDS:
                items = self._pop_mark(start)
                target = self._top(start)
                if self.mutate and isinstance(target, list):
                    target.extend(items)
            elif op == ADDITEMS:
                self._pop_mark(start)
                self._top(start)
            elif op == DICT:
                items = self._pop_mark(start)
                if len(items) % 2:
                    raise _Malformed("odd number of items for DICT", start)
                mapping = _Dict()
                self._setitems(mapping, items, start, force=True)
                self.stack.append(mapping)
            elif op in (LONG_BINPUT, LONG_BINGET):
                key = self._uint(pos, 4)
                pos += 4
                if op == LONG_BINPUT:
                    self._memo_put(key, start)
                else:
                    self._memo_get(key, start)
            elif op in (PUT, GET):
                raw, pos = self._line(pos)
                try:
                    key = int(raw)
                except ValueError:
                    raise _Malformed("a memo key that is not a number", start) from None
                if op == PUT:
                    self._memo_put(key, start)
                else:
                    self._memo_get(key, start)
            elif op in (SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8):
                width = {SHORT_BINBYTES: 1, BINBYTES: 4, BINBYTES8: 8, BYTEARRAY8: 8}[op]
                size = self._uint(pos, width)
                self._take(pos + width, size)
                pos += width + size
                stack_push(_OPAQUE)
            elif op in (SHORT_BINSTRING, BINSTRING):
                width = 1 if op == SHORT_BINSTRING else 4
                size = int.from_bytes(self._take(pos, width), "little", signed=op == BINSTRING)
                if size < 0:
                    raise _Malformed("BINSTRING with a negative length", start)
                raw_view = self._take(pos + width, size)
                pos += width + size
                stack_push(self._legacy_string(bytes(raw_view)))
            elif op == STRING:
                raw, pos = self._line(pos)
                stack_push(self._quoted_string(raw, start))
            elif op == UNICODE:
                raw, pos = self._line(pos)
                try:
                    text = raw.decode("raw-unicode-escape")
                except UnicodeDecodeError:
                    raise _Malformed("UNICODE argument that does not decode", start) from None
                stack_push(text if len(text) <= _MAX_KEPT_STRING else _OPAQUE)
            elif op in (INT, LONG):
                raw, pos = self._line(pos)
                stack_push(self._parse_int(raw, op == LONG, start))
            elif op == FLOAT:
                raw, pos = self._line(pos)
                try:
                    float(raw)
                except ValueError:
                    self._soft("FLOAT argument that is not a number", start)
                stack_push(_OPAQUE)
            elif op == BINFLOAT:
                self._take(pos, 8)
                pos += 8
                stack_push(_OPAQUE)
            elif op in (LONG1, LONG4):
                width = 1 if op == LONG1 else 4
                size = int.from_bytes(self._take(pos, width), "little", signed=op == LONG4)
                if size < 0:
                    raise _Malformed("LONG4 with a negative length", start)
                raw_view = self._take(pos + width, size)
                pos += width + size
                stack_push(
                    int.from_bytes(raw_view, "little", signed=True) if size <= 64 else _UNKNOWN_INT
                )
            elif op == POP:
                if self.stack:
                    self.stack.pop()
                else:
                    self._pop_mark(start)
            elif op == POP_MARK:
                self._pop_mark(start)
            elif op == DUP:
                stack_push(self._top(start))
            elif op == PROTO:
                self.proto = self._uint(pos, 1)
                pos += 1
                if self.proto > _HIGHEST_PROTOCOL:
                    raise _Malformed(f"unsupported pickle protocol {self.proto}", start)
            elif op == FRAME:
                size = self._uint(pos, 8)
                pos += 8
                if pos < self.frame_end:
                    self._soft("a FRAME starts before the previous frame ends", start)
                if pos + size > end:
                    if self.strict:
                        raise _Malformed("truncated: a FRAME longer than the data", start, eof=True)
                    # _pickle raises; pickle.py (joblib) reads what there is as the frame.
                    size = end - pos
                self.frame_end = pos + size
            elif op == READONLY_BUFFER:
                self._top(start)
            elif op == NEXT_BUFFER:
                raise _Malformed(
                    "NEXT_BUFFER refers to an out-of-band buffer that is not in the file", start
                )
            elif op == STOP:
                self.value = self._pop(start)
                if pos < self.frame_end:
                    self._soft("STOP before the end of its frame", start)
                return pos
            else:
                raise _Malformed(f"invalid opcode 0x{op:02x}", start)

    def _setitems(
        self, target: object, items: list[object], offset: int, *, force: bool = False
    ) -> None:
        if len(items) % 2:
            raise _Malformed("odd number of items for SETITEMS", offset)
        if isinstance(target, _Dict) and (self.mutate or force):
            for index in range(0, len(items), 2):
                key = items[index]
                # Only flat keys: the scan needs no others, and hashing a tuple nested a
                # million deep would overflow the C stack.
                if type(key) in (str, int):
                    target[key] = items[index + 1]
                elif not isinstance(key, type(None) | bool | tuple):
                    # A computed key (a numpy str_ scalar, say) may equal, and
                    # replace, a literal one: the dict is no longer known.
                    target.exact = False

    def _note_storage(self, pid: object) -> None:
        if (
            isinstance(pid, tuple)
            and len(pid) >= 3
            and pid[0] == "storage"
            and isinstance(pid[1], _Global)
            and isinstance(pid[2], str)
        ):
            self.storages.setdefault(pid[2], pid[1].dotted)
            # A legacy checkpoint's unpickler allocates numel elements right here.
            numel = pid[4] if len(pid) >= 5 else None
            self.storage_sizes.setdefault(pid[2], _size(numel) if numel is not None else None)

    def _legacy_string(self, raw: bytes) -> object:
        # Decoded with the loader's encoding (ASCII for pickle, UTF-8 for torch): only
        # pure ASCII reads the same under all of them.
        if raw.isascii() and len(raw) <= _MAX_KEPT_STRING:
            return raw.decode("ascii")
        return _OPAQUE

    def _quoted_string(self, raw: bytes, offset: int) -> object:
        if len(raw) < 2 or raw[0] != raw[-1] or raw[:1] not in (b"'", b'"'):
            raise _Malformed("STRING argument is not quoted", offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes only warn
            try:
                value, _ = codecs.escape_decode(raw[1:-1])
            except ValueError:
                raise _Malformed("STRING argument with a bad escape", offset) from None
        return self._legacy_string(bytes(value))

    def _parse_int(self, raw: bytes, is_long: bool, offset: int) -> object:
        if not is_long and raw in (b"00", b"01"):
            return raw == b"01"
        text = raw[:-1] if is_long and raw.endswith(b"L") else raw
        for base in (0, 10):
            try:
                return int(text, base)
            except ValueError:
                continue
        self._soft("INT/LONG argument that is not a number", offset)
        return _UNKNOWN_INT


# -- the scan over one file -----------------------------------------------------------


class _Refused(Exception):
    """A limit was hit: the layer being read is refused."""


_ZIP_LOCAL_HEADER: Final = struct.Struct("<4s5H3L2H")
_TORCH_DATA_MEMBER: Final = re.compile(r"data/[0-9]+")
# torch.export.pt2_archive's payload configs (data/weights/<model>_weights_config.json,
# data/constants/<model>_constants_config.json in torch 2.13; the names have changed
# between releases): every JSON member there is read as one, so that a member any of
# them says torch.load reads is scanned as content.
_PT2_CONFIG: Final = re.compile(r"data/(weights|constants)/[^/]+\.json")
_SIMPLE_DTYPE: Final = re.compile(r"([biufcmMOSUV])([0-9]+)")
_NPY_HEADER_KEYS: Final = frozenset({"descr", "fortran_order", "shape"})
_MAX_NPY_HEADER: Final = 1 << 20
_CHUNK: Final = 1 << 20
# Compressed input is fed in small pieces so that a bomb shows its ratio early.
_INPUT_CHUNK: Final = 64 * 1024
# How many opcodes past a joblib array its plain-pickle probe may walk: random array
# bytes end the walk within a few opcodes; a walk that goes on for this long is refused
# (not silently dropped) so that probes stay linear and fail closed.
_PROBE_OVERRUN: Final = 64 * 1024
_PROTOCOLS_2_TO_5: Final = (b"\x02", b"\x03", b"\x04", b"\x05")


class _ViewFile(io.RawIOBase):
    """A seekable read-only file over a memoryview, so zipfile and tarfile read
    members in place instead of copying the archive."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise OSError("seek before the start of the data")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        stop = len(self._view) if size is None or size < 0 else self._pos + size
        data = bytes(self._view[self._pos : stop])
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _join(member: str | None, name: str) -> str:
    return name if member is None else f"{member}!{name}"


class _Scan:
    def __init__(self, path: str, allowed: frozenset[str], limits: ScanLimits) -> None:
        self.path = path
        self.allowed = allowed
        self.limits = limits
        self.findings: list[Finding] = []
        self.dropped = 0
        self.inflated = 0
        self.members = 0

    def flag(
        self, member: str | None, offset: int | None, message: str, global_name: str | None = None
    ) -> None:
        if len(self.findings) >= self.limits.max_findings:
            self.dropped += 1
            return
        self.findings.append(Finding(self.path, member, offset, global_name, message))

    def report(self, kind: str) -> ScanReport:
        findings = list(self.findings)
        if self.dropped:
            findings.append(
                Finding(self.path, None, None, None, f"{self.dropped} more findings not listed")
            )
        return ScanReport(self.path, tuple(findings), kind)

    def run(self, view: memoryview) -> str:
        try:
            return self.content(view, None, 0)
        except (RecursionError, MemoryError) as exc:
            self.flag(None, None, f"cannot be scanned within bounds ({type(exc).__name__})")
        except Exception as exc:  # a scanner must fail closed, never pass on a crash
            self.flag(None, None, f"scanner error, please report: {type(exc).__name__}: {exc}")
        return "unknown"

    # -- identification --

    def identify(
        self, view: memoryview, member: str | None, *, zfile: bool = True
    ) -> tuple[str, _Machine | None, int, _Malformed | None]:
        """What ``view`` is to the loaders: (kind, the pickle probe, where the probe
        ended, why it stopped). Pickle findings of the probe are flagged on the way."""
        if not view:
            return "empty", None, 0, None
        head = bytes(view[:512])
        safetensors = sniff.looks_like_safetensors(view)
        if not safetensors and head[:1] == b"\x80" and head[1:2] in _PROTOCOLS_2_TO_5:
            return "pickle", None, 0, None
        # Whatever else this is, first read it as the unpicklers would, to the first
        # point where all of them certainly raise: what runs before that is flagged.
        probe = _Machine(self, view, member, strict=False)
        try:
            end = probe.run(0)
        except _Malformed as exc:
            stopped: _Malformed | None = exc
        else:
            return "pickle", probe, end, None
        assert stopped is not None
        kind = sniff.container_kind(head) or sniff.compressed_kind(head)
        if kind == "zip":
            kind = _zip_kind(view)
        if kind:
            return kind, probe, 0, stopped
        weak = sniff.weak_compressed_kind(head)
        # joblib.load inflates zlib 8 KiB at a time: a stream whose first 4 KiB do not
        # decode gives it nothing to unpickle (text starting with "x" lands here).
        if weak == "lzma" or (weak == "zlib" and _starts_decompressing(weak, view)):
            return weak, probe, 0, stopped
        if zfile and sniff.joblib_zfile_start(head) is not None:
            return "joblib-zfile", probe, 0, stopped
        parsed = probe.ops if probe.ops_before_persid is None else probe.ops_before_persid
        if stopped.eof and parsed >= 3:  # text rarely parses that far as opcodes
            return "truncated-pickle", probe, 0, stopped
        if safetensors:
            return "safetensors", probe, 0, stopped
        if sniff.is_gguf(head):
            return "gguf", probe, 0, stopped
        if sniff.is_text(view):
            return "text", probe, 0, stopped
        if sniff.is_protobuf(view):
            return "protobuf", probe, 0, stopped
        return "unknown", probe, 0, stopped

    def content(
        self, view: memoryview, member: str | None, depth: int, *, zfile: bool = True
    ) -> str:
        """Identify ``view`` the way the loaders would and scan it accordingly."""
        kind, probe, end, stopped = self.identify(view, member, zfile=zfile)
        if kind == "pickle" and probe is None:
            return self.pickle_file(view, member, 0)
        if kind == "pickle":
            assert probe is not None
            head = bytes(view[:512])
            also = sniff.container_kind(head) or sniff.compressed_kind(head)
            if also is None and sniff.looks_like_safetensors(view):
                also = "safetensors"
            if also:
                self.flag(member, 0, f"content is both a pickle and a {also} file (ambiguous)")
            if probe.soft_problem:
                message, offset = probe.soft_problem
                self.flag(member, offset, f"malformed pickle: {message}")
            return self.after_first_pickle(view, member, probe, end)
        if kind in ("zip", "pt2", "skops"):
            return self.zip_archive(view, member, depth)
        if kind == "tar":
            return self.tar_archive(view, member, depth)
        if kind == "npy":
            return self.npy(view, member)
        if kind == "hdf5":
            self.flag(
                member,
                0,
                "HDF5 file: Keras models in it can hold marshalled Python code; not scanned",
            )
        elif kind in ("gzip", "bz2", "xz", "zlib", "lzma"):
            return self.decompressed(kind, view, member, depth)
        elif kind == "joblib-zfile":
            start = sniff.joblib_zfile_start(bytes(view[:64]))
            assert start is not None
            found = self.joblib_zfile(view[start:], member, depth)
            return found if found is not None else self.content(view, member, depth, zfile=False)
        elif kind == "truncated-pickle":
            assert stopped is not None
            self.flag(member, stopped.offset, f"truncated pickle: {stopped.message}")
            return "pickle"
        elif kind == "safetensors":
            return self.safetensors(view, member)
        elif kind == "unknown":
            self.flag(
                member,
                None,
                "unrecognised content: not a pickle, archive, compressed stream, NumPy, "
                "safetensors, protobuf (ONNX), GGUF or text file, so it cannot be shown safe",
            )
        return kind

    def safetensors(self, view: memoryview, member: str | None) -> str:
        """The format gate's own checks (`formats.validate_safetensors_bytes`)."""
        try:
            formats.validate_safetensors_bytes(view, self.path)
        except ValidationError as exc:
            for problem in exc.problems:
                where = f"{problem.field}: " if problem.field else ""
                self.flag(member, None, f"malformed safetensors: {where}{problem.message}")
        return "safetensors"

    def joblib_zfile(self, view: memoryview, member: str | None, depth: int) -> str | None:
        """joblib <= 0.9.3 files: zlib.decompress of the rest, then unpickled. A stream
        that does not inflate is no such file (joblib.load raises before unpickling)."""
        if not self.enter(member, depth, "joblib zfile"):
            return "joblib-zfile"
        try:
            data = self.inflate("zlib", view, trailing_ok=True)
        except _Refused as exc:
            self.flag(_join(member, "[joblib-zfile]"), None, str(exc))
            return "joblib-zfile"
        except (OSError, EOFError, ValueError, zlib.error):
            return None
        child = _join(member, "[joblib-zfile]")
        return f"joblib-zfile/{self.content(memoryview(data), child, depth + 1)}"

    # -- pickles --

    def pickle_file(self, view: memoryview, member: str | None, pos: int) -> str:
        first = _Machine(self, view, member, strict=True)
        try:
            end = first.run(pos)
        except _Malformed as exc:
            self.malformed(member, exc)
            return "pickle"
        return self.after_first_pickle(view, member, first, end)

    def after_first_pickle(
        self, view: memoryview, member: str | None, first: _Machine, end: int
    ) -> str:
        if type(first.value) is int and first.value == _TORCH_LEGACY_MAGIC:
            return self.torch_legacy(view, member, end)
        self.trailing_pickles(view, member, end, first.nesting)
        return "joblib" if first.saw_joblib_array else "pickle"

    def malformed(self, member: str | None, exc: _Malformed, what: str = "pickle") -> None:
        self.flag(member, exc.offset, f"malformed {what}: {exc.message}")

    def trailing_pickles(
        self, view: memoryview, member: str | None, pos: int, nesting: int
    ) -> None:
        """Anything after a STOP must itself be pickles (pickle.load can be called again)."""
        while pos < len(view):
            machine = _Machine(self, view, member, strict=True, nesting=nesting)
            try:
                pos = machine.run(pos)
            except _Malformed as exc:
                self.flag(
                    member,
                    exc.offset,
                    f"data after a pickle's STOP is not a well-formed pickle: {exc.message}",
                )
                return

    def torch_legacy(self, view: memoryview, member: str | None, pos: int) -> str:
        kind = "torch-legacy"
        machines: list[_Machine] = []
        for label in ("protocol version", "system info", "object", "storage keys"):
            machine = _Machine(self, view, member, strict=True)
            try:
                pos = machine.run(pos)
            except _Malformed as exc:
                self.malformed(member, exc, f"legacy torch checkpoint ({label} pickle)")
                return kind
            machines.append(machine)
        keys = machines[-1].value
        storages = machines[2].storages
        for key, numel in machines[2].storage_sizes.items():
            width = STORAGE_ELEMENT_BYTES.get(storages[key], 1)
            if numel is None or numel * width > len(view):
                self.flag(
                    member,
                    None,
                    f"legacy torch checkpoint: storage {key!r} declares more elements than "
                    "the file holds (torch.load allocates them before reading; a memory bomb)",
                )
                return kind
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            self.flag(
                member, pos, "legacy torch checkpoint: storage keys are not a list of strings"
            )
            return kind
        for key in keys:
            assert isinstance(key, str)
            storage_type = storages.get(key)
            element = STORAGE_ELEMENT_BYTES.get(storage_type or "")
            if element is None:
                self.flag(
                    member,
                    pos,
                    f"legacy torch checkpoint: storage {key!r} has no known type "
                    f"({storage_type or 'not declared'}), so its size is unknown",
                )
                return kind
            if pos + 8 > len(view):
                self.flag(member, pos, "legacy torch checkpoint: truncated storage data")
                return kind
            count = int.from_bytes(view[pos : pos + 8], "little", signed=True)
            size = count * element
            if count < 0 or pos + 8 + size > len(view):
                self.flag(member, pos, f"legacy torch checkpoint: storage {key!r} is truncated")
                return kind
            pos += 8 + size
        self.trailing_pickles(view, member, pos, 0)
        return kind

    def joblib_array(
        self, machine: _Machine, wrapper: _Call, state: object, offset: int, pos: int
    ) -> int:
        """Step over the array joblib reads right after a NumpyArrayWrapper's BUILD."""
        machine.saw_joblib_array = True
        layout = _joblib_layout(state)
        if isinstance(layout, str):
            raise _Malformed(f"joblib array: {layout}", offset)
        shape, itemsize, has_object, aligned = layout
        if pos < machine.frame_end:
            raise _Malformed(
                "joblib array data inside a pickle frame (read differently by joblib and pickle)",
                offset,
            )
        if has_object:  # a whole pickle, read with a fresh plain unpickler
            if machine.nesting >= self.limits.max_pickle_nesting:
                raise _Malformed("pickles nested too deeply", offset)
            inner = _Machine(
                self, machine.buf, machine.member, strict=True, nesting=machine.nesting + 1
            )
            return inner.run(pos)
        data_start = pos
        if aligned:
            data_start += 1 + machine._uint(pos, 1)
        size = math.prod(shape) * itemsize
        data_end = data_start + size
        if data_end > machine.end:
            raise _Malformed("joblib array data is truncated", pos, eof=True)
        # pickle.load (not joblib.load) would read those bytes as opcodes: check them too.
        probe = _Machine(
            self,
            machine.buf,
            machine.member,
            strict=False,
            note="in joblib array data, as read by pickle.load: ",
        )
        # An opcode takes at least a byte: within the array the walk cannot take more.
        probe.max_ops = (data_end - pos) + _PROBE_OVERRUN
        probe.mutate = False
        probe.stack = list(machine.stack)
        probe.metastack = [list(items) for items in machine.metastack]
        probe.memo = _OverlayMemo(machine.memo)
        probe.proto = machine.proto
        with contextlib.suppress(_Malformed):  # where pickle.load would stop
            probe.run(pos)
        return data_end

    # -- NumPy --

    def npy(self, view: memoryview, member: str | None) -> str:
        layout = _npy_layout(view)
        if isinstance(layout, str):
            self.flag(member, 0, f"malformed .npy file: {layout}")
            return "npy"
        data_start, size, has_object = layout
        if has_object:  # np.load(allow_pickle=True) unpickles the rest
            self.pickle_file(view, member, data_start)
            return "npy"
        if data_start + size != len(view):
            problem = "truncated" if data_start + size > len(view) else "followed by extra data"
            self.flag(member, data_start, f".npy array data is {problem}")
        return "npy"

    # -- archives --

    def enter(self, member: str | None, depth: int, what: str) -> bool:
        if depth >= self.limits.max_depth:
            self.flag(member, None, f"{what} nested more than {self.limits.max_depth} levels deep")
            return False
        return True

    def count_members(self, member: str | None, count: int) -> bool:
        self.members += count
        if self.members > self.limits.max_members:
            self.flag(member, None, f"more than {self.limits.max_members} archive members")
            return False
        return True

    def zip_archive(self, view: memoryview, member: str | None, depth: int) -> str:
        if not self.enter(member, depth, "zip archive"):
            return "zip"
        try:
            archive = zipfile.ZipFile(_ViewFile(view))
            infos = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            self.flag(member, None, f"malformed zip archive: {exc}")
            return "zip"
        if not self.count_members(member, len(infos)):
            return "zip"
        problems = _zip_layout_problems(view, archive, infos)
        for problem in problems:
            self.flag(member, None, f"zip archive: {problem}")
        if problems:
            return "zip"
        names = [info.filename for info in infos]
        root = _torch_root(names)
        # torch.load reads <folder of the first member>/data.pkl, whatever else is there.
        torch_pickle = f"{names[0].split('/', 1)[0]}/data.pkl" if names else None
        kind = "torch-zip" if root is not None else "zip"
        if root is not None and (
            f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names)
        ):
            kind = "torchscript"
            self.flag(
                member,
                None,
                "TorchScript archive: its code/ runs when loaded (torch.load hands it to "
                "torch.jit.load); not supported",
            )
        for info in infos:
            if info.is_dir() and info.file_size:
                self.flag(_join(member, info.filename), None, "directory entry with data")
        layout = sniff.zip_layout(names, _small_member(archive))
        raw: set[str] = set()  # pt2 weights read as raw bytes, never unpickled
        unpickled: set[str] = set()  # pt2 members that pickle.loads reads
        if layout == "pt2":
            kind = "pt2"
            pt2_root = sniff.pt2_root(names, _small_member(archive))
            assert pt2_root is not None
            raw, unpickled = self.pt2_payloads(view, archive, infos, member, pt2_root)
        elif layout == "skops" and kind == "zip":
            kind = "skops"
        storages = [
            info
            for info in infos
            if root is not None and _TORCH_DATA_MEMBER.fullmatch(info.filename[len(root) + 1 :])
        ]
        for info in storages:
            if info.compress_type != zipfile.ZIP_STORED:
                # torch writes storages stored; a compressed one would be inflated to
                # its declared size by torch.load, unchecked: read it like any member.
                self.flag(
                    _join(member, info.filename),
                    None,
                    "tensor storage member is compressed (torch.save stores them as is)",
                )
        to_read = [
            info
            for info in infos
            if not info.is_dir()
            and not (info in storages and info.compress_type == 0)
            and info.filename not in raw
        ]
        declared = sum(i.file_size for i in to_read if i.compress_type != zipfile.ZIP_STORED)
        if self.inflated + declared > self.limits.max_total_bytes:
            self.flag(
                member,
                None,
                f"zip archive declares {declared} decompressed bytes, over the limit of "
                f"{self.limits.max_total_bytes} (zip bomb?)",
            )
            return kind
        if to_read and all(i.filename.endswith(".npy") for i in to_read) and kind == "zip":
            kind = "npz"
        for info in to_read:
            child = _join(member, info.filename)
            data = self.zip_member(view, archive, info, child)
            if data is None:
                continue
            if info.filename == torch_pickle or info.filename in unpickled:
                self.pickle_file(data, child, 0)  # read by an unpickler, whatever it holds
            else:
                self.content(data, child, depth + 1)
        if kind == "skops":
            self.skops_types(view, member)
        return kind

    def pt2_payloads(
        self,
        view: memoryview,
        archive: zipfile.ZipFile,
        infos: list[zipfile.ZipInfo],
        member: str | None,
        root: str,
    ) -> tuple[set[str], set[str]]:
        """A torch.export archive (torch.export.save, MLflow 3's default PyTorch
        format): which members torch.export.load reads as raw tensor bytes (listed
        with ``use_pickle: false`` in every payload config that names them) and which
        it hands to pickle.loads (``opaque_obj_*``). Everything else is scanned by its
        content; compiled code (AOTInductor) and TorchBind objects are refused."""
        raw: set[str] = set()
        loaded: set[str] = set()
        unpickled: set[str] = set()
        for info in infos:
            rel = info.filename[len(root) + 1 :]
            child = _join(member, info.filename)
            if rel.startswith("data/aotinductor/") and not info.is_dir():
                self.flag(
                    child,
                    None,
                    "pt2 archive: AOTInductor compiled code (torch loads and runs it as a "
                    "shared library); not supported",
                )
                loaded.add(info.filename)
                raw.add(info.filename)  # not read again: already refused
            elif rel.startswith("data/constants/custom_obj_"):
                self.flag(
                    child,
                    None,
                    "pt2 archive: TorchBind object (loaded by TorchScript's unpickler, which "
                    "runs registered C++ classes); not supported",
                )
                raw.add(info.filename)
            elif rel.startswith("data/constants/opaque_obj_"):
                unpickled.add(info.filename)
            found = _PT2_CONFIG.fullmatch(rel)
            if found is None:
                continue
            data = self.zip_member(view, archive, info, child)
            if data is None:
                continue
            try:
                parsed = json.loads(bytes(data))
            except (ValueError, RecursionError):
                parsed = None
            entries = parsed.get("config") if isinstance(parsed, dict) else None
            if not isinstance(entries, dict):
                continue  # not a payload config: it marks nothing raw
            for meta in entries.values():
                path = meta.get("path_name") if isinstance(meta, dict) else None
                if not isinstance(path, str):
                    self.flag(child, None, "pt2 archive: payload entry without a path_name")
                    continue
                name = f"{root}/data/{found.group(1)}/{path}"
                assert isinstance(meta, dict)
                if meta.get("use_pickle") is False and isinstance(meta.get("tensor_meta"), dict):
                    raw.add(name)
                else:
                    loaded.add(name)  # torch.load reads it: scanned as content
        return raw - loaded, unpickled

    def skops_types(self, view: memoryview, member: str | None) -> None:
        """A skops file: every type its schema declares must be trusted without being
        loaded (skops' own ``get_untrusted_types`` reads only the schema): skops'
        defaults, the scan profiles and ``scan.allow_globals``. Its arrays were
        scanned as members."""
        child = _join(member, sniff.SKOPS_SCHEMA)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from skops.io import get_untrusted_types
        except ImportError:
            self.flag(
                child,
                None,
                "skops file: its declared types cannot be checked without the skops "
                "package (pip install 'gitops-registry[sklearn]')",
            )
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                untrusted = get_untrusted_types(data=bytes(view))
        except Exception as exc:  # skops cannot read it: neither can skops.io.load
            self.flag(child, None, f"malformed skops file: {type(exc).__name__}: {exc}")
            return
        trusted = self.allowed - SAFE_GLOBALS
        for name in untrusted:
            if name not in trusted:
                self.flag(
                    child,
                    None,
                    "skops file declares a type that is not trusted (not in skops' defaults, "
                    "the scan profiles or scan.allow_globals)",
                    name,
                )

    def zip_member(
        self, view: memoryview, archive: zipfile.ZipFile, info: zipfile.ZipInfo, child: str
    ) -> memoryview | None:
        if info.flag_bits & 0x1:
            self.flag(child, None, "encrypted zip member cannot be scanned")
            return None
        if info.compress_type == zipfile.ZIP_STORED:
            start = _zip_data_start(view, info)
            return view[start : start + info.compress_size]
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > self.limits.ratio_floor and ratio > self.limits.max_ratio:
            self.flag(
                child,
                None,
                f"compression ratio {ratio:.0f}:1 is over {self.limits.max_ratio}:1 (zip bomb?)",
            )
            return None
        out = bytearray()
        try:
            with archive.open(info) as handle:
                while chunk := handle.read(_CHUNK):
                    out += chunk
                    self.charge(len(chunk))
        except _Refused as exc:
            self.flag(child, None, str(exc))
            return None
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as exc:
            self.flag(child, None, f"zip member cannot be decompressed: {exc}")
            return None
        except (zlib.error, lzma.LZMAError) as exc:
            self.flag(child, None, f"zip member cannot be decompressed: {exc}")
            return None
        return memoryview(out)

    def tar_archive(self, view: memoryview, member: str | None, depth: int) -> str:
        if not self.enter(member, depth, "tar archive"):
            return "tar"
        entries: list[tuple[str, memoryview]] = []
        try:
            with tarfile.open(fileobj=_ViewFile(view), mode="r:") as archive:
                for info in archive:
                    if not self.count_members(member, 1):
                        return "tar"
                    if not info.isreg():
                        continue  # directories, links, devices hold no bytes to load
                    child = _join(member, info.name)
                    if info.sparse is not None:
                        self.flag(child, None, "sparse tar member cannot be scanned")
                        continue
                    if info.offset_data + info.size > len(view):
                        self.flag(child, None, "tar member is truncated")
                        continue
                    entries.append((child, view[info.offset_data : info.offset_data + info.size]))
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            self.flag(member, None, f"malformed tar archive: {exc}")
            return "tar"
        for child, data in entries:
            if child.rpartition("!")[2] == "pickle":
                # torch.load's legacy tar reader unpickles this member, whatever it holds.
                self.pickle_file(data, child, 0)
            else:
                self.content(data, child, depth + 1)
        return "tar"

    # -- compression --

    def charge(self, size: int) -> None:
        self.inflated += size
        if self.inflated > self.limits.max_total_bytes:
            raise _Refused(
                f"more than {self.limits.max_total_bytes} decompressed bytes (decompression bomb?)"
            )

    def decompressed(self, kind: str, view: memoryview, member: str | None, depth: int) -> str:
        if not self.enter(member, depth, f"{kind} stream"):
            return kind
        child = _join(member, f"[{kind}]")
        try:
            data = self.inflate(kind, view)
        except _Refused as exc:
            self.flag(child, None, str(exc))
            return kind
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            self.flag(child, None, f"malformed {kind} stream: {exc}")
            return kind
        return f"{kind}/{self.content(memoryview(data), child, depth + 1)}"

    def inflate(self, kind: str, view: memoryview, *, trailing_ok: bool = False) -> bytearray:
        """Decompress every stream in ``view`` (gzip, bz2 and xz allow several back to
        back), within the size and ratio limits; trailing garbage is refused."""
        out = bytearray()
        pos = 0
        while True:
            decompressor = _Decompressor(kind)
            idle = 0
            while not decompressor.eof:
                chunk = b""
                if decompressor.needs_input and pos < len(view):
                    chunk = bytes(view[pos : pos + _INPUT_CHUNK])
                    pos += len(chunk)
                piece = decompressor.decompress(chunk, _CHUNK)
                idle = 0 if piece or chunk else idle + 1
                if idle > 2:
                    raise _Refused(f"truncated {kind} stream")
                out += piece
                self.charge(len(piece))
                if len(out) > self.limits.ratio_floor and len(out) > self.limits.max_ratio * pos:
                    raise _Refused(
                        f"{kind} stream expands more than {self.limits.max_ratio}:1 "
                        "(decompression bomb?)"
                    )
            pos -= len(decompressor.unused_data)
            rest = view[pos:]
            if not rest or trailing_ok:
                return out
            if kind in ("gzip", "bz2", "xz") and sniff.compressed_kind(bytes(rest[:16])) == kind:
                continue
            if kind == "gzip" and not bytes(rest).strip(b"\x00"):  # gzip skips zero padding
                return out
            raise _Refused(f"unrecognised data after the end of the {kind} stream")


class _Decompressor:
    """One interface over zlib, bz2 and lzma decompressors (as bz2/lzma have it)."""

    def __init__(self, kind: str) -> None:
        self._zlib: zlib._Decompress | None = None
        self._other: bz2.BZ2Decompressor | lzma.LZMADecompressor | None = None
        if kind in ("gzip", "zlib"):
            self._zlib = zlib.decompressobj(31 if kind == "gzip" else 15)
        elif kind == "bz2":
            self._other = bz2.BZ2Decompressor()
        else:
            fmt = lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE
            self._other = lzma.LZMADecompressor(fmt)

    @property
    def eof(self) -> bool:
        return self._zlib.eof if self._zlib is not None else bool(self._other and self._other.eof)

    @property
    def needs_input(self) -> bool:
        if self._zlib is not None:
            return not self._zlib.unconsumed_tail
        assert self._other is not None
        return self._other.needs_input

    @property
    def unused_data(self) -> bytes:
        if self._zlib is not None:
            return self._zlib.unused_data
        assert self._other is not None
        return self._other.unused_data

    def decompress(self, data: bytes, limit: int) -> bytes:
        if self._zlib is not None:
            return self._zlib.decompress(data or self._zlib.unconsumed_tail, limit)
        assert self._other is not None
        return self._other.decompress(data, limit)


# -- format details -----------------------------------------------------------------


def _starts_decompressing(kind: str, view: memoryview) -> bool:
    """The first 4 KiB decompress cleanly: text that happens to start like a zlib
    header does not get this far."""
    try:
        _Decompressor(kind).decompress(bytes(view[:4096]), 64 * 1024)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError):
        return False
    return True


def _joblib_layout(state: object) -> tuple[tuple[int, ...], int, bool, bool] | str:
    """(shape, item size, holds objects, has an alignment byte) from a
    NumpyArrayWrapper's state, or what is wrong with it. Only plain dtypes are
    understood; anything else cannot be stepped over and is refused."""
    if not isinstance(state, _Dict) or not state.exact:
        return "wrapper state is not a literal dict"
    shape = state.get("shape")
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        return "shape is not a tuple of integers"
    dtype = state.get("dtype")
    if not (
        isinstance(dtype, _Call)
        and isinstance(dtype.func, _Global)
        and dtype.func.dotted == "numpy.dtype"
        and isinstance(dtype.args, tuple)
        and dtype.args
        and isinstance(dtype.args[0], str)
        and isinstance(dtype.state, tuple)
        and len(dtype.state) >= 8
    ):
        return "dtype is not a literal numpy.dtype"
    found = _SIMPLE_DTYPE.fullmatch(dtype.args[0])
    _version, _order, subarray, names, fields, elsize, _align, flags = dtype.state[:8]
    structured = names is not None or fields is not None
    if (
        found is None
        or subarray is not None
        or (structured and (found.group(1) != "V" or not _plain_fields(names, fields)))
    ):
        return f"dtype {dtype.args[0]!r} is structured or unknown (not supported)"
    if type(elsize) is not int or type(flags) is not int:
        return "dtype state is not literal"
    kind, digits = found.group(1), int(found.group(2))
    has_object = kind == "O"
    if has_object != bool(flags & 1):
        return "dtype flags disagree with its kind"
    if kind in "SUV":
        itemsize = elsize
    elif elsize == -1:
        itemsize = digits
    else:
        return "dtype size disagrees with its kind"
    if itemsize <= 0:
        return "dtype has no size"
    aligned = state.get("numpy_array_alignment_bytes")
    if aligned is not None and type(aligned) is not int:
        return "alignment is not an integer"
    return shape, itemsize, has_object, aligned is not None


def _plain_fields(names: object, fields: object) -> bool:
    """A structured dtype's fields (sklearn's tree nodes, say) are all literal plain
    numbers: an array of it holds no objects, whatever its flags claim."""
    if not isinstance(names, tuple) or not names or not isinstance(fields, _Dict):
        return False
    if not fields.exact or set(fields) != set(names) or len(fields) != len(names):
        return False
    for value in fields.values():
        if not isinstance(value, tuple) or len(value) < 2 or type(value[1]) is not int:
            return False
        dtype = value[0]
        if not (
            isinstance(dtype, _Call)
            and isinstance(dtype.func, _Global)
            and dtype.func.dotted == "numpy.dtype"
            and isinstance(dtype.args, tuple)
            and dtype.args
            and isinstance(dtype.args[0], str)
            and isinstance(dtype.state, tuple)
            and len(dtype.state) >= 8
        ):
            return False
        found = _SIMPLE_DTYPE.fullmatch(dtype.args[0])
        _version, _order, subarray, inner_names, inner_fields, _size, _align, flags = (
            dtype.state[:8]
        )
        if (
            found is None
            or found.group(1) not in "biufc"
            or subarray is not None
            or inner_names is not None
            or inner_fields is not None
            or type(flags) is not int
            or flags & 1
        ):
            return False
    return True


def _npy_layout(view: memoryview) -> tuple[int, int, bool] | str:
    """(data offset, data size, holds objects) of a .npy file, or what is wrong."""
    if len(view) < 10:
        return "truncated header"
    major = view[6]
    if major == 1:
        header_size, start = int.from_bytes(view[8:10], "little"), 10
    elif major in (2, 3) and len(view) >= 12:
        header_size, start = int.from_bytes(view[8:12], "little"), 12
    else:
        return f"unsupported version {major}"
    if header_size > _MAX_NPY_HEADER or start + header_size > len(view):
        return "header too large or truncated"
    raw = bytes(view[start : start + header_size])
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        return "header is not a Python literal"
    if not isinstance(header, dict) or set(header) != _NPY_HEADER_KEYS:
        return "header keys are not descr, fortran_order and shape"
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        return "shape is not a tuple of integers"
    import numpy.lib.format  # lazily: only .npy content needs it

    try:
        dtype = numpy.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError, KeyError, RecursionError) as exc:
        return f"descr is not a dtype ({exc})"
    return start + header_size, math.prod(shape) * dtype.itemsize, bool(dtype.hasobject)


def _zip_data_start(view: memoryview, info: zipfile.ZipInfo) -> int:
    header = _ZIP_LOCAL_HEADER.unpack_from(view, info.header_offset)
    name_size, extra_size = int(header[9]), int(header[10])
    return info.header_offset + _ZIP_LOCAL_HEADER.size + name_size + extra_size


def _zip_layout_problems(
    view: memoryview, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]
) -> list[str]:
    """What makes different zip readers see different members: duplicate names,
    local headers that disagree with the directory, overlapping or prefixed data."""
    problems: list[str] = []
    seen: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    directory_start = getattr(archive, "start_dir", len(view))
    for info in infos:
        name = info.filename
        if name in seen:
            problems.append(f"member {name!r} appears twice (readers disagree on which counts)")
        seen.add(name)
        offset = info.header_offset
        if offset < 0 or offset + _ZIP_LOCAL_HEADER.size > len(view):
            problems.append(f"member {name!r} has no local header")
            continue
        header = _ZIP_LOCAL_HEADER.unpack_from(view, offset)
        if header[0] != b"PK\x03\x04":
            problems.append(f"member {name!r} has no local header")
            continue
        name_start = offset + _ZIP_LOCAL_HEADER.size
        raw_name = bytes(view[name_start : name_start + header[9]])
        encoding = "utf-8" if header[1] & 0x800 else "cp437"
        if raw_name.decode(encoding, "replace") != info.orig_filename:
            problems.append(f"member {name!r} has a different name in its local header")
        data_end = name_start + header[9] + header[10] + info.compress_size
        if data_end > directory_start:
            problems.append(f"member {name!r} runs into the central directory")
        spans.append((offset, data_end, name))
    spans.sort()
    if spans and spans[0][0] != 0:
        problems.append("data before the first member (a different file may hide there)")
    for (_, previous_end, previous), (start, _, name) in itertools.pairwise(spans):
        if start < previous_end:
            problems.append(f"members {previous!r} and {name!r} overlap (zip bomb?)")
    return problems


def _small_member(archive: zipfile.ZipFile) -> Callable[[str], bytes | None]:
    """Reads a member of at most 64 bytes (a marker such as pt2's archive_format)."""

    def read(name: str) -> bytes | None:
        try:
            info = archive.getinfo(name)
            if info.file_size > 64 or info.compress_size > 1024 or info.flag_bits & 0x1:
                return None
            return archive.read(info)
        except (KeyError, zipfile.BadZipFile, NotImplementedError, OSError, EOFError,
                ValueError, zlib.error, lzma.LZMAError):
            return None

    return read


def _zip_kind(view: memoryview) -> str:
    """``zip``, or the loader that reads it by its members (`sniff.zip_layout`)."""
    try:
        archive = zipfile.ZipFile(_ViewFile(view))
        names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return "zip"
    return sniff.zip_layout(names, _small_member(archive)) or "zip"


def _torch_root(names: list[str]) -> str | None:
    """The archive folder of a PyTorch zip checkpoint: every member under one folder
    that holds data.pkl. (torch reads the folder of the first member.)"""
    if not names:
        return None
    root = names[0].split("/", 1)[0]
    if not all(name.startswith(f"{root}/") for name in names):
        return None
    return root if f"{root}/data.pkl" in names else None


# -- entry points -------------------------------------------------------------------


def scan_bytes(
    data: bytes | bytearray | memoryview,
    name: str = "<bytes>",
    allow_globals: Iterable[str] = (),
    *,
    profiles: Iterable[str] = (),
    limits: ScanLimits = DEFAULT_LIMITS,
) -> ScanReport:
    """Scan in-memory content; ``name`` is what findings give as the path."""
    allowed = allow_list(allow_globals, profiles=profiles)
    scan = _Scan(name, allowed, limits)
    with memoryview(data) as view:
        kind = scan.run(view.cast("B") if view.format != "B" or view.ndim != 1 else view)
    return scan.report(kind)


def identify_file(path: str | os.PathLike[str]) -> str:
    """What a file's bytes make it to the loaders, by the scan's own sniffer (the
    format gate's too): ``pickle``, ``zip``, ``tar``, ``npy``, ``gzip``, ``bz2``,
    ``xz``, ``zlib``, ``lzma``, ``joblib-zfile``, ``hdf5``, ``safetensors``,
    ``gguf``, ``text``, ``protobuf``, ``empty`` or ``unknown`` (``truncated-pickle``
    is ``pickle``). Raises `ValidationError` when the file cannot be read."""
    name = str(path)
    try:
        if not stat.S_ISREG(os.stat(name).st_mode):
            raise ValidationError.one(name, "not a regular file")
        handle = open(name, "rb")  # noqa: SIM115 - closed below, after the mapping
    except OSError as exc:
        raise ValidationError.one(name, f"cannot read: {exc.strerror or exc}") from None
    with handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return "empty"
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        try:
            kind = _Scan(name, SAFE_GLOBALS, DEFAULT_LIMITS).identify(view, None)[0]
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a slice still alive: GC closes it
                mapped.close()
    return "pickle" if kind == "truncated-pickle" else kind


def scan_file(
    path: str | os.PathLike[str],
    allow_globals: Iterable[str] = (),
    *,
    profiles: Iterable[str] = (),
    limits: ScanLimits = DEFAULT_LIMITS,
) -> ScanReport:
    """Scan one file, mapped into memory so that skipped tensor data is never read.
    ``profiles`` (`PROFILES`) and ``allow_globals`` add to the allow-list."""
    return _scan_file(str(path), allow_list(allow_globals, profiles=profiles), limits)


def scan_paths(
    paths: Iterable[str | os.PathLike[str]],
    allow_globals: Iterable[str] = (),
    *,
    profiles: Iterable[str] = (),
    limits: ScanLimits = DEFAULT_LIMITS,
) -> list[ScanReport]:
    """Scan files, and every file under directories (sorted; symlinks not followed
    into directories). One report per file, in order."""
    allowed = allow_list(allow_globals, profiles=profiles)
    reports: list[ScanReport] = []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    reports.append(_scan_file(os.path.join(folder, name), allowed, limits))
        else:
            reports.append(_scan_file(str(path), allowed, limits))
    return reports


def _scan_file(path: str, allowed: frozenset[str], limits: ScanLimits) -> ScanReport:
    scan = _Scan(path, allowed, limits)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
            scan.flag(None, None, "not a regular file")
            return scan.report("unreadable")
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the mapping
    except OSError as exc:
        scan.flag(None, None, f"cannot read: {exc.strerror or exc}")
        return scan.report("unreadable")
    with handle:
        info = os.fstat(handle.fileno())
        if info.st_size == 0:
            return scan.report("empty")
        try:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            scan.flag(None, None, f"cannot read: {exc}")
            return scan.report("unreadable")
        view = memoryview(mapped)
        try:
            kind = scan.run(view)
        finally:
            view.release()
            with contextlib.suppress(BufferError):  # a slice still alive: GC closes it
                mapped.close()
    return scan.report(kind)
