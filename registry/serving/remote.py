"""Reading artifacts from the DVC remote named in a registry commit's ``.dvc/config``.

A local-folder remote is read directly (the object file DVC 3 keeps at
``<remote>/files/md5/<2>/<30>``, the manifest's ``url``); any other remote (S3, GCS,
Azure, HTTP, SSH…) through DVC's own filesystem for it, with the options the
commit's config gives (credentials come from the environment, as for ``dvc pull``).
Every byte is read once: hashed and written as it arrives.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from registry.repo import storage
from registry.serving.store import PullError

CHUNK = 4 << 20
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Remote:
    name: str
    url: str  # an absolute folder for a local remote, else the remote's URL
    config: dict[str, Any]  # the commit's .dvc/config, as DVC reads it
    _fs: list[Any] = field(default_factory=list, compare=False)

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def location(self, md5: str) -> str:
        return storage.object_url(self.url, md5) or ""

    def open(self, md5: str) -> IO[bytes]:
        if self.is_local:
            try:
                return open(self.location(md5), "rb")
            except OSError as exc:
                raise PullError(f"cannot read {self.location(md5)} from the DVC remote: {exc.strerror}") from None
        return self._open_with_dvc(md5)

    def _open_with_dvc(self, md5: str) -> IO[bytes]:
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        try:
            if not self._fs:
                from dvc.fs import get_cloud_fs

                cls, options, fs_path = get_cloud_fs(self.config, name=self.name)
                self._fs.append((cls(**options), fs_path))
            fs, root = self._fs[0]
            path = fs.join(root, "files", "md5", md5[:2], md5[2:])
            return fs.open(path, mode="rb")  # type: ignore[no-any-return]
        except Exception as exc:  # DVC and its filesystems raise many kinds; one message for the user
            raise PullError(f"cannot read {self.location(md5)} from the DVC remote {self.name!r}: "
                            f"{type(exc).__name__}: {exc}") from None


def from_config(text: bytes | None, source: str) -> Remote | None:
    """The default remote of a .dvc/config; a relative local path is resolved against the source."""
    if not text:
        return None
    try:
        parsed = storage.parse_dvc_config(text)
    except ValueError as exc:
        raise PullError(f".dvc/config: unreadable: {exc}") from None
    config: dict[str, Any] = {"core": parsed.core, "remote": dict(parsed.remotes)}
    name = parsed.default_remote
    if not name:
        return None
    remote = config["remote"].get(name)
    if remote is None or not remote.get("url"):
        raise PullError(f".dvc/config: core.remote names {name!r}, which has no url")
    url = str(remote["url"])
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" not in url and not os.path.isabs(url):
        # DVC resolves a relative remote against the config's folder: only known for a local registry.
        dvc_dir = Path(source) / ".dvc"
        if not dvc_dir.is_dir():
            raise PullError(f".dvc/config: the remote {name!r} is a relative path ({url}); "
                            "it can only be read when --from is a local work tree")
        url = os.path.normpath(dvc_dir / url)
    remote = {**remote, "url": url}
    config["remote"][name] = remote
    return Remote(name, url, config)


def copy_hashing(src: IO[bytes], dest: Path, limit: int, label: str,
                 should_stop: Callable[[], None], progress: ProgressFn | None) -> tuple[int, str]:
    """Copy src to a new file dest, hashing as it goes; (size, sha256). Reads at most limit + 1 bytes."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    readinto = getattr(src, "readinto", None)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb", buffering=0) as out:
        while True:
            should_stop()
            if readinto is not None:
                n = readinto(view)
                chunk = view[:n] if n else b""
            else:
                chunk = src.read(CHUNK)
                n = len(chunk)
            if not n:
                break
            size += n
            if size > limit:
                raise PullError(f"{label}: the DVC remote's copy is larger than the {limit} bytes card.yaml says")
            digest.update(chunk)
            written = 0
            while written < n:
                written += out.write(chunk[written:])
            if progress is not None:
                progress(label, size, limit)
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def hash_file(path: Path, should_stop: Callable[[], None]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(view):
            should_stop()
            digest.update(view[:n])
            size += n
    return size, digest.hexdigest()
