"""Git's commit-graph with changed-path Bloom filters, kept fresh for path-limited history.

`git log -- models/NAME/` on tens of thousands of commits must otherwise diff every
commit's tree to learn whether it touched that path; with Bloom filters git skips the
commits that certainly did not. The audit log writes the graph when it is missing (or has
no filters) and adds a layer when many commits arrived since (`--split`: only the new
commits are read). `registry init` sets fetch.writeCommitGraph, and `git gc` writes it
too; both keep the filters once a layer has them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from registry.repo import git

# New commits tolerated before a layer is added: a small tail costs git little to diff.
STALE_AFTER = 256
MARKER = "commit-graph.tip"


def has_changed_paths(git_dir: Path) -> bool:
    """Whether every commit-graph file (single or split chain) carries Bloom filter chunks."""
    info = git_dir / "objects" / "info"
    chain = info / "commit-graphs" / "commit-graph-chain"
    if chain.is_file():
        try:
            layers = [info / "commit-graphs" / f"graph-{h}.graph" for h in chain.read_text().split()]
        except OSError:
            return False
        return bool(layers) and all(_has_bloom(layer) for layer in layers)
    return _has_bloom(info / "commit-graph")


def _has_bloom(path: Path) -> bool:
    """The file's chunk table (format: gitformat-commit-graph) lists BIDX and BDAT."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(8)
            if len(header) < 8 or header[:4] != b"CGPH":
                return False
            table = handle.read((header[6] + 1) * 12)
    except OSError:
        return False
    ids = {table[i:i + 4] for i in range(0, len(table), 12)}
    return {b"BIDX", b"BDAT"} <= ids


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return git.attempt(args, root)


def ensure(root: Path, ref: str = "HEAD") -> str:
    """Write or refresh the graph when needed: "fresh", "written", "refreshed" or "failed".

    Never an error: a read-only or busy repository (another writer holds the lock) is only slower.
    """
    found = _run(root, "rev-parse", "--absolute-git-dir", f"{ref}^{{commit}}")
    if found.returncode != 0:
        return "failed"
    git_dir_text, tip = found.stdout.decode().split()
    git_dir = Path(git_dir_text)
    marker = git_dir / "registry" / MARKER
    try:
        recorded = marker.read_text().strip()
    except OSError:
        recorded = ""
    if recorded == tip:
        return "fresh"
    complete = has_changed_paths(git_dir)
    if complete and recorded:
        behind = _run(root, "rev-list", "--count", f"{recorded}..{tip}")
        if behind.returncode == 0 and int(behind.stdout or b"0") <= STALE_AFTER:
            return "fresh"
    # A graph with filters gets a layer for only the commits it lacks (--split); a graph
    # without them (or none) is replaced by one that has them for every commit.
    split = "--split" if complete else "--split=replace"
    wrote = _run(root, "commit-graph", "write", "--reachable", "--changed-paths", split)
    if wrote.returncode != 0:
        return "failed"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(tip + "\n")
    except OSError:
        pass
    return "refreshed" if complete else "written"
