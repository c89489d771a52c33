"""Verifying a registered version's signature against the registry's trusted keys.

The one place that decides a version's signature status ("verified by KEY", "invalid",
"unverified", "unsigned") from the work tree: `registry show` and what shows a version
through `registry.queries.inventory` (the REST API, MCP) ask `signature_status`;
`registry verify` asks `verify_version`. The site (from a commit's blobs), the signature
gate (keys from the base commit) and `registry pull` (keys given out of band, digests of
what it downloaded) still verify on their own terms."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from registry.errors import RegistryError, StorageError, UsageError
from registry.files import cards, config, yamlio
from registry.repo import git, storage
from registry.repo.registry import Registry
from registry.signing.bundle import Bundle, Verified, Verifier, verify_folder
from registry.signing.keys import SigningKeyError, key_id, load_public_keys, parse_public_keys
from registry.signing.manifest import (
    SIGNATURE_FILE,
    Manifest,
    Resource,
    SignatureError,
    hash_folder,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class TrustedKeys:
    """Public keys to verify with, and where each came from (for messages)."""

    keys: tuple[ec.EllipticCurvePublicKey, ...]
    sources: dict[str, str]


@dataclass(frozen=True)
class VerifiedVersion:
    name: str
    version: str
    subject: str
    key_id: str
    key_source: str
    files: tuple[str, ...]
    unchecked: tuple[str, ...] = ()  # artifacts taken at the card's digest (verify_version(fetch=False))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "verified": True, "subject": self.subject,
                "key_id": self.key_id, "trusted_key": self.key_source, "files": list(self.files)}


def check_against_card(manifest: Manifest, card: cards.Card, where: str) -> None:
    """The files to sign are exactly the card and the artifacts it lists, with its digests."""
    listed = {a.path: a.sha256 for a in card.artifacts}
    actual = manifest.digests()
    problems = [
        f"{where}/{path}: is not an artifact listed in the card; remove it before signing"
        for path in sorted(actual)
        if path != cards.CARD_FILE and path not in listed
    ]
    for path, expected in listed.items():
        digest = actual.get(path)
        if digest is None:
            problems.append(f"{where}/{path}: the card lists it but it is not in the folder")
        elif digest != expected:
            problems.append(
                f"{where}/{path}: sha256 is {digest}, the card says {expected}; "
                "restore the registered file (`dvc checkout`) before signing"
            )
    if problems:
        raise SignatureError("\n".join(problems))


# --- verifying ----------------------------------------------------------------------


def trusted_keys(reg: Registry, keys_file: Path | None = None) -> TrustedKeys:
    """Keys from --trusted-keys FILE, or those registry.yaml's trusted_keys lists (work tree)."""
    if keys_file is not None:
        if not keys_file.is_file():
            raise UsageError(f"--trusted-keys {keys_file}: no such file")
        found = load_public_keys(keys_file)
        return TrustedKeys(found, {key_id(k): str(keys_file) for k in found})
    listed = reg.config.trusted_keys
    if not listed:
        raise SigningKeyError(
            f"{config.CONFIG_FILE} lists no trusted_keys; add the signer's public key "
            "(e.g. keys/release.pub) to it, or pass --trusted-keys FILE"
        )
    root = reg.root.resolve()
    found_keys: list[ec.EllipticCurvePublicKey] = []
    sources: dict[str, str] = {}
    for index, rel in enumerate(listed):
        path = (reg.root / rel).resolve()
        if PurePosixPath(rel).is_absolute() or root not in path.parents:
            raise SigningKeyError(_config_problem(reg, index, f"{rel} is outside the registry; "
                                                  "keep trusted public keys in it (e.g. keys/release.pub)"))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SigningKeyError(_config_problem(reg, index, f"{rel} does not exist in the work tree")) from None
        except OSError as exc:
            raise SigningKeyError(_config_problem(reg, index, f"{rel}: cannot read: {exc.strerror}")) from None
        for key in parse_public_keys(data, rel):
            found_keys.append(key)
            sources.setdefault(key_id(key), rel)
    return TrustedKeys(tuple(found_keys), sources)


def _config_problem(reg: Registry, index: int, message: str) -> str:
    text = (reg.root / config.CONFIG_FILE).read_bytes()
    line = yamlio.line_of(text, ["trusted_keys", index])
    where = config.CONFIG_FILE if line is None else f"{config.CONFIG_FILE}:{line}"
    return f"{where}: trusted_keys[{index}]: {message}"


def verify_version(
    reg: Registry,
    name: str,
    version: str,
    *,
    keys_file: Path | None = None,
    signature: Path | None = None,
    fetch: bool = True,
) -> VerifiedVersion:
    """Check a version's signature against trusted keys; raises SignatureError with the reason.

    Artifacts absent from the work tree are fetched through DVC into a temporary
    copy; with fetch=False they are taken at the sha256 the card records instead
    (the card is itself signed) and listed in ``unchecked``.
    """
    registered_folder(reg, name, version)
    folder = reg.version_dir(name, version)
    rel = reg.rel(folder)
    if signature is not None and not signature.is_file():
        raise UsageError(f"--signature {signature}: no such file")
    if signature is None and not (folder / SIGNATURE_FILE).is_file():
        raise SignatureError(
            f"{rel}/{SIGNATURE_FILE}: {name}@{version} is not signed; "
            f"sign it with `registry sign {name}@{version} --key KEY`"
        )
    trusted = trusted_keys(reg, keys_file)
    # The folder's own signature.json when none is given, also when reading a temporary copy.
    bundle_path = signature or folder / SIGNATURE_FILE
    unchecked: tuple[str, ...] = ()
    if fetch:
        with version_files(reg, name, version) as files, relative_errors(reg, files, folder):
            verified = verify_folder(files, name, version, trusted.keys, bundle_path)
    else:
        card = reg.card(name, version)  # refuses a card that does not name NAME@VERSION
        with relative_errors(reg, folder):
            bundle = Bundle.from_json(bundle_path.read_bytes(), str(bundle_path))
            on_disk = hash_folder(folder, name, version)
            verified, unchecked = verify_at_card_digests(trusted.keys, bundle, str(bundle_path), on_disk, card,
                                                         absent_artifacts(folder))
    return VerifiedVersion(name, version, verified.subject, verified.key_id,
                           trusted.sources.get(verified.key_id, "?"), verified.files, unchecked)


