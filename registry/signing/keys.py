"""`registry keys generate`, and reading a signing key with its passphrase from the environment.

Passphrases never travel on the command line (where `ps` and shell history would
show them): a command reads one from the environment variable named by
``--passphrase-env VAR``, or from ``REGISTRY_KEY_PASSPHRASE`` when that is set.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.errors import UsageError
from registry.repo import git
from registry.signing import oms as signing
from registry.signing.oms import SigningKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

PASSPHRASE_ENV = "REGISTRY_KEY_PASSPHRASE"
DEFAULT_PREFIX = "registry-signing"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class GeneratedKeys:
    private_key: Path
    public_key: Path
    key_id: str
    encrypted: bool
    warnings: tuple[str, ...] = ()


def passphrase(env_var: str | None) -> bytes | None:
    """The passphrase from ``--passphrase-env VAR`` (which must be set), else $REGISTRY_KEY_PASSPHRASE."""
    if env_var is None:
        value = os.environ.get(PASSPHRASE_ENV)
        return value.encode() if value else None
    if not _ENV_NAME.fullmatch(env_var):
        raise UsageError(f"--passphrase-env {env_var!r}: not an environment variable name")
    value = os.environ.get(env_var)
    if not value:
        raise UsageError(
            f"--passphrase-env {env_var}: the environment variable {env_var} is not set or empty; "
            "export it with the key's passphrase"
        )
    return value.encode()


def generate(out: Path, secret: bytes | None) -> GeneratedKeys:
    """A new ECDSA P-256 pair: OUT.key (PKCS8 PEM, mode 0600, encrypted if secret) and OUT.pub."""
    if str(out).endswith(("/", os.sep)) or out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file prefix such as {out / 'release'}")
    parent = out.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: the folder {parent} does not exist; create it first")
    warnings = []
    top = git.toplevel(parent)
    if top is not None:
        warnings.append(
            f"the private key is inside the git work tree {top}; never commit it "
            "(commit only the .pub file)"
        )
    key_path, pub_path = signing.generate_keypair(out, secret)
    public = signing.load_public_keys(pub_path)[0]
    return GeneratedKeys(key_path, pub_path, signing.key_id(public), bool(secret), tuple(warnings))


def load_private_key(path: Path, secret: bytes | None, option: str = "--key") -> ec.EllipticCurvePrivateKey:
    """The signing key at path; says how to give the passphrase when it is encrypted."""
    if not path.exists():
        raise UsageError(f"{option} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give the private key file (PREFIX.key)")
    try:
        head = path.read_bytes()[:4096]
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read key file: {exc.strerror}") from None
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in head
    if encrypted and secret is None:
        other = " (or name another one with --passphrase-env VAR)" if option == "--key" else ""
        raise SigningKeyError(
            f"{path}: the key is encrypted; put its passphrase in the environment variable "
            f"{PASSPHRASE_ENV}{other}"
        )
    if b"-----BEGIN PUBLIC KEY-----" in head:
        raise SigningKeyError(f"{path}: is a public key; sign with the private key (PREFIX.key)")
    # A passphrase set in the environment for other keys does not stop an unencrypted one.
    return signing.load_private_key(path, secret if encrypted else None)
