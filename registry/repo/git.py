"""Every git call goes through here: one small runner plus a few streaming readers."""

from __future__ import annotations

import contextlib
import hashlib
import re
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

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


def attempt(args: Sequence[str], cwd: Path | str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run git and hand back the whole outcome, for callers that read a failure as an answer."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, env=env)


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
        _check_spec(spec)
        try:
            self._proc.stdin.write(spec.encode() + b"\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # git stopped: the answer below is missing, and that is reported as a failure
        return _answer(self._proc.stdout, spec)[1]

    def read_many(self, specs: Sequence[str]) -> list[bytes | None]:
        """Pipelined reads: all requests written by a thread while answers stream back."""
        return [data for _, data in self.read_many_with_ids(specs)]

    def read_many_with_ids(self, specs: Sequence[str]) -> list[tuple[str | None, bytes | None]]:
        """Like read_many, with each object's id (the cache key of its content)."""
        import threading

        assert self._proc.stdin is not None and self._proc.stdout is not None
        stdin, stdout = self._proc.stdin, self._proc.stdout
        for spec in specs:
            _check_spec(spec)

        def feed() -> None:
            with contextlib.suppress(OSError):  # git stopped: the reader below finds no answer, says so
                stdin.write("".join(f"{s}\n" for s in specs).encode())
                stdin.flush()

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        results: list[tuple[str | None, bytes | None]] = []
        try:
            results = [_answer(stdout, spec) for spec in specs]
        except GitError:
            writer.join(timeout=1)  # a daemon thread: never wait on a git that stopped reading
            raise
        writer.join()
        return results

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):  # git stopped first; its reader said so
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


def _check_spec(spec: str) -> None:
    # One request per line: a name with a line break (a pull request can commit one) would be
    # two requests, and every answer after it would belong to another name.
    if "\n" in spec or "\r" in spec:
        raise GitError(f"{spec!r}: a name with a line break cannot be read through git; rename it")


def _answer(stdout: IO[bytes], spec: str) -> tuple[str | None, bytes | None]:
    """One `cat-file --batch` answer: (object id, content), (None, None) when there is no such
    object; a GitError when git stopped or cut the answer short (a failure is not "missing")."""
    header = stdout.readline()
    if header.endswith(b"missing\n") or header.endswith(b"ambiguous\n"):
        return None, None
    fields = header.split()
    if len(fields) != 3 or not fields[2].isdigit():
        raise GitError(f"git cat-file failed reading {spec!r}: {header.decode(errors='replace').strip() or 'no answer'}")
    size = int(fields[2])
    data = stdout.read(size)
    if len(data) != size or stdout.read(1) != b"\n":
        raise GitError(f"git cat-file failed reading {spec!r}: the answer was cut short")
    return fields[0].decode(), data


_TREE_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)


def parse_tree(data: bytes) -> dict[str, tuple[str, str]]:
    """A raw tree object as {name: (mode, object id)}: reading trees by id skips path walks.

    Each entry is "MODE NAME\\0" and a 20-byte id; one regex pass in C splits them all.
    """
    return {
        name.decode(errors="surrogateescape"): (mode.decode(), sha.hex())
        for mode, name, sha in _TREE_ENTRY.findall(data)
    }


# --- changes: what register, promote, sign, gc, init and approvals do to a repository ------


def commit_paths(root: Path, paths: Sequence[str], message: str, env: dict[str, str] | None = None) -> str:
    """Stage paths (added, changed or removed) and commit them; the new commit's id."""
    run(["add", "--", *paths], root)
    run(["commit", "--quiet", "-m", message], root, env=env)
    return run(["rev-parse", "HEAD"], root).strip()


def switch_new_branch(root: Path, branch: str) -> None:
    run(["switch", "--quiet", "-c", branch], root)


def abandon_branch(root: Path, branch: str, original: str | None) -> None:
    """Back to `original` (detached where there was no branch) and delete `branch`: best effort,
    for undoing a change that failed half-way."""
    run(["switch", "--quiet", original or "--detach"], root, check=False)
    run(["branch", "--quiet", "-D", branch], root, check=False)


def reset_index(root: Path) -> None:
    run(["reset", "--quiet"], root, check=False)


def restore_paths(root: Path, paths: Sequence[str]) -> None:
    """Put tracked files back as the index has them (best effort: an untracked path stays)."""
    run(["checkout", "--quiet", "--", *paths], root, check=False)


