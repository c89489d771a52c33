"""The scan over one file: what each piece of content is to the loaders, and its pickles.

Pickles, legacy PyTorch checkpoints, joblib dumps and ``.npy`` files are walked here.
"""

from __future__ import annotations

import ast
import contextlib
import math
import re
import zlib
from typing import Final

from registry.artifacts import sniff
from registry.artifacts.safetensors import validate_safetensors_bytes
from registry.artifacts.scan.allowlist import STORAGE_ELEMENT_BYTES
from registry.artifacts.scan.base import _join, _Refused
from registry.artifacts.scan.containers import _Containers, _starts_decompressing, _zip_kind
from registry.artifacts.scan.machine import _PROBE_OVERRUN, _Machine
from registry.artifacts.scan.stack import _MachineBase
from registry.artifacts.scan.values import _Call, _Dict, _Global, _Malformed, _OverlayMemo
from registry.errors import ValidationError

_SIMPLE_DTYPE: Final = re.compile(r"([biufcmMOSUV])([0-9]+)")
_NPY_HEADER_KEYS: Final = frozenset({"descr", "fortran_order", "shape"})
_MAX_NPY_HEADER: Final = 1 << 20
_PROTOCOLS_2_TO_5: Final = (b"\x02", b"\x03", b"\x04", b"\x05")
_TORCH_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C


class _Scan(_Containers):
    """The scan of one file: content identified as the loaders would, pickles walked
    by the symbolic machine, NumPy and joblib arrays stepped over."""

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
        """The format gate's own checks (`safetensors.validate_safetensors_bytes`)."""
        try:
            validate_safetensors_bytes(view, self.path)
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
        self, machine: _MachineBase, wrapper: _Call, state: object, offset: int, pos: int
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
    if not _is_literal_dtype(dtype):
        return "dtype is not a literal numpy.dtype"
    assert isinstance(dtype, _Call) and isinstance(dtype.args, tuple) and isinstance(dtype.state, tuple)
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


def _is_literal_dtype(dtype: object) -> bool:
    """A `numpy.dtype(str, ...)` call with its full BUILD state, as numpy pickles one."""
    return (
        isinstance(dtype, _Call)
        and isinstance(dtype.func, _Global)
        and dtype.func.dotted == "numpy.dtype"
        and isinstance(dtype.args, tuple)
        and bool(dtype.args)
        and isinstance(dtype.args[0], str)
        and isinstance(dtype.state, tuple)
        and len(dtype.state) >= 8
    )


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
        if not _is_literal_dtype(dtype):
            return False
        assert isinstance(dtype, _Call) and isinstance(dtype.args, tuple) and isinstance(dtype.state, tuple)
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

