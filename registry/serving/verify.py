"""What `registry pull` checks before serving a version: paths, sizes and digests against the card, the signature.

Every file of a version folder is hashed as it arrives (or, for a folder already on
disk that state.json does not vouch for, hashed in place) and checked here: each
artifact's size and sha256 against the card, git files against the registry's blobs,
the card naming the version, and the signature against keys given out of band.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import RegistryError, UsageError
from registry.files.cards import Artifact
from registry.files.layout import CARD_FILE
from registry.serving.mirror import Blob
from registry.serving.remote import hash_file
from registry.serving.store import PullError, VersionRecord
from registry.signing.bundle import Bundle, Verifier, signed_card_names
from registry.signing.keys import key_id, load_public_keys
from registry.signing.manifest import (
    SIGNATURE_FILE,
    Manifest,
    Resource,
    SignatureError,
    is_signed_file,
)

__all__ = ["VerificationError", "Wanted", "artifact_mismatch", "check_artifact", "check_version", "is_trusted",
           "load_trusted_keys", "safe_relative", "verify_in_place"]


class VerificationError(PullError):
    """A version's files do not match its card, or its signature does not verify."""


@dataclass(frozen=True)
class Wanted:
    """What one model must serve at the commit: the version folder's git files and its DVC artifacts."""

    name: str
    version: str
    traffic: float | None
    tree: str  # git tree id of models/<name>/<version>: names every byte of the folder
    folder: str
    git_files: tuple[Blob, ...]
    dvc_md5: Mapping[str, str]  # artifact path -> DVC md5 (from its pointer)
    artifacts: tuple[Artifact, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def safe_relative(path: str, where: str) -> str:
    """path, when it is a plain relative path inside a version folder."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") or "\0" in p or "\\" in p for p in parts):
        raise VerificationError(f"{where}: unsafe path {path!r} in the version folder; refused")
    return path


def load_trusted_keys(trusted_keys: str | Path | Sequence[ec.EllipticCurvePublicKey] | None,
                      insecure: bool) -> tuple[ec.EllipticCurvePublicKey, ...] | None:
    """The keys `--trusted-keys` gives (a file or keys), or None with `--insecure-skip-signature`."""
    if trusted_keys is None:
        if not insecure:
            raise UsageError(
                "--trusted-keys FILE is required: serving loads only versions whose signature verifies "
                "against keys you trust (given here, never taken from the registry); "
                "--insecure-skip-signature loads unsigned versions, checking sizes and digests only")
        return None
    if insecure:
        raise UsageError("give --trusted-keys or --insecure-skip-signature, not both")
    if isinstance(trusted_keys, str | Path):
        try:
            return load_public_keys(Path(trusted_keys))
        except RegistryError as exc:
            raise UsageError(f"--trusted-keys: {exc}") from None
    if not trusted_keys:
        raise UsageError("--trusted-keys: no keys given")
    return tuple(trusted_keys)


def is_trusted(keys: Sequence[ec.EllipticCurvePublicKey] | None, signed_by: str | None) -> bool:
    """Whether a version signed by signed_by may be served (anything may, without keys)."""
    if keys is None:
        return True
    return signed_by is not None and signed_by in {key_id(k) for k in keys}


def verify_in_place(want: Wanted, folder: Path, keys: Sequence[ec.EllipticCurvePublicKey] | None,
                    should_stop: Callable[[], None]) -> tuple[VersionRecord, int]:
    """A folder already at versions/<version> that state.json does not vouch for: hash and check it."""
    expected = {b.path for b in want.git_files} | set(want.dvc_md5)
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath, name)
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink() or relative not in expected:
                raise VerificationError(f"{folder}: holds {relative}, which {want.ref} does not have")
            sizes[relative], digests[relative] = hash_file(path, should_stop)
    absent = sorted(expected - set(digests))
    if absent:
        raise VerificationError(f"{folder}: lacks {', '.join(absent)}")
    blobs = {b.path: b for b in want.git_files}
    for relative, blob in blobs.items():
        data = (folder / relative).read_bytes()
        if hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest() != blob.oid:
            raise VerificationError(f"{folder}/{relative}: differs from the registry's {want.folder}/{relative}")
    for artifact in want.artifacts:
        check_artifact(want, artifact, sizes[artifact.path], digests[artifact.path], str(folder / artifact.path))
    signed_by = check_version(want, folder, digests, sizes, keys)
    return VersionRecord(want.tree, dict(sorted(digests.items())), signed_by), len(digests)

def artifact_mismatch(ref: str, artifact: Artifact, size: int, digest: str, where: str) -> str | None:
    """Why a copy of an artifact is not the one its card registered (size, then sha256), or None.

    `ref` is name@version; `where` names the copy checked. `registry pull` and `registry export`
    both refuse with this message."""
    if size != artifact.size:
        found = f"size is {size} bytes, expected {artifact.size}"
    elif digest != artifact.sha256:
        found = f"sha256 is {digest}, expected {artifact.sha256}"
    else:
        return None
    return f"{ref}: {artifact.path}: {found} (card.yaml); {where} is not the registered artifact"


def check_artifact(want: Wanted, artifact: Artifact, size: int, digest: str, where: str) -> None:
    """An artifact's size and sha256 against the card's; `where` names the copy checked."""
    problem = artifact_mismatch(want.ref, artifact, size, digest, where)
    if problem:
        raise VerificationError(problem)

def check_version(want: Wanted, folder: Path, digests: Mapping[str, str], sizes: Mapping[str, int],
                  keys: Sequence[ec.EllipticCurvePublicKey] | None) -> str | None:
    """A version folder's artifacts, card and (with keys) signature; the signer's key id, or None."""
    for artifact in want.artifacts:
        if artifact.path not in digests:
            raise VerificationError(f"{want.ref}: {artifact.path}: listed in card.yaml but not in {want.folder}")
        check_artifact(want, artifact, sizes[artifact.path], digests[artifact.path], f"{want.folder}/{artifact.path}")
    card_path = folder / CARD_FILE
    try:
        card_bytes = card_path.read_bytes()
    except FileNotFoundError:
        raise VerificationError(f"{want.ref}: {want.folder} has no card.yaml") from None
    if hashlib.sha256(card_bytes).hexdigest() != digests.get(CARD_FILE):
        raise VerificationError(f"{want.ref}: card.yaml changed while being verified")
    said = signed_card_names(card_bytes) or "nothing"
    if said != want.ref:
        raise VerificationError(f"{want.folder}/card.yaml names {said}, not {want.ref}")
    if keys is None:
        return None
    source = f"{want.folder}/{SIGNATURE_FILE}"
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        raise VerificationError(f"{want.ref}: not signed ({source} is missing); serving loads only "
                                "versions signed by a trusted key")
    resources = tuple(Resource(p, d) for p, d in digests.items() if is_signed_file(p))
    try:
        bundle = Bundle.from_json(signature.read_bytes(), source)
        verified = Verifier(keys).verify(
            bundle, Manifest(want.name, want.version, resources), source)
    except SignatureError as exc:
        trusted = ", ".join(key_id(k)[:16] for k in keys)
        raise VerificationError(f"{want.ref}: {exc} (trusted keys: {trusted})") from None
    return verified.key_id
