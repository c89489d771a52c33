"""A tree at a revision, a commit's or the work tree's, read through one streaming git reader.

`Reader` is the one `git cat-file --batch` process a command reads every object through
(by id or as ``rev:path``), plus tree listings; it counts what it returns, so a test can
show that a diff-aware command reads only what the diff touches. `Tree` is the files of
one commit, or of the work tree, behind one interface: `read(path)` and `ls(folder)`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from registry.errors import GitError
from registry.repo import git


class Reader:
    """Every object and tree listing of one command, through one long-lived cat-file process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cat: git.CatFile | None = None
        self.objects = 0  # objects asked for (by id or rev:path), found or not
        self.entries = 0  # tree entries listed

    @property
    def _batch(self) -> git.CatFile:
        if self._cat is None:
            self._cat = git.CatFile(self.root)
        return self._cat

    def read(self, spec: str) -> bytes | None:
        """An object's content by id or ``rev:path``; None where there is none."""
        self.objects += 1
        return self._batch.read(spec)

    def read_many(self, specs: Sequence[str]) -> list[bytes | None]:
        self.objects += len(specs)
        return self._batch.read_many(specs)

    def ls(self, rev: str, folder: str, *, recursive: bool = True) -> list[git.TreeEntry]:
        """The entries under folder at rev (every file below it when recursive); [] if rev has none."""
        try:
            entries = git.ls_tree(rev, self.root, [folder.rstrip("/") + "/"], recursive=recursive)
        except GitError:
            return []
        self.entries += len(entries)
        return entries

    def at(self, rev: str | None) -> Tree:
        """The tree of a commit, or of the work tree when rev is None."""
        return Tree(self, rev)

    def close(self) -> None:
        if self._cat is not None:
            self._cat.close()
            self._cat = None


class Tree:
    """The files of one commit (rev) or of the work tree (rev None): read a path, list a folder."""

    def __init__(self, reader: Reader, rev: str | None) -> None:
        self.reader = reader
        self.rev = rev

    def read(self, path: str) -> bytes | None:
        """A file's bytes; None when it is missing, or (in the work tree) not a regular file."""
        if self.rev is not None:
            return self.reader.read(f"{self.rev}:{path}")
        self.reader.objects += 1
        try:
            fd = os.open(self.reader.root / path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            return handle.read()

    def ls(self, folder: str, *, recursive: bool = True) -> list[git.TreeEntry]:
        """Entries under folder, with git's modes and ids (the work tree's: its tracked files, staged)."""
        if self.rev is not None:
            return self.reader.ls(self.rev, folder, recursive=recursive)
        prefix = folder.rstrip("/") + "/"
        entries: list[git.TreeEntry] = []
        folders: set[str] = set()
        for path, (mode, sha) in git.index_entries(self.reader.root, prefix).items():
            below = path[len(prefix):]
            if not recursive and "/" in below:  # `ls-tree` without -r lists the folder instead
                name = prefix + below.split("/", 1)[0]
                if name not in folders:
                    folders.add(name)
                    entries.append(git.TreeEntry("040000", "tree", "", name))
                continue
            entries.append(git.TreeEntry(mode, "commit" if mode == "160000" else "blob", sha, path))
        self.reader.entries += len(entries)
        return entries
