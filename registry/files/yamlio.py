"""Safe YAML in and out.

Loading: the libyaml safe loader where available, duplicate keys refused, aliases
bounded (a "billion laughs" document is refused before anything expands it), files
over a size limit refused before parsing, integers longer than Python can print refused, timestamps kept as strings (the schemas
check their format), and every error located by file, line and field.

Writing: a ``# yaml-language-server: $schema=…`` header, stable key order, atomic
replace through files.fsutil (temp file in the same directory, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry.errors import ValidationError
from registry.files import fsutil
from registry.files.yamllimits import MAX_EXPANDED_NODES as MAX_EXPANDED_NODES
from registry.files.yamllimits import MAX_INT_DIGITS as MAX_INT_DIGITS
from registry.files.yamllimits import MAX_YAML_BYTES as MAX_YAML_BYTES
from registry.files.yamllimits import too_big as too_big

# Where `registry init` copies the JSON Schemas inside a registry, for editors.
REPO_SCHEMA_DIR = ".registry/schemas"


def loads(text: str | bytes, path: str = "<string>") -> Any:
    """Parse one YAML document safely. Errors raise ValidationError naming file and line."""
    from registry.files import _yaml

    return _yaml.loads(text, path)


def line_of(text: str | bytes, field_path: Sequence[str | int]) -> int | None:
    """Line (1-based) of the node at field_path, or of its deepest existing parent."""
    from registry.files import _yaml

    return _yaml.line_of(text, field_path)


def dumps(data: Any) -> str:
    from registry.files import _yaml

    return _yaml.dumps(data)


def read_bytes(path: Path, display: str | None = None) -> bytes:
    """The bytes of a YAML file, after the checks that come before parsing (exists, size)."""
    shown = display or str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ValidationError.one(shown, "file not found") from None
    except OSError as exc:
        raise ValidationError.one(shown, f"cannot read: {exc.strerror}") from None
    if size > MAX_YAML_BYTES:
        raise too_big(shown, size)
    if not path.is_file():
        raise ValidationError.one(shown, "not a regular file")
    return path.read_bytes()


def read_present(path: str, display: str) -> bytes | None:
    """A YAML file's bytes, or None when it does not exist; refused (ValidationError) when over
    the size limit. Other errors raise OSError.

    Plain os.open/os.read: readers such as `ls` open thousands of small files, and a buffered
    file object costs three more system calls per file, while read(MAX_YAML_BYTES + 1) maps
    and unmaps a megabyte each time.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_YAML_BYTES:
                raise too_big(display, os.fstat(fd).st_size)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_file(path: Path, display: str | None = None) -> Any:
    return loads(read_bytes(path, display), display or str(path))


def schema_header(schema_ref: str) -> str:
    return f"# yaml-language-server: $schema={schema_ref}\n"


def atomic_write(path: Path, text: str | bytes) -> None:
    """Replace path with text, never half-written: the one atomic write (files.fsutil)."""
    fsutil.atomic_write(path, text)
