"""The restricted unpickler and the readers of pickles, PyTorch zip and legacy checkpoints.

`find_class` answers an exact allow-list with the stand-ins of `tensors`.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Final

from registry.artifacts.convert.storages import _LegacyStorages, _Storages, _ZipStorages
from registry.artifacts.convert.tensors import (
    _DTYPES,
    _NDARRAY,
    _REBUILDERS,
    _STORAGE_DTYPES,
    _TENSOR_TYPES,
    _codecs_encode,
    _numpy_dtype,
    _numpy_frombuffer,
    _numpy_reconstruct,
    _rebuild_from_type_v2,
    _Refused,
    _StorageType,
    _TorchDType,
)
from registry.errors import ValidationError

_TORCH_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL: Final = 1001


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


