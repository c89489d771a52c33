"""Large artifacts live in DVC: init, remotes, track and push, and pointer files.

DVC is imported only inside the functions that need it: listing or showing a
registry never pays for it.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import StorageError, ValidationError
from registry.files import yamlio

DEFAULT_REMOTE = "storage"
DVC_CONFIG = ".dvc/config"


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
    with _quiet_dvc():
        from dvc.repo import Repo

        targets = [str(p) for p in paths]
        try:
            repo = Repo(str(root))
        except dvc_errors() as exc:
            raise _error("open the repository", exc) from exc
        try:
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
        finally:
            repo.close()


def pull(root: Path, targets: Sequence[str]) -> None:
    """Fetch tracked files from the default remote into the work tree (targets: repo-relative .dvc paths)."""
    with _quiet_dvc():
        from dvc.repo import Repo

        try:
            repo = Repo(str(root))
        except dvc_errors() as exc:
            raise _error("open the repository", exc) from exc
        try:
            repo.pull(targets=[str(root / t) for t in targets])
        except dvc_errors() as exc:
            raise _error("pull", exc) from exc
        finally:
            repo.close()


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
    with _quiet_dvc():
        from dvc.repo import Repo

        try:
            repo = Repo(str(root))
        except dvc_errors() as exc:
            raise _error("open the repository", exc) from exc
        try:
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
        finally:
            repo.close()


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
