"""What the restricted unpickler hands out instead of torch's objects.

Dtypes, inert stand-ins for storages, tensors and types, and rebuild functions that
record where a tensor's elements are instead of building it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np


class _Refused(Exception):
    """Raised inside the unpickler; becomes a `ValidationError` naming the file."""



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

