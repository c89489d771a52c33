"""Where a checkpoint's tensor storages are: zip members, or a legacy file's records.

A PyTorch zip keeps them as ``data/<key>`` members, a legacy checkpoint as records
after its pickles.
"""

from __future__ import annotations

import zipfile
from typing import BinaryIO

from registry.artifacts.convert.tensors import _int, _Refused, _StorageRef, _StorageType
from registry.errors import ValidationError


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

