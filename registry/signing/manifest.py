"""What a version's signature covers: the `Manifest` of a folder's signed files and their sha256.

Which files are signed is fixed here, not chosen by the signer: every regular
file of the folder except ``signature.json`` at its top, DVC pointers (``*.dvc``,
which only restate the artifacts) and ``.gitignore`` files (DVC writes them
beside what it tracks). The files left out are listed as ``ignore_paths`` only so
that ``model_signing verify`` needs no flags; our verification ignores that list
and refuses any bundle whose resources are not exactly the folder's signed
files. Symlinks and special files are refused when signing and verifying.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.errors import RegistryError
from registry.repo import storage

__all__ = ["HASH_ALGORITHM", "SIGNATURE_FILE", "Manifest", "Resource", "SignatureError", "hash_folder",
           "is_signed_file", "path_order", "root_digest"]

SIGNATURE_FILE = "signature.json"
HASH_ALGORITHM = "sha256"


class SignatureError(RegistryError):
    """A signature is missing, malformed, untrusted or does not match the files."""


@dataclass(frozen=True)
class Resource:
    """One signed file: its path relative to the version folder and its sha256."""

    name: str
    digest: str
    algorithm: str = HASH_ALGORITHM


def path_order(name: str) -> tuple[str, ...]:
    """model_signing's order of resources, as PurePosixPath sorts: part by part."""
    return tuple(name.split("/"))


@dataclass(frozen=True)
class Manifest:
    """A version and the digests of its signed files, in canonical order.

    ``ignored`` names the files present but left out by rule; it is written for
    model_signing's verifier and never trusted when we verify.
    """

    name: str
    version: str
    resources: tuple[Resource, ...]
    ignored: tuple[str, ...] = (SIGNATURE_FILE,)

    def __post_init__(self) -> None:
        names = [r.name for r in self.resources]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate resources in manifest: {names}")
        ordered = tuple(sorted(self.resources, key=lambda r: path_order(r.name)))
        object.__setattr__(self, "resources", ordered)
        object.__setattr__(self, "ignored", tuple(sorted(set(self.ignored), key=path_order)))

    @property
    def subject_name(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def subject_digest(self) -> str:
        return root_digest(self.resources)

    def digests(self) -> dict[str, str]:
        return {r.name: r.digest for r in self.resources}


def root_digest(resources: Iterable[Resource]) -> str:
    """The subject digest: sha256 over the resources' raw digests, in the order given."""
    root = hashlib.sha256()
    for resource in resources:
        root.update(bytes.fromhex(resource.digest))
    return root.hexdigest()


def is_signed_file(relative: str) -> bool:
    """Whether a file (path relative to the version folder, with /) is covered."""
    base = relative.rsplit("/", 1)[-1]
    return relative != SIGNATURE_FILE and not base.endswith(".dvc") and base != ".gitignore"


def _walk(folder: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            relative = f"{prefix}{entry.name}"
            if entry.is_symlink():
                raise SignatureError(
                    f"{entry.path}: is a symlink; signed folders hold regular files only"
                    " (copy the file in instead)"
                )
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path), f"{relative}/")
            elif entry.is_file(follow_symlinks=False):
                yield relative, Path(entry.path)
            else:
                raise SignatureError(f"{entry.path}: is not a regular file or folder")


def hash_folder(folder: Path, name: str, version: str) -> Manifest:
    """The manifest of a version folder as it is on disk now."""
    if not folder.is_dir():
        raise SignatureError(f"{folder}: no such version folder")
    resources: list[Resource] = []
    ignored: list[str] = [SIGNATURE_FILE]
    for relative, path in _walk(folder):
        if is_signed_file(relative):
            resources.append(Resource(relative, storage.file_digest(path)[0]))
        else:
            ignored.append(relative)
    return Manifest(name, version, tuple(resources), tuple(ignored))
