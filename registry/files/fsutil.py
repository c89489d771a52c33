"""The one atomic write: temp file in the same folder, write, fsync it, rename, fsync the folder."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in folder path durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_temp(path: Path, data: bytes, mode: int, prefix: str) -> str:
    """A temp file beside path (one file system, so a rename or link stays atomic) holding data,
    given `mode` before any byte is written (mkstemp creates 0600) and fsynced; its name."""
    import tempfile  # here, not at start-up: every command imports this module, few write

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, data: str | bytes, mode: int | None = None, temp_prefix: str | None = None) -> None:
    """Replace path with data, never half-written and durable once this returns.

    A temp file beside path is written and fsynced, renamed over path, and the folder fsynced
    so the rename survives a crash. The file gets `mode`, by default the mode any new file
    would get (0666 less the umask). `temp_prefix` names the temp file where a folder's owner
    recognises its own leftovers by name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = _durable_temp(path, payload, (0o666 & ~_umask()) if mode is None else mode,
                        temp_prefix or f".{path.name}.")
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_new(path: Path, data: bytes, executable: bool = False) -> None:
    """Create path (never overwrite an existing file) with data, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755 if executable else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def publish_new(path: Path, data: bytes, mode: int) -> None:
    """Create path whole with data and mode, never overwriting: FileExistsError if it exists.

    The temp file has `mode` before any byte is written, so a private key is never readable
    by others, not even for a moment; link() publishes it whole."""
    tmp = _durable_temp(path, data, mode, f".{path.name}.")
    try:
        os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
