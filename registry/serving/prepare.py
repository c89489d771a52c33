"""A verified folder at DIR/<name>/versions/<version>: reuse the one on disk, check it in place, or download it.

Each file is hashed as it arrives from the registry mirror (git files) or the DVC remote
(artifacts) into ``DIR/.tmp-*``; sizes, digests and the signature are checked
(`registry.serving.verify`) before the folder is renamed into place. Nothing here
touches a link: switching is `registry.serving.switch`'s job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from registry.files.fsutil import fsync_dir, write_new
from registry.repo import git
from registry.serving.remote import ProgressFn, Remote, copy_hashing
from registry.serving.store import CANARY, CURRENT, PullError, ServingDir, State, VersionRecord
from registry.serving.verify import (
    VerificationError,
    Wanted,
    check_artifact,
    check_version,
    is_trusted,
    verify_in_place,
)

__all__ = ["Preparer", "Progress", "Ready", "blame"]


@dataclass
class Ready:
    want: Wanted
    record: VersionRecord
    downloaded_files: int = 0
    downloaded_bytes: int = 0
    verified_files: int = 0


@dataclass
class Progress:
    installed: dict[tuple[str, str], VersionRecord] = field(default_factory=dict)
    commit: str | None = None


def blame(exc: PullError, want: Wanted) -> PullError:
    """The same refusal, its first line naming the model and version that caused it."""
    text = str(exc)
    if not text.startswith(f"{want.ref}:"):
        text = f"{want.ref}: {text}"
    named = type(exc)(text)
    named.model = want.name
    return named


@dataclass
class Preparer:
    store: ServingDir
    keys: Sequence[ec.EllipticCurvePublicKey] | None
    check_stop: Callable[[], None]
    progress: ProgressFn | None

    def prepare(self, cat: git.CatFile, want: Wanted, state: State | None, remote: Remote | None,
                progress: Progress, link: str) -> Ready:
        self.check_stop()
        known = state.record(want.name, want.version) if state else None
        folder = self.store.version_dir(want.name, want.version)
        serving = want.version in {self.store.current_version(want.name, n) for n in (CURRENT, CANARY)}
        if folder.is_dir():
            if known is not None and known.tree == want.tree and is_trusted(self.keys, known.signed_by):
                return Ready(want, known)
            if serving and known is not None and known.tree != want.tree:
                raise VerificationError(
                    f"{want.ref} changed in the registry after it was applied ({want.folder} was tree "
                    f"{known.tree[:12]}, is now {want.tree[:12]}); a merged version is immutable: "
                    "register a new version instead")
            try:
                record, hashed = verify_in_place(want, folder, self.keys, self.check_stop)
            except VerificationError:
                if serving:
                    raise
                self.store.discard(folder)
            else:
                progress.installed[(want.name, want.version)] = record
                return Ready(want, record, verified_files=hashed)
        ready = self.download(cat, want, remote)
        progress.installed[(want.name, want.version)] = ready.record
        return ready

    def download(self, cat: git.CatFile, want: Wanted, remote: Remote | None) -> Ready:
        tmp = self.store.new_temp(f"{want.name}-{want.version}")
        digests: dict[str, str] = {}
        sizes: dict[str, int] = {}
        got_bytes = 0
        for blob in want.git_files:
            self.check_stop()
            data = cat.read(blob.oid)
            if data is None:
                raise PullError(f"{want.folder}/{blob.path}: missing from the registry mirror")
            target = tmp / blob.path
            target.parent.mkdir(parents=True, exist_ok=True)
            write_new(target, data, executable=blob.mode == "100755")
            digests[blob.path] = hashlib.sha256(data).hexdigest()
            sizes[blob.path] = len(data)
        cards = {a.path: a for a in want.artifacts}
        for path, md5 in sorted(want.dvc_md5.items()):
            assert remote is not None
            artifact = cards[path]
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            label = f"{want.ref} {path}"
            with remote.open(md5) as src:
                size, digest = copy_hashing(src, target, artifact.size, label, self.check_stop, self.progress)
            sizes[path], digests[path] = size, digest
            got_bytes += size
            check_artifact(want, artifact, size, digest, f"the DVC remote's copy at {remote.location(md5)}")
        signed_by = check_version(want, tmp, digests, sizes, self.keys)
        for dirpath, _dirs, _files in os.walk(tmp, topdown=False):
            fsync_dir(Path(dirpath))
        self.store.install(tmp, want.name, want.version)
        record = VersionRecord(want.tree, dict(sorted(digests.items())), signed_by)
        return Ready(want, record, downloaded_files=len(want.dvc_md5), downloaded_bytes=got_bytes)
