"""Writing the site: the whole output folder swapped in at once, or left as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from registry.errors import UsageError


def _is_catalog(folder: Path) -> bool:
    index = folder / "index.html"
    try:
        head = index.read_text(errors="replace")[:2000]
    except OSError:
        return False
    return 'name="generator" content="registry site ' in head


def write(files: Mapping[str, str], out: Path) -> None:
    """Replace out with exactly these files; refuse a folder that is not empty or an earlier catalog."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_catalog(out):
        raise UsageError(f"--out {out}: is not empty and holds no catalog made by `registry site`; "
                         "give a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for rel, text in sorted(files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            path.chmod(0o644)
        staging.chmod(0o755)
        for folder in {p.parent for p in staging.rglob("*")}:
            folder.chmod(0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / "site")
        os.rename(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

