"""What the symbolic pickle machine keeps of a pickle's values, and the sizes they ask for.

Stand-ins for dicts, globals and calls; sizes are what allowed constructors allocate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from registry.artifacts.scan.allowlist import (
    _CODECS_ENCODE,
    _TORCH_STORAGE_ELEMENT_BYTES,
    STORAGE_ELEMENT_BYTES,
)

_MAX_KEPT_STRING: Final = 64 * 1024  # longer strings cannot name a global; kept as opaque


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

