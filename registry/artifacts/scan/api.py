"""The scan's entry points: scan files, folders or bytes, and identify a file."""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Iterable

from registry.artifacts.scan.allowlist import SAFE_GLOBALS, allow_list
from registry.artifacts.scan.results import DEFAULT_LIMITS, ScanLimits, ScanReport
from registry.artifacts.scan.walk import _Scan
from registry.artifacts.sniff import open_regular


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
    with open_regular(name) as (handle, size):
        if size == 0:
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