def verify_at_card_digests(keys: Sequence[ec.EllipticCurvePublicKey], bundle: Bundle, source: str,
                           present: Manifest, card: cards.Card,
                           absent: Iterable[str]) -> tuple[Verified, tuple[str, ...]]:
    """Verify a bundle over the files at hand (``present``) and the DVC-tracked artifacts that
    are not (``absent``: paths whose pointer is there but the file is not), each of those taken
    at the sha256 the card records (the card is itself signed); an absent file the card does not
    list stays missing. One rule for `show` (work tree) and the site (a commit's tree). Returns
    the result and the artifacts taken at the card's digest.
    """
    recorded = {a.path: a.sha256 for a in card.artifacts}
    unchecked = tuple(p for p in absent if p in recorded)
    taken = tuple(Resource(p, recorded[p]) for p in unchecked)
    manifest = Manifest(present.name, present.version, present.resources + taken, present.ignored)
    return Verifier(keys).verify(bundle, manifest, source), unchecked


def signature_status(reg: Registry, name: str, version: str) -> dict[str, Any]:
    """For `show`: "verified by KEY", "invalid: reason", "unverified: reason" or "unsigned".

    Nothing is downloaded: an artifact absent from the work tree counts at the
    sha256 its (signed) card records, and is listed under ``unchecked``.
    """
    path = reg.version_dir(name, version) / SIGNATURE_FILE
    status: dict[str, Any] = {"present": path.is_file(), "path": reg.rel(path) if path.is_file() else None,
                              "status": "unsigned", "key_id": None, "trusted_key": None, "unchecked": []}
    if not path.is_file():
        return status
    try:
        verified = verify_version(reg, name, version, fetch=False)
    except SignatureError as exc:
        status["status"] = f"invalid: {exc}"
    except RegistryError as exc:
        # No trusted key, an unreadable key file: nothing is known to be wrong with the signature.
        status["status"] = f"unverified: {exc}"
    else:
        status.update(status=f"verified by {verified.key_id[:16]} ({verified.key_source})",
                      key_id=verified.key_id, trusted_key=verified.key_source, unchecked=list(verified.unchecked))
    return status


# --- the files of a version ------------------------------------------------------------


def registered_folder(reg: Registry, name: str, version: str) -> None:
    reg.require_version(name, version)


def registered_card(reg: Registry, name: str, version: str) -> cards.Card:
    registered_folder(reg, name, version)
    return reg.card(name, version)


@contextlib.contextmanager
def version_files(reg: Registry, name: str, version: str) -> Iterator[Path]:
    """The version folder with every artifact present: the work tree itself, or a temporary copy."""
    folder = reg.version_dir(name, version)
    absent = [folder / f"{p}.dvc" for p in absent_artifacts(folder)]
    if not absent:
        yield folder
        return
    dirty = set(git.dirty_paths(reg.root))
    for pointer in absent:
        if reg.rel(pointer) in dirty:
            raise UsageError(
                f"{reg.rel(pointer)}: has uncommitted changes and {pointer.with_suffix('').name} "
                f"is not in the work tree; run `dvc checkout {reg.rel(pointer)}` first"
            )
    tmp = Path(tempfile.mkdtemp(prefix="registry-verify-"))
    try:
        copy = tmp / name / version
        shutil.copytree(folder, copy, symlinks=True, copy_function=link_or_copy)
        for pointer in absent:
            target = pointer.with_suffix("")
            storage.fetch_at(reg.root, reg.rel(target), "HEAD", copy / target.relative_to(folder))
        yield copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def absent_artifacts(folder: Path) -> list[str]:
    """DVC-tracked files of the folder (relative paths) whose pointer is there but the file is not."""
    return sorted(
        pointer.relative_to(folder).as_posix()[: -len(".dvc")] for pointer in folder.rglob("*.dvc")
        if pointer.is_file() and not os.path.lexists(pointer.with_suffix(""))
    )


def link_or_copy(src: str, dst: str) -> None:
    # Large artifacts already present are linked, not copied; nothing writes to the copy.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def relative_errors(reg: Registry, *folders: Path) -> Iterator[None]:
    """Name files as the registry does (models/NAME/VERSION/...), not by a temporary path."""
    try:
        yield
    except (SignatureError, SigningKeyError, StorageError, UsageError) as exc:
        message = str(exc)
        rel = reg.rel(folders[-1])
        for folder in folders:
            message = message.replace(str(folder), rel)
        if message == str(exc):
            raise
        raise type(exc)(message) from None
