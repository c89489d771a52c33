"""Signing keys: ECDSA key files (generate, read, key ids) and `registry keys generate` with its passphrases.

Keys are ECDSA on the curves model_signing accepts (P-256, the default; P-384, P-521),
in PEM files: PREFIX.key (PKCS8, mode 0600, encrypted with a passphrase when given)
and PREFIX.pub (one or more public keys). A key's id is the hex sha256 of its public
PEM, the hint a bundle carries.

Passphrases never travel on the command line (where `ps` and shell history would
show them): a command reads one from the environment variable named by
``--passphrase-env VAR``, or from ``REGISTRY_KEY_PASSPHRASE`` when that is set.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import RegistryError, UsageError
from registry.files.fsutil import publish_new
from registry.repo import git

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
# The curves model_signing accepts, each with the hash it pairs with.
_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
PASSPHRASE_ENV = "REGISTRY_KEY_PASSPHRASE"
DEFAULT_PREFIX = "registry-signing"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SigningKeyError(RegistryError):
    """A key file is missing, unreadable, of the wrong kind or needs a passphrase."""


# --- key files -----------------------------------------------------------------------


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The bundle's key hint: hex sha256 of the SubjectPublicKeyInfo PEM."""
    return hashlib.sha256(_public_pem(public_key)).hexdigest()


def _public_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ecdsa(public_key: ec.EllipticCurvePublicKey) -> ec.ECDSA:
    """ECDSA with the hash model_signing pairs with the key's curve."""
    return ec.ECDSA(_CURVE_HASHES[public_key.curve.name]())


def check_curve(public_key: object, source: str) -> ec.EllipticCurvePublicKey:
    """public_key, when it is an elliptic-curve key on a curve model_signing accepts."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SigningKeyError(f"{source}: not an elliptic-curve key (use P-256)")
    if public_key.curve.name not in _CURVE_HASHES:
        raise SigningKeyError(
            f"{source}: curve {public_key.curve.name} is not supported (use P-256)"
        )
    return public_key


def generate_keypair(out_prefix: Path | str, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write a new P-256 key pair to PREFIX.key (0600, PKCS8) and PREFIX.pub.

    Refuses to overwrite either file.
    """
    prefix = Path(out_prefix)
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise SigningKeyError(f"{path}: already exists; choose another prefix or remove it")
    private_key = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    _write_new(key_path, private_pem, 0o600)
    try:
        _write_new(pub_path, _public_pem(private_key.public_key()), 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, pub_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        publish_new(path, data, mode)
    except FileExistsError:
        raise SigningKeyError(f"{path}: already exists; choose another prefix or remove it") from None


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot read key file: {e.strerror}") from None


def read_private_key(path: Path, passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """The P-256/384/521 private key in a PEM file, decrypted with passphrase when given."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, passphrase or None)
    except TypeError:
        if passphrase:
            raise SigningKeyError(f"{path}: key is not encrypted; give no passphrase") from None
        raise SigningKeyError(f"{path}: key is encrypted; give its passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        if passphrase and b"ENCRYPTED" in data:
            raise SigningKeyError(f"{path}: wrong passphrase") from None
        raise SigningKeyError(f"{path}: not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(f"{path}: not an elliptic-curve key (use P-256)")
    check_curve(key.public_key(), str(path))
    return key


def load_public_keys(path: Path) -> tuple[ec.EllipticCurvePublicKey, ...]:
    """Every PEM public key in a file (one or more, concatenated)."""
    return parse_public_keys(_read_key_file(path), str(path))


def keys_in_commit(paths: Sequence[str], read: Callable[[str], bytes | None],
                   commit: str) -> tuple[list[ec.EllipticCurvePublicKey], list[str]]:
    """The public keys registry.yaml's trusted_keys name, each file read from a commit's tree
    by `read` (None: not there), and a problem for each file missing or not a key file.
    `commit` names the commit in those problems ("the base commit")."""
    keys: list[ec.EllipticCurvePublicKey] = []
    problems = []
    for path in paths:
        data = read(path)
        if data is None:
            problems.append(f"registry.yaml trusts {path}, which is not in {commit}")
            continue
        try:
            keys += parse_public_keys(data, path)
        except RegistryError as exc:
            problems.append(str(exc))
    return keys, problems


def parse_public_keys(data: bytes, path: str) -> tuple[ec.EllipticCurvePublicKey, ...]:
    """Every PEM public key in data (e.g. a key file read from a git tree)."""
    blocks = list(_PEM_BLOCK.finditer(data))
    if not blocks:
        raise SigningKeyError(f"{path}: no PEM public key found")
    keys: list[ec.EllipticCurvePublicKey] = []
    for number, block in enumerate(blocks, start=1):
        where = f"{path}: key {number}"
        label = block.group(1).decode()
        if label != "PUBLIC KEY":
            raise SigningKeyError(f"{where}: is a {label}, expected a PUBLIC KEY")
        try:
            key = serialization.load_pem_public_key(block.group(0))
        except (ValueError, UnsupportedAlgorithm) as e:
            raise SigningKeyError(f"{where}: unreadable public key: {e}") from None
        keys.append(check_curve(key, where))
    return tuple(keys)


# --- `registry keys generate` and the passphrase ------------------------------------


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
    key_path, pub_path = generate_keypair(out, secret)
    public = load_public_keys(pub_path)[0]
    return GeneratedKeys(key_path, pub_path, key_id(public), bool(secret), tuple(warnings))


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
    return read_private_key(path, secret if encrypted else None)
