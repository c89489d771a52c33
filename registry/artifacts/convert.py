"""Convert a pickled checkpoint to safetensors without executing it.

Reads PyTorch checkpoints (``torch.save``: the zip format and the legacy format) and
pickled dicts of NumPy arrays, and writes a safetensors file. Nothing in the input is
ever run and torch is never imported:

1. The security scan (`registry.artifacts.scan.scan_file`) reads the file first; anything it
   finds refuses the file, naming each finding.
2. A restricted unpickler reads it. ``find_class`` answers an exact allow-list of
   ``module.qualname`` strings, and never with the real object: each name maps to a
   stand-in defined here (torch's rebuild functions become functions that record a
   tensor's storage, dtype, shape, stride and offset; storage types and dtypes become
   inert markers; NumPy's reconstructors are wrapped to take plain data only).
   ``persistent_load`` turns a torch storage id into a reference to raw bytes: a
   ``data/<key>`` member of the zip, or a record of the legacy file's storage section.
3. Each tensor becomes a NumPy array over its storage bytes
   (`np.lib.stride_tricks.as_strided` after a bounds check, then a copy), so views,
   transposes and offsets come out as torch would show them.

Decisions:

- The safetensors file is written here (8-byte length, JSON header padded to 8 bytes,
  raw little-endian bytes, tensors ordered by alignment then name, as the reference
  writer does). NumPy has no bfloat16 or float8, and the `safetensors` package's raw
  writer changed its API incompatibly in 0.8 (dicts of bytes became pointer specs),
  so bytes are carried in same-width integer arrays and the dtype is the safetensors
  code (``BF16``, ``F8_E4M3``...). The output is verified tensor by tensor against the
  source (dtype, shape, bytes) and its header by `registry.artifacts.safetensors.validate_safetensors`
  before it is moved into place.
- Nested dicts are flattened with ``.`` (``{"model": {"fc.weight": t}}`` gives
  ``model.fc.weight``). Leaves that are ``str``, ``int``, ``float`` or ``bool`` go to
  ``__metadata__`` under their flattened name (strings as they are, the rest as JSON:
  ``3``, ``0.001``, ``true``). Any other leaf (lists, tuples, None, NumPy scalars,
  optimizer state) refuses the file, naming the key: safetensors holds tensors only.
- Tensors that share a storage (tied weights, views) are written as separate copies:
  safetensors has no aliasing. The result lists them under ``shared_storage``.
- Refused: joblib dumps (their arrays live outside the pickle), quantized, sparse,
  nested and meta tensors, lazily conjugated or negated tensors, complex128 and other
  dtypes safetensors cannot hold, big-endian checkpoints, and anything whose tensors
  would take more than `EXPANSION_LIMIT` times the file's size (a few bytes of pickle
  can name one large tensor a million times).

The output is written to a temporary file beside it, fsynced and renamed into place;
an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Final

import numpy as np

from registry.artifacts import scan
from registry.artifacts.safetensors import DTYPE_BITS, MAX_HEADER_BYTES, validate_safetensors
from registry.errors import Problem, RegistryError, UsageError, ValidationError

__all__ = [
    "EXPANSION_FLOOR",
    "EXPANSION_LIMIT",
    "Conversion",
    "TensorInfo",
    "UnsafeInputError",
    "convert",
    "default_output",
]

# Tensors may take at most this many times the input's size (but always this floor).
EXPANSION_LIMIT: Final = 16
EXPANSION_FLOOR: Final = 256 * 1024**2

_SUFFIX: Final = ".safetensors"
_TORCH_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL: Final = 1001
_MAX_NESTING: Final = 64
_COPY_CHUNK: Final = 16 * 1024**2


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    """The safetensors dtype code (``F32``, ``BF16``...)."""
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Conversion:
    """A finished, verified conversion."""

    source: str
    output: str
    source_format: str
    """What the scan identified the input as: ``torch-zip``, ``torch-legacy``, ``pickle``."""
    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]
    size: int
    sha256: str
    shared_storage: tuple[tuple[str, ...], ...]
    """Groups of tensors that shared one storage in the input (written as copies)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "format": self.source_format,
            "tensors": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes}
                for t in self.tensors
            ],
            "metadata": dict(self.metadata),
            "size": self.size,
            "sha256": self.sha256,
            "shared_storage": [list(group) for group in self.shared_storage],
        }


