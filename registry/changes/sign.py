"""`registry sign` and `registry verify`: a registered version's signature, made and checked.

Both read the version folder as it is checked out. A DVC-tracked artifact absent
from the work tree (a clone that never ran `dvc pull`) is fetched through DVC
(cache, then remote) into a temporary copy of the folder: verifying never changes
the work tree, and signing only adds ``signature.json``.

Signing refuses a folder that is not exactly what its card describes (an extra
file, a missing one, an artifact whose sha256 differs from the card's): a
signature vouches for the registered version, not for whatever is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.changes import branches
from registry.errors import UsageError
from registry.files import cards, yamlio
from registry.repo import git
from registry.repo.registry import Registry
from registry.signing import keys
from registry.signing.bundle import Signer
from registry.signing.manifest import SIGNATURE_FILE, hash_folder

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


from registry.signing.verify import (
    check_against_card,
    registered_card,
    relative_errors,
    version_files,
)


@dataclass(frozen=True)
class Signed:
    name: str
    version: str
    branch: str | None
    commit: str
    key_id: str
    files: tuple[str, ...]
    replaced: bool


# --- signing ------------------------------------------------------------------------


def sign_version(
    reg: Registry,
    name: str,
    version: str,
    key_path: Path,
    *,
    passphrase: bytes | None = None,
    force: bool = False,
    no_branch: bool = False,
    push: bool = False,
) -> Signed:
    """Sign a committed version in a commit of its own, on ``sign/NAME/VERSION`` or the current branch."""
    card = registered_card(reg, name, version)
    folder = reg.version_dir(name, version)
    rel = reg.rel(folder)
    dirty = git.dirty_paths(reg.root)
    if dirty:
        raise UsageError(
            f"the registry has uncommitted changes ({', '.join(dirty[:3])}); commit or stash them first"
        )
    if not git.has_object(reg.root, f"HEAD:{rel}/{cards.CARD_FILE}"):
        raise UsageError(f"{name}@{version} is not committed on the current branch; commit it before signing")
    signature_path = folder / SIGNATURE_FILE
    previous = signature_path.read_bytes() if signature_path.is_file() else None
    if previous is not None and not force:
        raise UsageError(
            f"{name}@{version} is already signed ({rel}/{SIGNATURE_FILE}); "
            "give --force to replace its signature"
        )
    branch = None if no_branch else f"sign/{name}/{version}"
    if branch and git.rev_parse(f"refs/heads/{branch}", reg.root):
        raise UsageError(f"branch {branch} already exists; delete it or finish that signing first")
    private_key = keys.load_private_key(key_path, passphrase)
    # Everything is hashed and checked before anything changes: a refusal leaves no trace.
    with version_files(reg, name, version) as files, relative_errors(reg, files, folder):
        manifest = hash_folder(files, name, version)
    check_against_card(manifest, card, rel)
    bundle = Signer(private_key).sign(manifest)

    def restore() -> None:
        if previous is None:
            signature_path.unlink(missing_ok=True)
        else:
            yamlio.atomic_write(signature_path, previous)

    with branches.change_on_branch(reg.root, branch, restore):
        yamlio.atomic_write(signature_path, bundle.to_json())
        verb = "Re-sign" if previous is not None else "Sign"
        message = f"{verb} {name}@{version}\n\nSigned-with-key: {bundle.key_id}\n"
        commit = git.commit_paths(reg.root, [f"{rel}/{SIGNATURE_FILE}"], message)
    if push:
        branches.push(reg.root, branch, "The signature")
    files_signed = tuple(r.name for r in manifest.resources)
    return Signed(name, version, branch, commit, bundle.key_id or "", files_signed, previous is not None)


def sign_new_version(folder: Path, card: cards.Card, private_key: ec.EllipticCurvePrivateKey) -> str:
    """Sign a folder `register` has just written; returns the key id. The caller commits it."""
    manifest = hash_folder(folder, card.name, card.version)
    check_against_card(manifest, card, str(folder))
    bundle = Signer(private_key).sign(manifest)
    yamlio.atomic_write(folder / SIGNATURE_FILE, bundle.to_json())
    return bundle.key_id or ""


