"""Writing the safetensors file: header, tensor bytes, read-back, atomic move into place.

The file is written here, not by the safetensors package (see `registry.artifacts.convert`);
the package reads it back in tests/test_convert.py, for every dtype written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np

from registry.artifacts.convert.entries import _Entry
from registry.artifacts.safetensors import validate_safetensors
from registry.errors import RegistryError, UsageError, ValidationError

_COPY_CHUNK: Final = 16 * 1024**2


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