class UnsafeInputError(ValidationError):
    """The security scan refused the input; ``findings`` says why."""

    def __init__(self, path: str, findings: tuple[scan.Finding, ...], kind: str = "") -> None:
        self.findings = findings
        if kind in ("unknown", "text", "gguf", "protobuf", "npy", "empty"):
            # Raw tensor bytes (a .pt2 archive's weights, say) hold no code: the scan
            # could not tell what they are, and convert reads only checkpoints.
            why = (
                f"refused: the security scan could not show this file safe to read "
                f"({kind} content, not a PyTorch checkpoint or pickle convert reads), so "
                "it is not read; nothing was written"
            )
        else:
            why = (
                "refused: the security scan could not show that unpickling this file runs "
                "no code (findings below), so it is not read; nothing was written"
            )
        super().__init__([Problem(path, why), *(Problem(_where(f), _what(f)) for f in findings)])


def _where(finding: scan.Finding) -> str:
    where = finding.path if finding.member is None else f"{finding.path}!{finding.member}"
    return where if finding.offset is None else f"{where}@{finding.offset}"


def _what(finding: scan.Finding) -> str:
    if finding.global_name:
        return f"{finding.global_name}: {finding.message}"
    return finding.message


class _Refused(Exception):
    """Raised inside the unpickler; becomes a `ValidationError` naming the file."""


# -- dtypes -------------------------------------------------------------------------


@dataclass(frozen=True)
class _DType:
    torch_name: str
    itemsize: int
    safetensors: str | None  # None: safetensors cannot hold it
    carrier: str | None = None  # NumPy dtype with the same bytes (little-endian)


def _dtypes() -> dict[str, _DType]:
    table = [
        _DType("float64", 8, "F64", "<f8"),
        _DType("float32", 4, "F32", "<f4"),
        _DType("float16", 2, "F16", "<f2"),
        _DType("bfloat16", 2, "BF16", "<u2"),
        _DType("int64", 8, "I64", "<i8"),
        _DType("int32", 4, "I32", "<i4"),
        _DType("int16", 2, "I16", "<i2"),
        _DType("int8", 1, "I8", "i1"),
        _DType("uint8", 1, "U8", "u1"),
        _DType("uint16", 2, "U16", "<u2"),
        _DType("uint32", 4, "U32", "<u4"),
        _DType("uint64", 8, "U64", "<u8"),
        _DType("bool", 1, "BOOL", "?"),
        _DType("complex64", 8, "C64", "<c8"),
        _DType("float8_e4m3fn", 1, "F8_E4M3", "u1"),
        _DType("float8_e5m2", 1, "F8_E5M2", "u1"),
        _DType("float8_e4m3fnuz", 1, "F8_E4M3FNUZ", "u1"),
        _DType("float8_e5m2fnuz", 1, "F8_E5M2FNUZ", "u1"),
        _DType("float8_e8m0fnu", 1, "F8_E8M0", "u1"),
        *(
            _DType(name, size, None)
            for name, size in (
                ("complex128", 16),
                ("complex32", 4),
                ("float4_e2m1fn_x2", 1),
                ("bits8", 1),
                ("bits16", 2),
                ("bits1x8", 1),
                ("bits2x4", 1),
                ("bits4x2", 1),
            )
        ),
    ]
    return {dtype.torch_name: dtype for dtype in table}


_DTYPES: Final = _dtypes()

# Typed storage classes (what `_rebuild_tensor_v2` and legacy files name) by dtype.
_STORAGE_DTYPES: Final = {
    "Double": "float64",
    "Float": "float32",
    "Half": "float16",
    "BFloat16": "bfloat16",
    "Long": "int64",
    "Int": "int32",
    "Short": "int16",
    "Char": "int8",
    "Byte": "uint8",
    "Bool": "bool",
    "ComplexDouble": "complex128",
    "ComplexFloat": "complex64",
}

# NumPy arrays: (kind, itemsize) -> safetensors code.
_NUMPY_CODES: Final = {
    ("b", 1): "BOOL",
    ("i", 1): "I8",
    ("u", 1): "U8",
    ("i", 2): "I16",
    ("u", 2): "U16",
    ("f", 2): "F16",
    ("i", 4): "I32",
    ("u", 4): "U32",
    ("f", 4): "F32",
    ("i", 8): "I64",
    ("u", 8): "U64",
    ("f", 8): "F64",
    ("c", 8): "C64",
}


# -- what the unpickler hands out instead of torch's objects ----------------------------


class _Inert:
    """Stand-ins are plain data: the pickle can neither call them nor set their state."""

    __slots__ = ()

    def __setstate__(self, state: object) -> None:
        raise _Refused(f"the pickle sets state on {self!r}")


class _TorchDType(_Inert):
    __slots__ = ("dtype",)

    def __init__(self, dtype: _DType) -> None:
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.dtype.torch_name}"


class _StorageType(_Inert):
    __slots__ = ("dotted", "dtype")

    def __init__(self, dotted: str, dtype: _DType) -> None:
        self.dotted = dotted
        self.dtype = dtype

    def __repr__(self) -> str:
        return self.dotted


