"""Every git call goes through here: one small runner plus a few streaming readers."""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from registry.errors import GitError

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
TREE_MODE = "40000"  # a folder, as raw tree objects spell its mode


def run(
    args: Sequence[str],
    cwd: Path | str,
    *,
    input: bytes | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> str:
    """Run git, return stdout as text; a failure becomes a GitError with git's own words."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=input, capture_output=True, check=False, env=env
    )
    if check and proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise GitError(f"git {' '.join(args[:2])} failed: {message}")
    return proc.stdout.decode(errors="replace")


def ok(args: Sequence[str], cwd: Path | str) -> bool:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False).returncode == 0


def toplevel(path: Path) -> Path | None:
    proc = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, check=False
    )
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.decode().strip())


def rev_parse(ref: str, cwd: Path) -> str | None:
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=cwd, capture_output=True, check=False,
    )
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def current_branch(cwd: Path) -> str | None:
    proc = subprocess.run(
        ["git", "symbolic-ref", "--quiet", "--short", "HEAD"], cwd=cwd, capture_output=True, check=False
    )
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def dirty_paths(cwd: Path) -> list[str]:
    """Tracked files with uncommitted changes, and staged new files."""
    out = run(["status", "--porcelain=v1", "-z", "--untracked-files=no"], cwd)
    return [entry[3:] for entry in out.split("\0") if entry]


def all_refs(cwd: Path) -> list[str]:
    out = run(["for-each-ref", "--format=%(refname)", "refs/heads", "refs/remotes"], cwd)
    return [line for line in out.splitlines() if line and not line.endswith("/HEAD")]


def blob_id(data: bytes) -> str:
    """The id git gives these bytes as a blob (`git hash-object`), without asking git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def changed_paths(a: str, b: str, cwd: Path, pathspecs: Sequence[str] = ()) -> list[str]:
    """Paths whose content differs between commits a and b (added, deleted or changed; no renames).

    Git compares trees by id, so this costs what differs, not the size of the trees.
    """
    out = run(["diff", "--name-only", "--no-renames", "-z", a, b, "--", *pathspecs], cwd)
    return [path for path in out.split("\0") if path]


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    kind: str
    sha: str
    path: str


def ls_tree(ref: str, cwd: Path, paths: Iterable[str] = (), recursive: bool = True) -> list[TreeEntry]:
    args = ["ls-tree", "-z", "--full-tree"]
    if recursive:
        args.append("-r")
    out = run([*args, ref, "--", *paths], cwd)
    entries = []
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, sha = meta.split()
        entries.append(TreeEntry(mode, kind, sha, path))
    return entries


class CatFile:
    """A long-lived ``git cat-file --batch``: many objects, one process."""

    def __init__(self, cwd: Path) -> None:
        self._proc = subprocess.Popen(
            ["git", "cat-file", "--batch"],
            cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )

    def read(self, spec: str) -> bytes | None:
        """Object content for a sha or ``rev:path``; None where it does not exist."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(spec.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline()
        if not header or header.endswith(b"missing\n") or header.endswith(b"ambiguous\n"):
            return None
        size = int(header.split()[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)
        return data

    def read_many(self, specs: Sequence[str]) -> list[bytes | None]:
        """Pipelined reads: all requests written by a thread while answers stream back."""
        return [data for _, data in self.read_many_with_ids(specs)]

    def read_many_with_ids(self, specs: Sequence[str]) -> list[tuple[str | None, bytes | None]]:
        """Like read_many, with each object's id (the cache key of its content)."""
        import threading

        assert self._proc.stdin is not None and self._proc.stdout is not None
        stdin, stdout = self._proc.stdin, self._proc.stdout

        def feed() -> None:
            stdin.write("".join(f"{s}\n" for s in specs).encode())
            stdin.flush()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        results: list[tuple[str | None, bytes | None]] = []
        for _ in specs:
            header = stdout.readline()
            if header.endswith(b"missing\n") or header.endswith(b"ambiguous\n"):
                results.append((None, None))
                continue
            sha, _kind, size = header.split()
            results.append((sha.decode(), stdout.read(int(size))))
            stdout.read(1)
        writer.join()
        return results

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> CatFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_TREE_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)


def parse_tree(data: bytes) -> dict[str, tuple[str, str]]:
    """A raw tree object as {name: (mode, object id)}: reading trees by id skips path walks.

    Each entry is "MODE NAME\\0" and a 20-byte id; one regex pass in C splits them all.
    """
    return {
        name.decode(errors="surrogateescape"): (mode.decode(), sha.hex())
        for mode, name, sha in _TREE_ENTRY.findall(data)
    }
