"""The entry point: convert one checkpoint to safetensors, verified, or refuse it."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Final

from registry.artifacts import scan
from registry.artifacts.convert.entries import _entries, _flatten, _shared
from registry.artifacts.convert.results import Conversion, UnsafeInputError
from registry.artifacts.convert.unpickler import _read
from registry.artifacts.convert.writer import _exists, _header, _publish, _verify, _write
from registry.artifacts.safetensors import MAX_HEADER_BYTES
from registry.errors import UsageError, ValidationError

# Tensors may take at most this many times the input's size (but always this floor).
EXPANSION_LIMIT: Final = 16
EXPANSION_FLOOR: Final = 256 * 1024**2

_SUFFIX: Final = ".safetensors"


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