class _TensorType(_Inert):
    __slots__ = ("dotted",)

    def __init__(self, dotted: str) -> None:
        self.dotted = dotted

    def __repr__(self) -> str:
        return self.dotted


class _NDArrayType(_Inert):
    __slots__ = ()

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY: Final = _NDArrayType()


class _StorageRef(_Inert):
    """A torch storage: ``nbytes`` raw bytes under ``key``, read when needed."""

    __slots__ = ("key", "nbytes", "type")

    def __init__(self, key: str, storage_type: _StorageType, nbytes: int) -> None:
        self.key = key
        self.type = storage_type
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"<storage {self.key!r}>"


class _TensorRef(_Inert):
    """A dense tensor: where its elements are in a storage, checked when it is made."""

    __slots__ = ("dtype", "offset", "shape", "storage", "stride")

    def __init__(
        self,
        storage: _StorageRef,
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        dtype: _DType,
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"<tensor {self.dtype.torch_name}{list(self.shape)}>"


def _int(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Refused(f"{what} must be a non-negative integer, not {value!r}")
    return value


def _ints(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        raise _Refused(f"{what} must be a tuple of integers, not {type(value).__name__}")
    return tuple(_int(item, what) for item in value)


def _tensor(
    storage: object, offset: object, size: object, stride: object, dtype: _DType
) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise _Refused(f"a tensor's storage must be a torch storage, not {type(storage).__name__}")
    shape = _ints(size, "a tensor's size")
    strides = _ints(stride, "a tensor's stride")
    if len(shape) != len(strides):
        raise _Refused(f"a tensor's size {list(shape)} and stride {list(strides)} differ in length")
    return _TensorRef(storage, _int(offset, "a tensor's storage offset"), shape, strides, dtype)


def _check_tensor_metadata(metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or any(type(v) is not bool for v in metadata.values()):
        raise _Refused(f"unexpected tensor metadata {metadata!r}")
    lazy = sorted(str(k) for k, v in metadata.items() if v)
    if lazy:
        raise _Refused(
            f"a tensor has the lazy {'/'.join(lazy)} bit set, so its bytes are not its "
            "values; save it after .resolve_conj().resolve_neg()"
        )


def _rebuild_tensor(
    storage: object, storage_offset: object, size: object, stride: object
) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise _Refused(f"a tensor's storage must be a torch storage, not {type(storage).__name__}")
    return _tensor(storage, storage_offset, size, stride, storage.type.dtype)


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    _check_tensor_metadata(metadata)
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    dtype: object,
    metadata: object = None,
) -> _TensorRef:
    _check_tensor_metadata(metadata)
    if not isinstance(dtype, _TorchDType):
        raise _Refused(f"a tensor's dtype must be a torch dtype, not {type(dtype).__name__}")
    return _tensor(storage, storage_offset, size, stride, dtype.dtype)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object) -> _TensorRef:
    if not isinstance(data, _TensorRef):
        raise _Refused(f"a parameter must wrap a tensor, not {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> _TensorRef:
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_TENSOR_TYPES: Final = {
    "torch.Tensor": _TensorType("torch.Tensor"),
    "torch.nn.parameter.Parameter": _TensorType("torch.nn.parameter.Parameter"),
}
_REBUILDERS: Final[dict[str, Callable[..., _TensorRef]]] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
}


def _rebuild_from_type_v2(
    func: object, new_type: object, args: object, state: object
) -> _TensorRef:
    # A tensor with Python attributes (or a Parameter); the attributes are dropped.
    if not any(func is f for f in _REBUILDERS.values()):
        raise _Refused(f"_rebuild_from_type_v2 of {func!r}: not a tensor rebuild function")
    if not any(new_type is t for t in _TENSOR_TYPES.values()):
        raise _Refused(f"_rebuild_from_type_v2 to {new_type!r}: not a plain tensor type")
    if not isinstance(args, tuple):
        raise _Refused("_rebuild_from_type_v2: arguments must be a tuple")
    assert callable(func)
    result = func(*args)
    assert isinstance(result, _TensorRef)
    return result


def _numpy_reconstruct(subtype: object, shape: object, dtype_code: object) -> np.ndarray[Any, Any]:
    # What ndarray.__reduce__ writes: an empty array that BUILD then fills.
    if subtype is not _NDARRAY or shape != (0,) or not isinstance(dtype_code, bytes):
        raise _Refused("numpy _reconstruct is allowed only as numpy pickles an ndarray")
    return np.ndarray((0,), np.uint8)


def _numpy_dtype(spec: object, align: object = False, copy: object = False) -> np.dtype[Any]:
    if not isinstance(spec, str) or type(align) is not bool or type(copy) is not bool:
        raise _Refused(f"numpy.dtype({spec!r}): only a dtype name is allowed")
    dtype = np.dtype(spec, align=align, copy=copy)
    if dtype.hasobject:
        raise _Refused(f"numpy.dtype({spec!r}): object arrays are refused")
    return dtype


def _numpy_frombuffer(
    buf: object, dtype: object, shape: object, order: object, axis_order: object = None
) -> np.ndarray[Any, Any]:
    if not isinstance(buf, bytes | bytearray | pickle.PickleBuffer):
        raise _Refused("numpy _frombuffer needs bytes")
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused("numpy _frombuffer needs a plain dtype")
    dims = _ints(shape, "an array's shape")
    if order not in ("C", "F") or axis_order is not None:
        raise _Refused(f"numpy _frombuffer: unsupported order {order!r}")
    assert isinstance(order, str)
    return np.frombuffer(memoryview(buf), dtype=dtype).reshape(dims, order=order)


def _codecs_encode(text: object, encoding: object) -> bytes:
    # Protocol 0-2 pickles write bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin1")


def _allowed() -> dict[str, object]:
    allowed: dict[str, object] = {"collections.OrderedDict": collections.OrderedDict}
    allowed.update(_REBUILDERS)
    allowed.update(_TENSOR_TYPES)
    allowed["torch._tensor._rebuild_from_type_v2"] = _rebuild_from_type_v2
    for prefix in ("torch", "torch.cuda"):
        for kind, dtype_name in _STORAGE_DTYPES.items():
            allowed[f"{prefix}.{kind}Storage"] = _StorageType(
                f"{prefix}.{kind}Storage", _DTYPES[dtype_name]
            )
    allowed["torch.storage.UntypedStorage"] = _StorageType(
        "torch.storage.UntypedStorage", _DTYPES["uint8"]
    )
    for name, dtype in _DTYPES.items():
        allowed[f"torch.{name}"] = _TorchDType(dtype)
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray._reconstruct"] = _numpy_reconstruct
        allowed[f"{core}.numeric._frombuffer"] = _numpy_frombuffer
    allowed["numpy.ndarray"] = _NDARRAY
    allowed["numpy.dtype"] = _numpy_dtype
    allowed["_codecs.encode"] = _codecs_encode
    return allowed


_ALLOWED: Final = MappingProxyType(_allowed())

# Globals the scan lets through that name things safetensors cannot hold: a clear "why".
_UNSUPPORTED: Final = {
    **{
        f"torch._utils._rebuild_{kind}": f"{what} tensors are not supported"
        for kind, what in (
            ("qtensor", "quantized"),
            ("sparse_tensor", "sparse"),
            ("nested_tensor", "nested"),
            ("meta_tensor_no_storage", "meta (data-less)"),
            ("wrapper_subclass", "tensor subclass"),
            ("device_tensor_from_numpy", "device"),
            ("device_tensor_from_cpu_tensor", "device"),
        )
    },
    "joblib.numpy_pickle.NumpyArrayWrapper": (
        "joblib dumps are not supported (joblib writes arrays outside the pickle); "
        "save the dict with pickle.dump or torch.save"
    ),
    "numpy.core.multiarray.scalar": "NumPy scalars are not arrays; store np.asarray(x)",
    "numpy._core.multiarray.scalar": "NumPy scalars are not arrays; store np.asarray(x)",
}


# -- the restricted unpickler ------------------------------------------------------------


class _Storages:
    """Where a checkpoint's storages are. Plain pickles have none."""

    pid_length = 0

    def __init__(self) -> None:
        self.refs: dict[str, _StorageRef] = {}

    def register(self, pid: object) -> _StorageRef:
        if not self.pid_length:
            raise _Refused("a persistent id in a plain pickle (only torch checkpoints have them)")
        if not isinstance(pid, tuple) or len(pid) != self.pid_length or pid[0] != "storage":
            raise _Refused(f"unexpected persistent id {pid!r}")
        _, storage_type, key, location, numel, *view = pid
        if not isinstance(storage_type, _StorageType):
            raise _Refused(f"persistent id {pid!r}: not a storage type")
        if not isinstance(key, str) or not key or not isinstance(location, str):
            raise _Refused(f"persistent id {pid!r}: key and location must be strings")
        if view and view[0] is not None:
            raise _Refused("storage views (pre-1.0 checkpoints) are not supported")
        nbytes = _int(numel, "a storage's size") * storage_type.dtype.itemsize
        known = self.refs.get(key)
        if known is None:
            self.refs[key] = known = _StorageRef(key, storage_type, nbytes)
        elif known.nbytes != nbytes:
            raise _Refused(f"storage {key!r} is declared with two sizes")
        return known

    def data(self, ref: _StorageRef) -> bytes:
        raise AssertionError("no storages")  # pragma: no cover - guarded by register


class _Unpickler(pickle.Unpickler):
    def __init__(self, handle: BinaryIO, storages: _Storages) -> None:
        super().__init__(handle)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        dotted = f"{module}.{name}"
        if dotted in _ALLOWED:
            return _ALLOWED[dotted]
        reason = _UNSUPPORTED.get(dotted)
        if reason is None and module.startswith("torch.") and name.endswith("Storage"):
            reason = "quantized tensors are not supported"
        raise _Refused(
            f"{dotted}: {reason or 'not allowed (convert reads only tensors, arrays and dicts)'}"
        )

    def persistent_load(self, pid: Any) -> Any:
        return self._storages.register(pid)


def _unpickle(handle: BinaryIO, storages: _Storages, path: str, what: str = "pickle") -> Any:
    try:
        return _Unpickler(handle, storages).load()
    except _Refused as exc:
        raise ValidationError.one(path, f"{what}: {exc}") from None
    except RecursionError:
        raise ValidationError.one(path, f"{what}: nested too deeply") from None
    except MemoryError:
        raise ValidationError.one(path, f"{what}: too large to read") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        struct.error,
    ) as exc:
        raise ValidationError.one(
            path, f"{what} is malformed: {type(exc).__name__}: {exc}"
        ) from None


class _ZipStorages(_Storages):
    pid_length = 5

    def __init__(self, archive: zipfile.ZipFile, root: str, path: str) -> None:
        super().__init__()
        self.archive = archive
        self.root = root
        self.path = path
        self.cache: dict[str, bytes] = {}

    def data(self, ref: _StorageRef) -> bytes:
        if ref.key in self.cache:
            return self.cache[ref.key]
        name = f"{self.root}/data/{ref.key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise ValidationError.one(self.path, f"storage {ref.key!r}: no member {name}") from None
        if info.file_size != ref.nbytes:
            raise ValidationError.one(
                self.path,
                f"storage {ref.key!r}: {name} holds {info.file_size} bytes, "
                f"the checkpoint declares {ref.nbytes}",
            )
        try:
            data = self.archive.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
            raise ValidationError.one(self.path, f"storage {ref.key!r}: {exc}") from None
        self.cache[ref.key] = data
        return data


class _LegacyStorages(_Storages):
    pid_length = 6

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.loaded: dict[str, bytes] = {}

    def data(self, ref: _StorageRef) -> bytes:
        return self.loaded[ref.key]

    def read_records(self, handle: BinaryIO, keys: object, size: int) -> None:
        """The storage section: per key, an int64 element count then the raw bytes."""
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValidationError.one(self.path, "legacy checkpoint: storage keys are not strings")
        if sorted(keys) != sorted(self.refs) or len(set(keys)) != len(keys):
            raise ValidationError.one(
                self.path, "legacy checkpoint: the storage list does not match the tensors"
            )
        for key in keys:
            ref = self.refs[key]
            count = handle.read(8)
            if len(count) != 8:
                raise ValidationError.one(self.path, f"storage {key!r} is truncated")
            elements = int.from_bytes(count, "little", signed=True)
            if elements < 0 or elements * ref.type.dtype.itemsize != ref.nbytes:
                raise ValidationError.one(
                    self.path,
                    f"storage {key!r}: {elements} elements recorded, "
                    f"{ref.nbytes // ref.type.dtype.itemsize} declared",
                )
            data = handle.read(ref.nbytes)
            if len(data) != ref.nbytes:
                raise ValidationError.one(self.path, f"storage {key!r} is truncated")
            self.loaded[key] = data
        if handle.tell() != size:
            raise ValidationError.one(
                self.path, f"legacy checkpoint: {size - handle.tell()} unexpected bytes at the end"
            )


# -- reading the input ---------------------------------------------------------------------


@dataclass
class _Loaded:
    kind: str
    root: object
    storages: _Storages


@contextlib.contextmanager
def _read(path: Path, kind: str) -> Iterator[_Loaded]:
    name = str(path)
    if kind == "pickle":
        with open(path, "rb") as handle:
            storages = _Storages()
            root = _unpickle(handle, storages, name)
            if handle.read(1):
                raise ValidationError.one(name, "data after the pickle (not a single pickle)")
        yield _Loaded(kind, root, storages)
    elif kind == "torch-zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ValidationError.one(name, f"not a readable zip archive: {exc}") from None
        with archive:
            yield _read_torch_zip(archive, name)
    elif kind == "torch-legacy":
        with open(path, "rb") as handle:
            yield _read_torch_legacy(handle, name, os.fstat(handle.fileno()).st_size)
    else:
        raise ValidationError.one(name, _unsupported_kind(kind))


def _unsupported_kind(kind: str) -> str:
    if kind == "joblib":
        return str(_UNSUPPORTED["joblib.numpy_pickle.NumpyArrayWrapper"])
    if kind == "safetensors":
        return "already a safetensors file"
    return (
        f"{kind} content: convert reads PyTorch checkpoints (torch.save, zip or legacy "
        "format) and pickled dicts of NumPy arrays"
    )


def _read_torch_zip(archive: zipfile.ZipFile, path: str) -> _Loaded:
    names = archive.namelist()
    root = names[0].split("/", 1)[0] if names else ""
    if f"{root}/data.pkl" not in names:
        raise ValidationError.one(path, "zip archive without a PyTorch data.pkl")
    if f"{root}/byteorder" in names:
        order = archive.read(f"{root}/byteorder").strip()
        if order != b"little":
            raise ValidationError.one(
                path, f"byte order {order.decode('latin1')!r}: only little-endian is supported"
            )
    storages = _ZipStorages(archive, root, path)
    try:
        pickled = archive.read(f"{root}/data.pkl")
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as exc:
        raise ValidationError.one(path, f"{root}/data.pkl: {exc}") from None
    root_object = _unpickle(io.BytesIO(pickled), storages, path, f"{root}/data.pkl")
    return _Loaded("torch-zip", root_object, storages)


def _read_torch_legacy(handle: BinaryIO, path: str, size: int) -> _Loaded:
    plain = _Storages()
    if _unpickle(handle, plain, path, "magic number") != _TORCH_LEGACY_MAGIC:
        raise ValidationError.one(path, "not a legacy PyTorch checkpoint (magic number)")
    protocol = _unpickle(handle, plain, path, "protocol version")
    if protocol != _TORCH_LEGACY_PROTOCOL:
        raise ValidationError.one(path, f"legacy checkpoint protocol {protocol!r} is not supported")
    info = _unpickle(handle, plain, path, "system info")
    if not isinstance(info, dict) or info.get("little_endian", True) is not True:
        raise ValidationError.one(path, "only little-endian legacy checkpoints are supported")
    storages = _LegacyStorages(path)
    root = _unpickle(handle, storages, path)
    keys = _unpickle(handle, plain, path, "storage keys")
    storages.read_records(handle, keys, size)
    return _Loaded("torch-legacy", root, storages)


# -- from unpickled objects to tensors -------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    info: TensorInfo
    load: Callable[[], np.ndarray[Any, Any]]
    """A fresh C-contiguous little-endian array whose raw bytes are the tensor."""
    storage: str | None = field(default=None)


def _flatten(root: object, path: str) -> tuple[list[tuple[str, object]], dict[str, str]]:
    if not isinstance(root, dict):
        raise ValidationError.one(
            path, f"holds {_describe(root)}, not a dict of tensors (a state_dict)"
        )
    tensors: list[tuple[str, object]] = []
    metadata: dict[str, str] = {}
    seen: set[str] = set()
    open_dicts: set[int] = set()

    def walk(prefix: str, mapping: dict[Any, Any]) -> None:
        if len(open_dicts) >= _MAX_NESTING or id(mapping) in open_dicts:
            raise ValidationError.one(path, "dicts nested too deeply, or in a cycle", field=prefix)
        open_dicts.add(id(mapping))
        for key, value in mapping.items():
            if not isinstance(key, str) or not key:
                where = f"{prefix}[{key!r}]" if prefix else repr(key)
                raise ValidationError.one(path, "keys must be non-empty strings", field=where)
            name = f"{prefix}.{key}" if prefix else key
            problem = _name_problem(name)
            if problem:
                raise ValidationError.one(path, problem, field=name)
            if isinstance(value, dict):
                walk(name, value)
                continue
            if name in seen:
                raise ValidationError.one(path, "two entries flatten to this name", field=name)
            seen.add(name)
            if isinstance(value, _TensorRef | np.ndarray):
                tensors.append((name, value))
            elif isinstance(value, str):
                metadata[name] = value
            elif isinstance(value, bool | int | float):
                metadata[name] = json.dumps(value)
            else:
                raise ValidationError.one(
                    path,
                    f"{_describe(value)} is not a tensor; safetensors holds tensors (and "
                    "str/int/float/bool metadata) only",
                    field=name,
                )
        open_dicts.discard(id(mapping))

    walk("", root)
    problem = next((p for v in metadata.values() if (p := _name_problem(v, "value"))), None)
    if problem:
        raise ValidationError.one(path, problem, field="__metadata__")
    return tensors, metadata


def _name_problem(text: str, what: str = "name") -> str | None:
    if what == "name" and text == "__metadata__":
        return "__metadata__ is reserved by safetensors"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 (lone surrogate)"
    return None


def _describe(value: object) -> str:
    if isinstance(value, _TensorRef):
        return "a single tensor"
    if value is None:
        return "None"
    return f"a {type(value).__module__}.{type(value).__qualname__}".replace("builtins.", "")


def _entries(tensors: list[tuple[str, object]], storages: _Storages, path: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for name, value in tensors:
        if isinstance(value, np.ndarray):
            entries.append(_array_entry(name, value, path))
        else:
            assert isinstance(value, _TensorRef)
            entries.append(_tensor_entry(name, value, storages, path))
    # Largest elements first, then by name: every tensor stays aligned to its element size.
    entries.sort(key=lambda e: (-DTYPE_BITS[e.info.dtype], e.info.name))
    return entries


def _array_entry(name: str, array: np.ndarray[Any, Any], path: str) -> _Entry:
    dtype = array.dtype
    code = (
        None if dtype.fields or dtype.subdtype else _NUMPY_CODES.get((dtype.kind, dtype.itemsize))
    )
    if code is None:
        raise ValidationError.one(
            path, f"NumPy dtype {dtype} has no safetensors equivalent", field=name
        )
    little = dtype.newbyteorder("<")
    info = TensorInfo(
        name, code, tuple(int(n) for n in array.shape), int(array.size) * dtype.itemsize
    )
    return _Entry(info, lambda: array.astype(little, order="C", copy=False))


def _tensor_entry(name: str, ref: _TensorRef, storages: _Storages, path: str) -> _Entry:
    dtype = ref.dtype
    if dtype.safetensors is None or dtype.carrier is None:
        raise ValidationError.one(
            path, f"torch.{dtype.torch_name} has no safetensors equivalent", field=name
        )
    itemsize = dtype.itemsize
    nbytes = ref.storage.nbytes
    if nbytes % itemsize:
        raise ValidationError.one(
            path, f"storage of {nbytes} bytes is not whole {dtype.torch_name} elements", field=name
        )
    numel = nbytes // itemsize
    count = math.prod(ref.shape)
    if count:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
        if last >= numel:
            raise ValidationError.one(
                path,
                f"view (offset {ref.offset}, size {list(ref.shape)}, stride "
                f"{list(ref.stride)}) reaches element {last} of a storage of {numel}",
                field=name,
            )
    elif ref.offset > numel:
        raise ValidationError.one(
            path, f"offset {ref.offset} past a storage of {numel}", field=name
        )
    carrier = np.dtype(dtype.carrier)

    def load() -> np.ndarray[Any, Any]:
        data = storages.data(ref.storage)
        if len(data) != nbytes:  # pragma: no cover - checked where the bytes are read
            raise AssertionError("storage size changed")
        if not count:
            return np.zeros(ref.shape, carrier)
        base = np.frombuffer(data, dtype=carrier, count=numel)
        view = np.lib.stride_tricks.as_strided(
            base[ref.offset :],
            shape=ref.shape,
            strides=[s * itemsize for s in ref.stride],
            writeable=False,
        )
        return np.array(view, order="C", copy=True)

    info = TensorInfo(name, dtype.safetensors, ref.shape, count * itemsize)
    return _Entry(info, load, ref.storage.key)


def _shared(entries: list[_Entry]) -> tuple[tuple[str, ...], ...]:
    groups: dict[str, list[str]] = {}
    for entry in entries:
        if entry.storage is not None:
            groups.setdefault(entry.storage, []).append(entry.info.name)
    return tuple(tuple(sorted(names)) for names in groups.values() if len(names) > 1)


# -- writing and verifying -----------------------------------------------------------------


def _raw(array: np.ndarray[Any, Any]) -> memoryview:
    return array.reshape(-1).view(np.uint8).data


def _header(entries: list[_Entry], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for entry in entries:
        header[entry.info.name] = {
            "dtype": entry.info.dtype,
            "shape": list(entry.info.shape),
            "data_offsets": [offset, offset + entry.info.nbytes],
        }
        offset += entry.info.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _write(handle: BinaryIO, header: bytes, entries: list[_Entry]) -> str:
    digest = hashlib.sha256()

    def put(chunk: bytes | memoryview) -> None:
        handle.write(chunk)
        digest.update(chunk)

    put(struct.pack("<Q", len(header)))
    put(header)
    for entry in entries:
        raw = _raw(entry.load())
        if len(raw) != entry.info.nbytes:  # pragma: no cover - a bug, not bad input
            raise AssertionError(
                f"{entry.info.name}: {len(raw)} bytes, expected {entry.info.nbytes}"
            )
        for start in range(0, len(raw), _COPY_CHUNK):
            put(raw[start : start + _COPY_CHUNK])
    handle.flush()
    os.fsync(handle.fileno())
    return digest.hexdigest()


def _verify(tmp: Path, target: Path, entries: list[_Entry], metadata: Mapping[str, str]) -> None:
    """Read the written file back: a valid header, and every tensor as the source says."""

    def bug(message: str) -> RegistryError:
        return RegistryError(
            f"{target}: the converted file failed verification ({message}); nothing was "
            "written. This is a bug: please report it."
        )

    try:
        info = validate_safetensors(tmp)
    except ValidationError as exc:
        raise bug(str(exc)) from None
    if info.tensor_count != len(entries) or dict(info.metadata) != dict(metadata):
        raise bug("tensor count or metadata differ")
    with open(tmp, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        for entry in entries:
            written = header.get(entry.info.name)
            if (
                not isinstance(written, dict)
                or written.get("dtype") != entry.info.dtype
                or written.get("shape") != list(entry.info.shape)
            ):
                raise bug(f"{entry.info.name}: header entry {written!r}")
            begin, end = written["data_offsets"]
            expected = _raw(entry.load())
            if end - begin != len(expected):
                raise bug(f"{entry.info.name}: {end - begin} bytes, expected {len(expected)}")
            handle.seek(8 + length + begin)
            for start in range(0, len(expected), _COPY_CHUNK):
                chunk = expected[start : start + _COPY_CHUNK]
                if handle.read(len(chunk)) != chunk:
                    raise bug(f"{entry.info.name}: bytes differ from the source")


def _publish(tmp: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # fails if target exists, even if it appeared just now
        except FileExistsError:
            raise _exists(target) from None
        except OSError:  # no hard links on this file system
            if os.path.lexists(target):
                raise _exists(target) from None
            os.replace(tmp, target)
        else:
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the rename durable where the OS allows
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exists(target: Path) -> UsageError:
    return UsageError(
        f"{target}: already exists; pass --force to replace it, or choose another --out"
    )


# -- the entry point -------------------------------------------------------------------------


def default_output(path: str | os.PathLike[str]) -> Path:
    """PATH with its suffix replaced by ``.safetensors`` (``model.pt`` -> ``model.safetensors``)."""
    return Path(path).with_suffix(_SUFFIX)


def _check_paths(source: Path, target: Path, force: bool) -> None:
    """Usage errors, before anything is read."""
    try:
        mode = os.stat(source).st_mode
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{source}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{source}: not a regular file")
    if not target.parent.is_dir():
        raise UsageError(f"--out {target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise UsageError(f"--out {target}: is a folder")
    if target.exists() and os.path.samefile(source, target):
        raise UsageError(f"--out {target}: is the input file; choose another --out")
    if os.path.lexists(target) and not force:
        raise _exists(target)


def convert(
    path: str | os.PathLike[str],
    *,
    to: str = "safetensors",
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    max_output_bytes: int | None = None,
) -> Conversion:
    """Convert a checkpoint or pickled dict of arrays to safetensors, without running it.

    Raises `UsageError` (exit 2) for bad arguments or an existing ``out`` without
    ``force``, `UnsafeInputError` when the scan refuses the input, `ValidationError`
    (exit 1) when it is malformed or holds something safetensors cannot. Nothing is
    written unless the whole conversion succeeded and verified.
    """
    if to != "safetensors":
        raise UsageError(f"--to {to}: unknown format; use safetensors")
    source = Path(path)
    target = Path(out) if out is not None else default_output(source)
    _check_paths(source, target, force)
    name = str(source)

    report = scan.scan_file(source)
    if not report.safe:
        raise UnsafeInputError(name, report.findings, report.kind)

    with _read(source, report.kind) as loaded:
        tensors, metadata = _flatten(loaded.root, name)
        if not tensors:
            raise ValidationError.one(name, "no tensors to convert")
        entries = _entries(tensors, loaded.storages, name)
        total = sum(e.info.nbytes for e in entries)
        limit = max_output_bytes
        if limit is None:
            limit = max(EXPANSION_LIMIT * os.path.getsize(source), EXPANSION_FLOOR)
        if total > limit:
            raise ValidationError.one(
                name,
                f"its tensors would take {total} bytes, over the limit of {limit} "
                f"({EXPANSION_LIMIT} times the file, at least {EXPANSION_FLOOR}): "
                "malformed or hostile",
            )
        header = _header(entries, metadata)
        if len(header) > MAX_HEADER_BYTES:
            raise ValidationError.one(name, "too many tensors for one safetensors header")

        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                sha256 = _write(handle, header, entries)
            _verify(tmp, target, entries, metadata)
            size = tmp.stat().st_size
            _publish(tmp, target, force)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    return Conversion(
        source=name,
        output=str(target),
        source_format=loaded.kind,
        tensors=tuple(e.info for e in entries),
        metadata=MappingProxyType(metadata),
        size=size,
        sha256=sha256,
        shared_storage=_shared(entries),
    )
