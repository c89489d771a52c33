"""From unpickled objects to the tensors to write, and their metadata.

Names are flattened, scalars become metadata, each tensor a loader of its bytes
checked against its storage.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from registry.artifacts.convert.results import TensorInfo
from registry.artifacts.convert.storages import _Storages
from registry.artifacts.convert.tensors import _NUMPY_CODES, _TensorRef
from registry.artifacts.safetensors import DTYPE_BITS
from registry.errors import ValidationError

_MAX_NESTING: Final = 64


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