def push_branch(root: Path, branch: str, remote: str = "origin") -> None:
    run(["push", "--quiet", "-u", remote, branch], root)


def is_tracked(root: Path, rel: str) -> bool:
    """Whether any file at or under rel is in the index."""
    return bool(run(["ls-files", "--", rel], root).strip())


def has_object(root: Path, spec: str) -> bool:
    """Whether `REV:PATH` (or any object name) exists."""
    return ok(["cat-file", "-e", spec], root)


def head_commit(root: Path) -> str:
    return run(["rev-parse", "HEAD"], root).strip()


def _repo(root: Path) -> Any:
    import git as gitpython  # GitPython, for refs, config and remotes; imported where they are read

    return gitpython.Repo(root)


def remote_names(root: Path) -> list[str]:
    return [remote.name for remote in _repo(root).remotes]


def config_value(root: Path, section: str, option: str) -> str:
    """A value from git's configuration (repository, global, system), or "" when unset."""
    return str(_repo(root).config_reader().get_value(section, option, default=""))


def branch_refs(root: Path, prefix: str) -> list[str]:
    """Local branches under refs/heads/PREFIX and every remote-tracking ref, by full name."""
    return [ref.path for ref in _repo(root).refs
            if ref.path.startswith((f"refs/heads/{prefix}", "refs/remotes/"))]


