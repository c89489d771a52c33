"""The signature bundle: a Sigstore bundle with a DSSE envelope of an in-toto statement, signed and checked.

`Signer` turns a `Manifest` into a bundle; `Verifier` checks a bundle against one;
`sign_folder` and `verify_folder` do both for a version folder on disk. Bundles are byte
for byte what ``model_signing`` 1.1 (``model_signing sign key``) writes, so either
tool verifies what the other signed:

- bundle: ``{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {"publicKey": {"hint": KEY_ID}, "tlogEntries": []},
  "dsseEnvelope": {...}}``, KEY_ID = hex sha256 of the public key's PEM;
- DSSE envelope of an in-toto v1 statement, ECDSA (P-256, DER) over the DSSE PAE;
- predicate ``https://model_signing/signature/v1.0``: ``serialization`` (method
  ``files``, sha256, no symlinks, ``ignore_paths``) and ``resources``, one
  ``{name, algorithm, digest}`` per file, ordered by path;
- subject digest = sha256 over the resources' raw digests in that order.

The subject we write is ``NAME@VERSION``. ``model_signing`` names the folder
(``VERSION``) instead; both are accepted, because `verify_folder` also checks
that the signed ``card.yaml`` names NAME and VERSION, so a signature copied to
another version fails either way.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import RegistryError
from registry.files import yamlio
from registry.files.layout import CARD_FILE
from registry.signing.keys import SigningKeyError, check_curve, ecdsa, key_id
from registry.signing.manifest import (
    HASH_ALGORITHM,
    SIGNATURE_FILE,
    Manifest,
    Resource,
    SignatureError,
    hash_folder,
    is_signed_file,
    path_order,
    root_digest,
)

__all__ = ["BUNDLE_MEDIA_TYPE", "MAX_JSON_DEPTH", "PAYLOAD_TYPE", "PREDICATE_TYPE", "STATEMENT_TYPE", "Bundle",
           "Signer", "Verified", "Verifier", "pae", "read_json", "sign_folder", "signed_card_names", "statement",
           "verify_folder"]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_BUNDLE_KEYS = {"mediaType", "verificationMaterial", "dsseEnvelope"}
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# A bundle is six levels deep; anything far deeper is not one (and would exhaust the stack).
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


@dataclass(frozen=True)
class Bundle:
    """A Sigstore bundle holding one DSSE envelope signed by a public key."""

    key_id: str | None
    payload_type: str
    payload: bytes
    signature: bytes

    def to_json(self) -> str:
        public_key = {} if self.key_id is None else {"hint": self.key_id}
        data = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": public_key, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(self.payload).decode("ascii"),
                "payloadType": self.payload_type,
                "signatures": [
                    {"sig": base64.b64encode(self.signature).decode("ascii"), "keyid": ""}
                ],
            },
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> Bundle:
        data = read_json(text, source, "not a JSON signature bundle")
        if not isinstance(data, dict):
            raise SignatureError(f"{source}: not a signature bundle (expected a JSON object)")
        media_type = data.get("mediaType")
        if media_type != BUNDLE_MEDIA_TYPE:
            raise SignatureError(
                f"{source}: mediaType is {media_type!r}, expected {BUNDLE_MEDIA_TYPE!r}"
            )
        extra = sorted(set(data) - _BUNDLE_KEYS)
        if extra:
            raise SignatureError(f"{source}: unexpected top-level keys: {', '.join(extra)}")
        material = _object(data.get("verificationMaterial"), source, "verificationMaterial")
        public_key = _object(material.get("publicKey"), source, "verificationMaterial.publicKey")
        hint = public_key.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise SignatureError(f"{source}: verificationMaterial.publicKey.hint is not a string")
        envelope = _object(data.get("dsseEnvelope"), source, "dsseEnvelope")
        payload_type = envelope.get("payloadType")
        if not isinstance(payload_type, str):
            raise SignatureError(f"{source}: dsseEnvelope.payloadType is missing")
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise SignatureError(f"{source}: dsseEnvelope must hold exactly one signature")
        signature = _object(signatures[0], source, "dsseEnvelope.signatures[0]")
        return cls(
            key_id=hint or None,
            payload_type=payload_type,
            payload=_b64(envelope.get("payload"), source, "dsseEnvelope.payload"),
            signature=_b64(signature.get("sig"), source, "dsseEnvelope.signatures[0].sig"),
        )


def read_json(text: str | bytes, source: str, what: str) -> Any:
    """The one reader of signature data (the bundle and the statement it signs).

    Whatever the bytes, it returns parsed JSON or raises SignatureError naming the source:
    nesting past MAX_JSON_DEPTH and integers past Python's digit limit are refused before
    they can end the program with a RecursionError or a ValueError.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise SignatureError(f"{source}: {what}: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        detail = "a number has too many digits" if "integer string conversion" in str(e) else str(e)
        raise SignatureError(f"{source}: {what}: {detail}") from None


def _object(value: object, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SignatureError(f"{source}: {where} is missing or not an object")
    return value


def _b64(value: object, source: str, where: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{source}: {where} is missing")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise SignatureError(f"{source}: {where} is not base64") from None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature is made over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def statement(manifest: Manifest) -> dict[str, Any]:
    """The in-toto statement for a manifest, as model_signing writes it."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": manifest.subject_name, "digest": {HASH_ALGORITHM: manifest.subject_digest}}
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": HASH_ALGORITHM,
                "allow_symlinks": False,
                "ignore_paths": list(manifest.ignored),
            },
            "resources": [
                {"name": r.name, "algorithm": r.algorithm, "digest": r.digest}
                for r in manifest.resources
            ],
        },
    }


# --- signing and verifying -------------------------------------------------------


class Signer:
    """Signs manifests with one private key."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        check_curve(private_key.public_key(), "signing key")
        self._private_key = private_key
        self.key_id = key_id(private_key.public_key())

    def sign(self, manifest: Manifest) -> Bundle:
        payload = json.dumps(statement(manifest), sort_keys=True, separators=(",", ":")).encode()
        signature = self._private_key.sign(
            pae(PAYLOAD_TYPE, payload), ecdsa(self._private_key.public_key())
        )
        return Bundle(self.key_id, PAYLOAD_TYPE, payload, signature)


@dataclass(frozen=True)
class Verified:
    """What a good signature vouches for."""

    subject: str
    key_id: str
    files: tuple[str, ...]


class Verifier:
    """Checks bundles against manifests, trusting one or more public keys."""

    def __init__(self, trusted_keys: Sequence[ec.EllipticCurvePublicKey]) -> None:
        if not trusted_keys:
            raise SigningKeyError("no trusted public keys given")
        self._keys = {key_id(k): k for k in trusted_keys}

    def verify(self, bundle: Bundle, manifest: Manifest, source: str = SIGNATURE_FILE) -> Verified:
        signer = self._check_signature(bundle, source)
        if bundle.payload_type != PAYLOAD_TYPE:
            raise SignatureError(
                f"{source}: payloadType is {bundle.payload_type!r}, expected {PAYLOAD_TYPE!r}"
            )
        subject, resources = _parse_statement(bundle.payload, source)
        if subject not in (manifest.subject_name, manifest.version):
            raise SignatureError(
                f"{source}: signature was made for {subject}, not {manifest.subject_name}"
            )
        if CARD_FILE not in (r.name for r in resources):
            raise SignatureError(
                f"{source}: {CARD_FILE} is not signed; the signature does not name the version"
            )
        _compare(resources, manifest, source)
        return Verified(subject, signer, tuple(r.name for r in resources))

    def _check_signature(self, bundle: Bundle, source: str) -> str:
        if bundle.key_id is not None:
            key = self._keys.get(bundle.key_id)
            if key is None:
                raise SignatureError(
                    f"{source}: signed by unknown key {bundle.key_id}"
                    f" (not among the {len(self._keys)} trusted key(s))"
                )
            candidates = {bundle.key_id: key}
        else:
            candidates = self._keys
        signed = pae(bundle.payload_type, bundle.payload)
        for hint, candidate in candidates.items():
            try:
                candidate.verify(bundle.signature, signed, ecdsa(candidate))
            except InvalidSignature:
                continue
            return hint
        raise SignatureError(
            f"{source}: bad signature: the signed statement was altered or signed by another key"
        )


def _parse_statement(payload: bytes, source: str) -> tuple[str, tuple[Resource, ...]]:
    data = read_json(payload, source, "the signed payload is not JSON")
    if not isinstance(data, dict):
        raise SignatureError(f"{source}: the signed payload is not an in-toto statement")
    if data.get("_type") != STATEMENT_TYPE:
        raise SignatureError(
            f"{source}: statement _type is {data.get('_type')!r}, expected {STATEMENT_TYPE!r}"
        )
    if data.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(
            f"{source}: predicateType is {data.get('predicateType')!r}, expected {PREDICATE_TYPE!r}"
        )
    subjects = data.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise SignatureError(f"{source}: statement must have exactly one subject")
    subject = _object(subjects[0], source, "subject[0]")
    name = subject.get("name")
    subject_digest = _object(subject.get("digest"), source, "subject[0].digest").get(HASH_ALGORITHM)
    if not isinstance(name, str):
        raise SignatureError(f"{source}: subject has no name")
    predicate = _object(data.get("predicate"), source, "predicate")
    serialization_args = _object(predicate.get("serialization"), source, "predicate.serialization")
    method, hash_type = serialization_args.get("method"), serialization_args.get("hash_type")
    if (method, hash_type) != ("files", HASH_ALGORITHM):
        raise SignatureError(
            f"{source}: serialization is {method}/{hash_type}, only files/sha256 is supported"
        )
    raw = predicate.get("resources")
    if not isinstance(raw, list):
        raise SignatureError(f"{source}: predicate.resources is missing")
    resources = tuple(_resource(item, source) for item in raw)
    names = [r.name for r in resources]
    if len(set(names)) != len(names):
        raise SignatureError(f"{source}: a file is listed twice in the signature")
    # Recomputed in the bundle's own order, as model_signing does.
    if subject_digest != root_digest(resources):
        raise SignatureError(f"{source}: subject digest does not match the signed resources")
    return name, resources


def _resource(item: object, source: str) -> Resource:
    data = _object(item, source, "resource")
    name, algorithm, digest = data.get("name"), data.get("algorithm"), data.get("digest")
    if not isinstance(name, str) or not isinstance(digest, str):
        raise SignatureError(f"{source}: a resource lacks name or digest")
    if algorithm != HASH_ALGORITHM or not _HEX_DIGEST.fullmatch(digest):
        raise SignatureError(
            f"{source}: {name}: expected a sha256 hex digest, got {algorithm}:{digest}"
        )
    return Resource(name, digest)


def _compare(signed: Sequence[Resource], manifest: Manifest, source: str) -> None:
    expected = {r.name: r.digest for r in signed}
    actual = manifest.digests()
    unsigned = sorted(set(actual) - set(expected), key=path_order)
    absent = sorted(set(expected) - set(actual), key=path_order)
    excluded = [name for name in absent if not is_signed_file(name)]
    missing = [name for name in absent if is_signed_file(name)]
    if absent or unsigned:
        parts = []
        if unsigned:
            parts.append(f"not signed: {', '.join(unsigned)}")
        if missing:
            parts.append(f"signed but missing: {', '.join(missing)}")
        if excluded:
            parts.append(f"signs files that are never signed here: {', '.join(excluded)}")
        raise SignatureError(
            f"{source}: the signature does not cover exactly the folder's files ({'; '.join(parts)})"
        )
    changed = [
        f"{name}: sha256 is {actual[name]}, signed {expected[name]}"
        for name in sorted(expected, key=path_order)
        if expected[name] != actual[name]
    ]
    if changed:
        raise SignatureError(f"{source}: file changed since signing: " + "; ".join(changed))


def sign_folder(
    folder: Path, name: str, version: str, private_key: ec.EllipticCurvePrivateKey
) -> Path:
    """Sign a version folder; writes and returns ``folder/signature.json``."""
    manifest = hash_folder(folder, name, version)
    if CARD_FILE not in manifest.digests():
        raise SignatureError(f"{folder}: has no {CARD_FILE}; write the card before signing")
    bundle = Signer(private_key).sign(manifest)
    path = folder / SIGNATURE_FILE
    yamlio.atomic_write(path, bundle.to_json())
    return path


def verify_folder(
    folder: Path,
    name: str,
    version: str,
    trusted_keys: Sequence[ec.EllipticCurvePublicKey],
    signature: Path | None = None,
) -> Verified:
    """Check a version folder against its signature and the card it signs."""
    path = signature or folder / SIGNATURE_FILE
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{path}: not signed (no signature file)") from None
    except OSError as e:
        raise SignatureError(f"{path}: cannot read signature: {e.strerror}") from None
    bundle = Bundle.from_json(text, str(path))
    manifest = hash_folder(folder, name, version)
    verified = Verifier(trusted_keys).verify(bundle, manifest, str(path))
    _check_card(folder / CARD_FILE, manifest.digests()[CARD_FILE], name, version)
    return verified


def _check_card(path: Path, signed_digest: str, name: str, version: str) -> None:
    # Parse the very bytes whose digest matched, not a second read of the file.
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != signed_digest:
        raise SignatureError(f"{path}: changed while being verified")
    said = signed_card_names(data)
    if said is None:
        raise SignatureError(f"{path}: signed card is not valid YAML")
    if said != f"{name}@{version}":
        raise SignatureError(f"{path}: signed card names {said}, not {name}@{version}")


def signed_card_names(data: bytes) -> str | None:
    """``name@version`` as the signed card's bytes say, or None when they are not YAML.

    Through the registry's safe YAML reader: a card may be anything an attacker wrote
    (deep nesting, integers too long to print), and reading it must not crash a verifier.
    """
    try:
        card = yamlio.loads(data, CARD_FILE)
    except RegistryError:
        return None
    named = card if isinstance(card, Mapping) else {}
    return f"{named.get('name')}@{named.get('version')}"
