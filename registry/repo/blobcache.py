"""Results of parsing git blobs, kept under the git directory and keyed on blob ids.

A blob id names exact content, so a cached result stays true for as long as the
key (package version + schema fingerprint) is the same. Readers of thousands of
files (validate, manifest) parse each distinct file once.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from registry.repo import git
from registry.version import __version__


class BlobCache:
    """With `limit`, only the newest `limit` entries are kept (a cache that must not grow)."""

    def __init__(self, root: Path, name: str, key: str, *, limit: int | None = None) -> None:
        self.path = git.git_dir(root) / "registry" / f"{name}.json"
        self.key = f"{__version__}:{key}"
        self.entries: dict[str, Any] = {}
        self.limit = limit
        self.dirty = False
        try:
            stored = json.loads(self.path.read_text())
            if stored.get("key") == self.key:
                self.entries = stored["entries"]
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            pass  # no cache, or one from another version: start afresh

    def get(self, blob: str | None) -> Any:
        return self.entries.get(blob) if blob else None

    def put(self, blob: str | None, value: Any) -> None:
        if blob:
            self.entries.pop(blob, None)  # re-inserted: the newest entry
            self.entries[blob] = value
            self.dirty = True
            if self.limit is not None and len(self.entries) > self.limit:
                del self.entries[next(iter(self.entries))]

    def save(self) -> None:
        if not self.dirty:
            return
        from registry.files import yamlio

        # A read-only checkout still answers, just without the cache.
        with contextlib.suppress(OSError):
            yamlio.atomic_write(self.path, json.dumps({"key": self.key, "entries": self.entries}))
        self.dirty = False
