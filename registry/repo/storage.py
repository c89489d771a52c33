"""Large artifacts live in DVC: init, remotes, track and push, and pointer files.

DVC is imported only inside the functions that need it: listing or showing a
registry never pays for it.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import StorageError, ValidationError
from registry.files import yamlio

DEFAULT_REMOTE = "storage"
DVC_CONFIG = ".dvc/config"

Progress = Callable[[str, int, int], None]
"""A download's progress: (work-tree path, bytes so far, bytes in all); done == total once per file,
when it is in the DVC cache. Bytes come from DVC's transfer threads, done == total from the caller's."""


@dataclass(frozen=True)
class Pointer:
    """What a ``<artifact>.dvc`` file says: DVC's md5 of the file and its size."""

    path: str
    md5: str
    size: int | None


def file_digest(path: Path | str) -> tuple[str, int]:
    """The sha256 (hex) and size of a file, as a card records an artifact: one read."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest(), os.fstat(handle.fileno()).st_size


@contextlib.contextmanager
def _quiet_dvc() -> Iterator[None]:
    """DVC talks to its logger as if it were the CLI; as a library we keep it quiet."""
    from registry.repo.quiet import quiet_loggers

    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    import dvc.repo  # noqa: F401 - importing dvc installs its CLI log handlers; quiet them after

    with quiet_loggers("dvc", "dvc_objects", "dvc_data"):
        yield


def _error(action: str, exc: BaseException) -> StorageError:
    return StorageError(f"DVC could not {action}: {exc}")


def dvc_errors() -> tuple[type[BaseException], ...]:
    """What DVC raises when the user has to act (the failures `dvc`'s own CLI reports as such).

    DvcException and its subclasses (remote config, missing paths, transfers), OSError (file
    systems, unreachable remotes: aiohttp's connection errors are OSErrors too), the remote
    file systems' own errors, a corrupt cache, scmrepo's git errors and an HTTP remote's
    answers. Anything else is a bug, ours or DVC's, and reaches the CLI as one (exit 3).
    """
    from aiohttp import ClientError
    from dvc.exceptions import DvcException
    from dvc_data.hashfile.cache import DiskError
    from dvc_objects.errors import ObjectDBError, ObjectFormatError
    from dvc_objects.fs.errors import AuthError, ConfigError, RemoteMissingDepsError
    from scmrepo.exceptions import SCMError

    return (DvcException, OSError, AuthError, ConfigError, RemoteMissingDepsError, DiskError, ObjectDBError,
            ObjectFormatError, SCMError, ClientError)


@contextlib.contextmanager
def _opened(root: Path) -> Iterator[Any]:
    """DVC's Repo at root, closed after use; failing to open it is a StorageError. Call it
    inside _quiet_dvc(), which keeps DVC's logging quiet."""
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except dvc_errors() as exc:
        raise _error("open the repository", exc) from exc
    try:
        yield repo
    finally:
        repo.close()


def init(root: Path, remote_url: str) -> None:
    """``dvc init`` in an existing git repo with remote_url as the default remote."""
    with _quiet_dvc():
        from dvc.repo import Repo

        try:
            repo = Repo.init(str(root), no_scm=False)
            try:
                with repo.config.edit() as conf:
                    conf["remote"][DEFAULT_REMOTE] = {"url": remote_url}
                    conf["core"]["remote"] = DEFAULT_REMOTE
            finally:
                repo.close()
        except dvc_errors() as exc:
            raise _error("initialise the repository", exc) from exc


def add_and_push(root: Path, paths: Sequence[Path]) -> None:
    """Track files with DVC (one repo object, one call) and push them to the default remote."""
    if not paths:
        return
    targets = [str(p) for p in paths]
    with _quiet_dvc(), _opened(root) as repo:
        try:
            repo.add(targets)
        except dvc_errors() as exc:
            raise _error(f"track {', '.join(p.name for p in paths)}", exc) from exc
        try:
            repo.push(targets=[t + ".dvc" for t in targets])
        except dvc_errors() as exc:
            raise _error(
                "push to the remote; check that the remote in .dvc/config is reachable", exc
            ) from exc


def pull(root: Path, targets: Sequence[str], progress: Progress | None = None) -> None:
    """Fetch tracked files from the default remote into the work tree (targets: repo-relative .dvc paths).

    With progress, the files' objects are first downloaded into the DVC cache through DVC's own
    transfer, which reports bytes to fsspec callbacks (see _download); the pull that follows
    finds them cached and only checks them out. Without it, one `dvc pull` as before.
    """
    from registry.repo.quiet import quiet_loggers

    # DVC's own bars (tqdm) are on whenever stderr is a terminal, and their loggers' levels are
    # what turns them off: left on, they leave a blank line each on the terminal.
    with (_quiet_dvc(), quiet_loggers("dvc.progress", "dvc_data.callbacks", level=logging.CRITICAL + 1),
          _opened(root) as repo):
        try:
            if progress is not None:
                with contextlib.suppress(*dvc_errors()):  # what fails here, the pull reports as before
                    _download(repo, root, targets, progress)
            repo.pull(targets=[str(root / t) for t in targets])
        except dvc_errors() as exc:
            raise _error("pull", exc) from exc


def _download(repo: Any, root: Path, targets: Sequence[str], progress: Progress) -> None:
    """Copy the targets' objects missing from the DVC cache from the default remote, as `dvc fetch`
    does (DataCloud.transfer, the remote's index, its verify setting), reporting to progress.

    Objects the remote lacks are skipped here, and what DVC raises is dropped by pull(): the pull
    that follows fails on it as it did before there was progress, with DVC's own message.
    A directory output is left to that pull too (the registry tracks files one by one).
    """
    from dvc.cachemgr import LEGACY_HASH_NAMES
    from dvc_data.hashfile.db import get_index

    outs: dict[str, list[Any]] = {}  # by hash name: DVC 2 pointers live in the remote's legacy layout
    for target in targets:
        for stage in repo.stage.load_file(str(root / target)):
            for out in stage.outs:
                if out.use_cache and out.hash_info and out.hash_info.value and not out.hash_info.isdir:
                    outs.setdefault(out.hash_name, []).append(out)
    for hash_name, group in outs.items():
        odb = repo.cloud.get_remote_odb(None, "fetch", hash_name=hash_name)
        cache = repo.cache.legacy if hash_name in LEGACY_HASH_NAMES else repo.cache.local
        files = {out.hash_info.value: (Path(os.path.relpath(out.fs_path, repo.root_dir)).as_posix(),
                                       out.meta.size or 0) for out in group}
        callback = _transfer_callback(files, progress)
        with contextlib.closing(get_index(odb)) as index:
            result = repo.cloud.transfer(odb, cache, [out.hash_info for out in group], src_index=index,
                                         cache_odb=cache, verify=odb.verify, callback=callback)
        for hash_info in result.transferred:
            callback.finished(hash_info.value)


def _transfer_callback(files: dict[str, tuple[str, int]], progress: Progress) -> Any:
    """An fsspec callback for DVC's transfer of files' objects (object id -> (path, size)).

    DVC's file systems branch a child callback off it for each object they copy (branched(from,
    to)), then give that child the size and the bytes as they go (remote file systems do; a local
    copy under 1 GB, or a reflink, only starts and ends); an object's id is the end of its path.
    finished(id) says an object is in the cache.
    """
    from fsspec.callbacks import DEFAULT_CALLBACK, Callback  # type: ignore[import-untyped]

    class FileBytes(Callback):  # type: ignore[misc]
        def __init__(self, path: str, size: int) -> None:
            super().__init__(size=size)
            self.path = path

        def call(self, *args: Any, **kwargs: Any) -> None:
            if self.size and self.value < self.size:  # done == total is said once, by finished()
                progress(self.path, self.value, self.size)

    class Transfers(Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(size=len(files))
            self.reported: set[str] = set()

        def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Any:
            for path in (path_2, path_1):
                oid = _object_id(path)
                if oid in files:
                    child = FileBytes(*files[oid])
                    child.call()  # shown from the start: local copies under 1 GB count no bytes
                    return child
            return DEFAULT_CALLBACK

        def finished(self, oid: str) -> None:
            if oid not in files or oid in self.reported:
                return
            self.reported.add(oid)
            path, size = files[oid]
            progress(path, size, size)

    return Transfers()


def _object_id(path: str) -> str | None:
    """The object id in a DVC object path (.../<2 hex>/<30 hex>, DVC's layout), or None."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    oid = "".join(parts[-2:]) if len(parts) >= 2 else ""
    return oid if re.fullmatch(r"[0-9a-f]{32}", oid) else None


def parse_pointer(text: str | bytes, path: str) -> Pointer:
    data: Any = yamlio.loads(text, path)
    outs = data.get("outs") if isinstance(data, dict) else None
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise ValidationError.one(path, "not a DVC pointer with exactly one entry under outs", 1, "outs")
    out = outs[0]
    md5 = out.get("md5")
    if not isinstance(md5, str) or not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ValidationError.one(path, "missing or malformed md5", yamlio.line_of(text, ["outs", 0, "md5"]), "outs[0].md5")
    size = out.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValidationError.one(path, "size must be a whole number", yamlio.line_of(text, ["outs", 0, "size"]), "outs[0].size")
    return Pointer(str(out.get("path", "")), md5, size)


@dataclass(frozen=True)
class DvcConfig:
    """A .dvc/config as DVC reads it: `core` options and each remote's, by lower-cased name."""

    core: dict[str, str]
    remotes: dict[str, dict[str, str]]

    @property
    def default_remote(self) -> str | None:
        """core.remote, lower-cased as DVC matches remote names; None when unset."""
        return str(self.core.get("remote", "")).lower() or None


def parse_dvc_config(text: str | bytes) -> DvcConfig:
    """The one reader of .dvc/config (DVC's INI dialect); a ValueError says why it is unreadable."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text.decode() if isinstance(text, bytes) else text)
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    core: dict[str, str] = {}
    remotes: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        title = section.strip().strip("'\"")
        options = dict(parser.items(section))
        if title == "core":
            core = options
        elif title.startswith("remote "):
            remotes[title[len("remote "):].strip().strip('"').lower()] = options
    return DvcConfig(core, remotes)


def remote_url(config_text: str | bytes | None) -> str | None:
    """The default remote's URL from a .dvc/config text; None when there is none or it is unreadable."""
    if not config_text:
        return None
    try:
        config = parse_dvc_config(config_text)
    except ValueError:
        return None
    name = config.default_remote
    return config.remotes.get(name, {}).get("url") if name else None


def object_url(remote: str | None, md5: str) -> str | None:
    """Where DVC 3 keeps an object in a remote: <remote>/files/md5/<2>/<30>."""
    if not remote:
        return None
    return f"{remote.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"


def fetch_at(root: Path, path: str, rev: str, dest: Path) -> None:
    """Copy a DVC-tracked file as of git revision rev to dest, through DVC's API (cache, then remote)."""
    with _quiet_dvc():
        import dvc.api

        try:
            with dvc.api.open(path, repo=str(root), rev=rev, mode="rb") as src, open(dest, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
        except dvc_errors() as exc:
            dest.unlink(missing_ok=True)
            raise _error(f"fetch {path} at {rev[:8]}", exc) from exc
        except BaseException:
            dest.unlink(missing_ok=True)  # no half-written copy, whatever stopped it
            raise


def delete_objects(root: Path, md5s: Sequence[str]) -> int:
    """Remove objects from the default DVC remote and the local cache (DVC's object-db API).

    Returns how many remote objects were removed. Objects already gone are skipped.
    """
    if not md5s:
        return 0
    with _quiet_dvc(), _opened(root) as repo:
        removed = 0
        try:
            remote = repo.cloud.get_remote_odb(command="gc")
            _reachable(remote)
            for md5 in md5s:
                if remote.exists(md5):
                    remote.delete(md5)
                    removed += 1
            local = repo.cache.local
            for md5 in md5s:
                if local.exists(md5):
                    local.delete(md5)
        except dvc_errors() as exc:
            raise _error("remove objects from the remote", exc) from exc
        return removed


def _reachable(odb: Any) -> None:
    """Refuse a remote whose objects folder cannot be read: its file system may answer
    "not there" for every object when it cannot be reached at all (fsspec's HTTP file
    system does), and gc would then delete the local copies of objects still stored."""
    try:
        odb.fs.info(odb.path)
    except FileNotFoundError:
        raise StorageError(f"DVC could not reach the remote's objects at {odb.path} (the folder is missing or "
                           "the remote is unreachable); nothing was deleted. Check the remote in .dvc/config") from None


def share_cache(main: Path, work: Path) -> None:
    """The worktree uses the main checkout's DVC cache and its remotes, resolved to absolute
    paths (a relative remote URL would point elsewhere from a worktree in a temp folder)."""
    local = main / ".dvc" / "config.local"
    if local.is_file():
        shutil.copyfile(local, work / ".dvc" / "config.local")
    with _quiet_dvc():
        from dvc.repo import Repo

        try:
            source = Repo(str(main))
            try:
                cache_dir = str(source.cache.local_cache_dir)
                urls = {name: str(conf["url"]) for name, conf in source.config["remote"].items() if "url" in conf}
            finally:
                source.close()
            target = Repo(str(work))
            try:
                with target.config.edit("local") as conf:
                    conf["cache"]["dir"] = cache_dir
                    for name, url in urls.items():
                        if "://" not in url:
                            conf["remote"].setdefault(name, {})["url"] = url
            finally:
                target.close()
        except dvc_errors() as exc:
            raise StorageError(f"DVC could not prepare the import's checkout: {exc}") from exc
