"""The registry side of `registry pull`: a bare, blob-less mirror of one ref.

The mirror (``DIR/.registry-cache/registry.git``) holds the ref's whole history of
commits and trees, so that ancestry can be checked, but blobs only for the files a
pull reads: ``.dvc/config``, the models' ``stages.yaml`` and the folders of the
versions being served, each step one batched fetch. A poll with no change costs one
``git ls-remote`` and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.errors import GitError, RegistryError
from registry.repo import git

MIRROR_REF = "refs/serving/target"
_SHA = re.compile(r"[0-9a-f]{40}")
# Never prompt for credentials (a poll must fail, not hang); give up on a stalled transfer.
_GIT_CONFIG = {"http.lowSpeedLimit": "1000", "http.lowSpeedTime": "60"}


class SourceError(RegistryError):
    """The registry cannot be read: no such repository or ref, or the network failed."""


def _env(**config: str) -> dict[str, str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    settings = {**_GIT_CONFIG, **config}
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for number, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{number}"], env[f"GIT_CONFIG_VALUE_{number}"] = key, value
    return env


def _git(args: Sequence[str], cwd: Path, *, input: bytes | None = None, **config: str) -> str:
    return git.run(args, cwd, input=input, env=_env(**config))


def remote_head(url: str, ref: str) -> tuple[str, str]:
    """(full ref name, commit) of ref in the repository at url, by one ``git ls-remote``."""
    proc = git.attempt(["ls-remote", "--", url, ref], os.path.abspath(os.sep), env=_env())
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"cannot read the registry at {url}: {detail[0] if detail else 'git ls-remote failed'}")
    found: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    candidates = [ref] if ref == "HEAD" or ref.startswith("refs/") else [
        f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]
    for name in candidates:
        if name in found:
            return name.removesuffix("^{}"), found[name]
    raise SourceError(f"--ref {ref}: no such branch or tag in the registry at {url}")


@dataclass(frozen=True)
class Blob:
    path: str
    mode: str
    oid: str


class Mirror:
    """The bare mirror; every method is one git call (or one batch) in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, url: str) -> None:
        """Create the mirror if need be and point it at url."""
        if not (self.path / "HEAD").is_file():
            self._create(url)
        elif _git(["config", "--get", "remote.origin.url"], self.path).strip() != url:
            _git(["config", "remote.origin.url", url], self.path)

    def _create(self, url: str) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", str(self.path)], self.path.parent)
        for key, value in (
            ("remote.origin.url", url),
            # A partial clone: commits and trees come over, blobs when asked for.
            ("remote.origin.promisor", "true"),
            ("remote.origin.partialclonefilter", "blob:none"),
            ("core.repositoryformatversion", "1"),
            ("extensions.partialClone", "origin"),
            # The mirror is a cache that we own: no background gc or maintenance in it.
            ("gc.auto", "0"),
            ("maintenance.auto", "false"),
            ("fetch.writeCommitGraph", "false"),
        ):
            _git(["config", key, value], self.path)

    def reset(self, url: str) -> None:
        """Start the mirror afresh (it is only a cache): after a fetch that failed or was killed."""
        self._create(url)

    def clear_stale_locks(self) -> None:
        """Git's own lock files left by a git process that was killed; we hold DIR's lock."""
        for dirpath, dirnames, filenames in os.walk(self.path):
            if Path(dirpath) == self.path / "objects":
                dirnames[:] = []
                continue
            for name in filenames:
                if name.endswith(".lock"):
                    Path(dirpath, name).unlink(missing_ok=True)

    def fetch(self, refname: str) -> str:
        """Fetch refname's history (commits and trees, no blobs); the commit it points at."""
        _git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
              "--filter=blob:none", "origin", f"+{refname}:{MIRROR_REF}"], self.path)
        commit = git.rev_parse(MIRROR_REF, self.path)
        if commit is None:
            raise SourceError(f"fetching {refname} gave no commit")
        return commit

    def holds(self, commit: str) -> bool:
        """Whether the mirror's ref is at commit (a ref read: asking git about a missing object
        in a partial clone would fetch it)."""
        proc = git.attempt(["rev-parse", "--verify", "--quiet", MIRROR_REF], self.path)
        return proc.returncode == 0 and proc.stdout.decode().strip() == commit

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether new descends from old. An old commit that cannot be had is not in new's history."""
        return _SHA.fullmatch(old) is not None and git.ok(["merge-base", "--is-ancestor", old, new], self.path)

    def prefetch(self, oids: Iterable[str]) -> None:
        """Bring these blobs over in one fetch; git skips those already here."""
        wanted = sorted(set(oids))
        if not wanted:
            return
        _git(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
              "--filter=blob:none", "--stdin", "origin"],
             self.path, input="".join(f"{oid}\n" for oid in wanted).encode(),
             **{"fetch.negotiationAlgorithm": "noop"})

    def subtrees(self, cat: git.CatFile, tree: str) -> dict[str, tuple[str, str]]:
        data = cat.read(tree)
        if data is None:
            raise GitError(f"tree {tree} is missing from the registry mirror")
        return git.parse_tree(data)

    def walk(self, cat: git.CatFile, tree: str, prefix: str = "") -> list[Blob]:
        """Every file under a tree (trees are always in the mirror), recursively."""
        files: list[Blob] = []
        for name, (mode, oid) in sorted(self.subtrees(cat, tree).items()):
            if mode == git.TREE_MODE:
                files += self.walk(cat, oid, f"{prefix}{name}/")
            else:
                files.append(Blob(f"{prefix}{name}", mode, oid))
        return files