def remote_heads(root: Path, pattern: str, remote: str = "origin", timeout_s: float = 30) -> list[str] | None:
    """Branch refs on the remote that match pattern (`git ls-remote --heads`); None when the
    remote cannot be reached in time (offline: the caller says what it checked instead)."""
    try:
        out = subprocess.run(["git", "ls-remote", "--heads", remote, pattern], cwd=root, capture_output=True,
                             text=True, timeout=timeout_s, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return [line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line]


def first_parent_commits(root: Path, ref: str, *, check: bool = True) -> set[str]:
    """Every commit on ref's first-parent line; with check=False, empty when ref cannot be read."""
    return set(run(["rev-list", "--first-parent", ref], root, check=check).split())


def first_parent_messages(root: Path, span: str) -> list[tuple[str, str]]:
    """(commit, message) along span's first-parent line, newest first; [] for a span git cannot read."""
    out = run(["log", "--first-parent", "--format=%H%x00%B%x1e", span], root, check=False)
    found = []
    for record in out.split("\x1e"):
        sha, _, message = record.strip().partition("\0")
        if sha:
            found.append((sha, message))
    return found


# --- notes (the approvals record) --------------------------------------------------------


def notes_add(root: Path, ref: str, commit: str, text: str, identity: Sequence[str] = ()) -> None:
    """Attach text to commit under the notes ref, replacing an earlier note there."""
    run([*identity, "notes", f"--ref={ref}", "add", "-f", "-F", "-", commit], root, input=text.encode())


def notes_merge_ours(root: Path, ref: str, other: str, identity: Sequence[str] = ()) -> None:
    run([*identity, "notes", f"--ref={ref}", "merge", "--quiet", "-s", "ours", other], root)


def fetch_ref(root: Path, remote: str, src: str, dst: str) -> bool:
    """Fetch remote's src into dst (forced); False when the remote has no such ref or cannot be read."""
    return ok(["fetch", "--quiet", remote, f"+{src}:{dst}"], root)


def update_ref(root: Path, ref: str, target: str) -> None:
    run(["update-ref", ref, target], root)


def push_ref(root: Path, remote: str, ref: str) -> bool:
    """Push ref to the same name on remote; False when the remote refuses (e.g. not a fast-forward)."""
    return ok(["push", "--quiet", remote, f"{ref}:{ref}"], root)


def init_repository(root: Path, branch: str = "main") -> None:
    run(["init", "--quiet", f"--initial-branch={branch}"], root)


def set_config(root: Path, key: str, value: str) -> None:
    """Set a value in the repository's own configuration (.git/config)."""
    run(["config", key, value], root)


# --- history and refs, for the readers above ---------------------------------------------


def commits_between(root: Path, base: str, ref: str) -> set[str]:
    """The commits on ref's first-parent line after base."""
    return set(run(["rev-list", "--first-parent", f"{base}..{ref}"], root).split())


def last_commit_before(root: Path, ref: str, epoch_seconds: int) -> str:
    """The newest first-parent commit of ref committed at or before the time; "" when none."""
    return run(["rev-list", "--first-parent", "-1", f"--before={epoch_seconds} +0000", ref, "--"], root).strip()


def commit_date(root: Path, commit: str) -> str:
    """The commit's committer date, ISO 8601."""
    return run(["show", "-s", "--format=%cI", commit], root).strip()


def subjects_and_trailer(root: Path, span: str, trailer: str, path: str) -> list[tuple[str, str]]:
    """(subject, the trailer's unfolded value or "") of each commit in span that touches path."""
    out = run(["log", f"--format=%s%x00%(trailers:key={trailer},valueonly,unfold)%x00", span, "--", path],
              root, check=False)
    fields = out.split("\0")
    return list(zip(fields[0::2], fields[1::2], strict=False))


def index_entries(root: Path, *pathspecs: str) -> dict[str, tuple[str, str]]:
    """Every path in the index (or under pathspecs), in git's order: (mode, blob id)."""
    entries = {}
    for record in run(["ls-files", "-s", "-z", "--", *pathspecs], root).split("\0"):
        if record:
            meta, _, path = record.partition("\t")
            mode, blob = meta.split()[:2]
            entries[path] = (mode, blob)
    return entries


def listed_files(root: Path, *options: str) -> set[str]:
    """`git ls-files -z OPTIONS`: e.g. ("-d",) deleted, ("-o", "--exclude-standard") untracked."""
    return {p for p in run(["ls-files", "-z", *options], root).split("\0") if p}


def switch(root: Path, branch: str) -> None:
    run(["switch", "--quiet", branch], root)


def detach(root: Path, ref: str) -> None:
    """Best effort: HEAD detached at ref (leaving a branch that is about to be deleted)."""
    run(["switch", "--quiet", "--detach", ref], root, check=False)


def delete_branch(root: Path, branch: str, *, check: bool = True) -> None:
    run(["branch", "--quiet", "-D", branch], root, check=check)


def set_branch(root: Path, branch: str, tip: str | None) -> None:
    """Best effort: point refs/heads/BRANCH at tip, or delete it when tip is None."""
    if tip is None:
        run(["update-ref", "-d", f"refs/heads/{branch}"], root, check=False)
    else:
        run(["update-ref", f"refs/heads/{branch}", tip], root, check=False)


def remote_default_branch(root: Path, remote: str = "origin") -> str | None:
    """The remote's HEAD branch as this clone last saw it (refs/remotes/REMOTE/HEAD), if known."""
    head = run(["symbolic-ref", "--quiet", "--short", f"refs/remotes/{remote}/HEAD"], root, check=False).strip()
    return head.removeprefix(f"{remote}/") if head.startswith(f"{remote}/") else None


def remote_url(root: Path, remote: str = "origin") -> str | None:
    url = run(["config", "--get", f"remote.{remote}.url"], root, check=False).strip()
    return url or None


def fetch_branch(root: Path, branch: str, remote: str = "origin") -> None:
    run(["fetch", "--quiet", remote, branch], root)


def ahead_behind(root: Path, branch: str, other: str) -> tuple[int, int]:
    """Commits on branch not on other, and on other not on branch."""
    ahead, behind = run(["rev-list", "--left-right", "--count", f"{branch}...{other}"], root).split()
    return int(ahead), int(behind)


def clone_no_checkout(url: str, dest: Path) -> None:
    run(["clone", "--quiet", "--no-checkout", url, str(dest)], dest.parent)


def fetch_into(root: Path, ref: str, local_ref: str, remote: str = "origin") -> None:
    """Fetch remote's ref into local_ref (forced, no tags)."""
    run(["fetch", "--quiet", "--no-tags", remote, f"+{ref}:{local_ref}"], root)


def checkout_clean(root: Path, ref: str) -> None:
    """The work tree exactly at ref, detached, with every untracked and ignored file gone."""
    run(["checkout", "--quiet", "--force", "--detach", ref], root)
    run(["clean", "-ffdxq"], root)


def add_worktree(root: Path, path: Path, branch: str, base: str | None) -> None:
    """A linked work tree at path on branch (created at base when base is given)."""
    if base is None:
        run(["worktree", "add", "--quiet", str(path), branch], root)
    else:
        run(["worktree", "add", "--quiet", "-b", branch, str(path), base], root)


def remove_worktree(root: Path, path: Path) -> None:
    """Best effort: drop a linked work tree and git's record of it."""
    run(["worktree", "remove", "--force", str(path)], root, check=False)
    run(["worktree", "prune"], root, check=False)


def git_dir(root: Path) -> Path:
    """The repository's git directory, absolute (a linked work tree has its own)."""
    return Path(run(["rev-parse", "--absolute-git-dir"], root).strip())


def notes_list(root: Path, ref: str) -> list[tuple[str, str]]:
    """(note blob, annotated commit) of every note under the notes ref; [] when it has none."""
    pairs = [line.split() for line in run(["notes", f"--ref={ref}", "list"], root, check=False).splitlines()]
    return [(p[0], p[1]) for p in pairs if len(p) == 2]


def diff_names(root: Path, base: str, head: str) -> tuple[str, list[tuple[str, str]]]:
    """What a pull request from base to head changes: (merge base, [(status letter, path)]).

    The merge base is the empty tree when the two share no history. Renames are an add and a
    delete, so every path is seen under its own name."""
    merge_base = run(["merge-base", base, head], root, check=False).strip() or EMPTY_TREE
    fields = run(["diff", "--no-renames", "--name-status", "-z", merge_base, head], root).split("\0")
    return merge_base, [(s[0], p) for s, p in zip(fields[0::2], fields[1::2], strict=False) if s]


def diff_text(root: Path, old: str, new: str, pathspec: str) -> str:
    """The patch between two commits for the files pathspec matches."""
    return run(["diff", "--no-color", old, new, "--", pathspec], root)


def stream_records(root: Path, args: Sequence[str], separator: bytes) -> Iterator[bytes]:
    """Run git and yield its output split at separator, as it streams (for `git log -z` over
    tens of thousands of commits: nothing waits for the whole history). A failure is a GitError."""
    with subprocess.Popen(["git", *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        buffer = b""
        while chunk := proc.stdout.read(1 << 16):
            *records, buffer = (buffer + chunk).split(separator)
            yield from (record for record in records if record)
        if buffer:
            yield buffer
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise GitError(f"git {args[0] if args else ''} failed: {err.strip()}")


# --- a bare mirror of one ref (the REST API's snapshots) ----------------------------------


def init_bare(repo: Path) -> None:
    """A bare repository at repo that never runs `git gc` on its own (it serves reads)."""
    repo.mkdir(parents=True, exist_ok=True)
    run(["init", "--quiet", "--bare", str(repo)], repo)
    run(["--git-dir", str(repo), "config", "gc.auto", "0"], repo)


def mirror_ref(repo: Path, url: str, ref: str, local_ref: str) -> str:
    """Fetch url's ref into the bare repo's local_ref (forced, no tags); the commit it names."""
    run(["--git-dir", str(repo), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", url, f"+{ref}:{local_ref}"],
        repo)
    return run(["--git-dir", str(repo), "rev-parse", f"{local_ref}^{{commit}}"], repo).strip()


def set_remote_url(repo: Path, url: str | None, remote: str = "origin") -> None:
    """Set (or, with None, unset) remote.REMOTE.url in the repository at repo (bare or not)."""
    args = ["--git-dir", str(repo), "config"]
    if url:
        run([*args, f"remote.{remote}.url", url], repo)
    else:
        run([*args, "--unset-all", f"remote.{remote}.url"], repo, check=False)


def commit_time(repo: Path, commit: str) -> int:
    """The commit's committer time, seconds since the epoch."""
    return int(run(["--git-dir", str(repo), "log", "-1", "--format=%ct", commit], repo).strip())


def checkout_detached(tree: Path, commit: str) -> None:
    run(["checkout", "--quiet", "--force", "--detach", commit], tree)


def add_detached_worktree(repo: Path, path: Path, commit: str) -> None:
    """A work tree of the (bare) repository at path, detached at commit; stale records pruned first."""
    run(["--git-dir", str(repo), "worktree", "prune"], repo)
    run(["--git-dir", str(repo), "worktree", "add", "--quiet", "--force", "--detach", str(path), commit], repo)


def worktree_changes(root: Path) -> tuple[set[str], set[str]]:
    """(deleted, modified) tracked files of the work tree, from one stat pass over the index
    (`git ls-files -t -d -m`: a deleted file is also modified)."""
    deleted: set[str] = set()
    modified: set[str] = set()
    for entry in run(["ls-files", "-z", "-t", "-d", "-m"], root).split("\0"):
        tag, _, path = entry.partition(" ")
        if path:
            (deleted if tag == "R" else modified).add(path)
    return deleted, modified | deleted
