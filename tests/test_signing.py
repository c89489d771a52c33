"""Signing a version folder in the OMS format, and checking it both ways with model_signing."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from registry.errors import RegistryError
from registry.signing.bundle import PAYLOAD_TYPE, Verified, pae, sign_folder, verify_folder
from registry.signing.keys import (
    SigningKeyError,
    generate_keypair,
    load_public_keys,
    read_private_key,
)
from registry.signing.manifest import Manifest, Resource, SignatureError

NAME, VERSION = "demo", "1.0.0"
WEIGHTS = bytes(range(256)) * 5000  # over 1 MiB: more than one read chunk

needs_model_signing = pytest.mark.skipif(
    importlib.util.find_spec("model_signing") is None,
    reason="model_signing (test-only: pip install model-signing pyopenssl) is not installed",
)


def make_version(root: Path, name: str = NAME, version: str = VERSION) -> Path:
    """A version folder as `register` leaves it: card, artifacts, DVC pointer, .gitignore."""
    folder = root / "models" / name / version
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text(f"name: {name}\nversion: {version}\ndescription: test\n")
    (folder / "weights.bin").write_bytes(WEIGHTS)
    (folder / "weights.bin.dvc").write_text("outs:\n- md5: 0\n  path: weights.bin\n")
    (folder / ".gitignore").write_text("/weights.bin\n")
    (folder / "config.json").write_text('{"layers": 2}\n')
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "keys").mkdir()
    return generate_keypair(tmp_path / "keys" / "alice", None)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_version(tmp_path)


def sign(folder: Path, key_path: Path, name: str = NAME, version: str = VERSION) -> Path:
    return sign_folder(folder, name, version, read_private_key(key_path))


def verify(
    folder: Path, pub_path: Path, name: str = NAME, version: str = VERSION, **kw: Any
) -> Verified:
    return verify_folder(folder, name, version, load_public_keys(pub_path), **kw)


def bundle_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "signature.json").read_text())
    return data


def payload_of(bundle: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return data


def resign(folder: Path, key_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the statement and sign it again properly: only our checks can refuse it."""
    bundle = bundle_of(folder)
    statement = payload_of(bundle)
    change(statement)
    payload = json.dumps(statement).encode()
    key = read_private_key(key_path)
    sig = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    (folder / "signature.json").write_text(json.dumps(bundle))


def refused(folder: Path, pub_path: Path, name: str = NAME, version: str = VERSION) -> str:
    with pytest.raises(SignatureError) as info:
        verify(folder, pub_path, name, version)
    assert isinstance(info.value, RegistryError)
    return str(info.value)


# --- the format ----------------------------------------------------------------


def test_round_trip(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    path = sign(folder, key_path)
    assert path == folder / "signature.json"
    verified = verify(folder, pub_path)
    assert verified.subject == "demo@1.0.0"
    assert verified.key_id == hashlib.sha256(pub_path.read_bytes()).hexdigest()
    assert verified.files == ("card.yaml", "config.json", "tokenizer/vocab.txt", "weights.bin")


def test_bundle_is_the_oms_format(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    bundle = bundle_of(folder)
    assert set(bundle) == {"mediaType", "verificationMaterial", "dsseEnvelope"}
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256(pub_path.read_bytes()).hexdigest()},
        "tlogEntries": [],
    }
    envelope = bundle["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    decode_dss_signature(base64.b64decode(envelope["signatures"][0]["sig"]))  # DER or raises

    statement = payload_of(bundle)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    predicate = statement["predicate"]
    assert predicate["serialization"] == {
        "method": "files",
        "hash_type": "sha256",
        "allow_symlinks": False,
        "ignore_paths": [".gitignore", "signature.json", "weights.bin.dvc"],
    }
    expected = [
        ("card.yaml", (folder / "card.yaml").read_bytes()),
        ("config.json", (folder / "config.json").read_bytes()),
        ("tokenizer/vocab.txt", (folder / "tokenizer" / "vocab.txt").read_bytes()),
        ("weights.bin", WEIGHTS),
    ]
    assert predicate["resources"] == [
        {"name": n, "algorithm": "sha256", "digest": hashlib.sha256(b).hexdigest()}
        for n, b in expected
    ]
    root = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for _, b in expected)).hexdigest()
    assert statement["subject"] == [{"name": "demo@1.0.0", "digest": {"sha256": root}}]


def test_resources_ordered_by_path_parts_like_model_signing() -> None:
    manifest = Manifest(
        "m",
        "1.0.0",
        (
            Resource("a-b/x", "00" * 32),
            Resource("a/b", "11" * 32),
        ),
    )
    # "a-b/x" < "a/b" as strings, but model_signing compares path parts: "a" < "a-b".
    assert [r.name for r in manifest.resources] == ["a/b", "a-b/x"]


# --- refusals --------------------------------------------------------------------


def test_flipped_byte_in_artifact_names_the_file(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    data = bytearray(WEIGHTS)
    data[700_000] ^= 1
    (folder / "weights.bin").write_bytes(bytes(data))
    message = refused(folder, pub_path)
    assert "weights.bin: sha256 is " + hashlib.sha256(data).hexdigest() in message
    assert "signed " + hashlib.sha256(WEIGHTS).hexdigest() in message
    assert "config.json" not in message


def test_wrong_key_refused(folder: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    key_path, _ = keys
    _, other_pub = generate_keypair(tmp_path / "mallory", None)
    sign(folder, key_path)
    assert "signed by unknown key" in refused(folder, other_pub)


def test_key_hint_forged_to_a_trusted_key_is_a_bad_signature(
    folder: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    _, pub_path = keys
    mallory_key, _ = generate_keypair(tmp_path / "mallory", None)
    sign(folder, mallory_key)
    bundle = bundle_of(folder)
    bundle["verificationMaterial"]["publicKey"]["hint"] = hashlib.sha256(
        pub_path.read_bytes()
    ).hexdigest()
    (folder / "signature.json").write_text(json.dumps(bundle))
    assert "bad signature" in refused(folder, pub_path)


def test_signature_copied_to_another_version_refused(
    folder: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    other = make_version(tmp_path, version="1.1.0")
    shutil.copy(folder / "signature.json", other / "signature.json")
    message = refused(other, pub_path, version="1.1.0")
    assert "signature was made for demo@1.0.0, not demo@1.1.0" in message


def test_extra_file_refused(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    (folder / "tokenizer" / "merges.txt").write_text("x\n")
    assert "not signed: tokenizer/merges.txt" in refused(folder, pub_path)


def test_removed_file_refused(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    (folder / "config.json").unlink()
    assert "signed but missing: config.json" in refused(folder, pub_path)


def test_dvc_pointer_and_gitignore_changes_do_not_matter(
    folder: Path, keys: tuple[Path, Path]
) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    (folder / "weights.bin.dvc").write_text("outs:\n- md5: 1\n  path: weights.bin\n")
    (folder / ".gitignore").unlink()
    (folder / "more.bin.dvc").write_text("outs: []\n")
    assert verify(folder, pub_path).subject == "demo@1.0.0"


def test_tampered_payload_refused(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    (folder / "config.json").write_text('{"layers": 3}\n')
    bundle = bundle_of(folder)
    statement = payload_of(bundle)
    for resource in statement["predicate"]["resources"]:
        if resource["name"] == "config.json":
            resource["digest"] = hashlib.sha256(b'{"layers": 3}\n').hexdigest()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / "signature.json").write_text(json.dumps(bundle))
    assert "bad signature" in refused(folder, pub_path)


def test_signer_chosen_ignore_list_cannot_drop_files(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)

    def drop(name: str) -> Callable[[dict[str, Any]], None]:
        def change(statement: dict[str, Any]) -> None:
            predicate = statement["predicate"]
            predicate["serialization"]["ignore_paths"].append(name)
            predicate["resources"] = [r for r in predicate["resources"] if r["name"] != name]
            digests = b"".join(bytes.fromhex(r["digest"]) for r in predicate["resources"])
            statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(digests).hexdigest()

        return change

    resign(folder, key_path, drop("weights.bin"))
    assert "not signed: weights.bin" in refused(folder, pub_path)
    sign(folder, key_path)
    resign(folder, key_path, drop("card.yaml"))
    assert "card.yaml is not signed" in refused(folder, pub_path)


def test_wrong_media_type_refused(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    bundle = bundle_of(folder)
    bundle["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2"
    (folder / "signature.json").write_text(json.dumps(bundle))
    assert "mediaType is 'application/vnd.dev.sigstore.bundle+json;version=0.2'" in refused(
        folder, pub_path
    )


def test_wrong_predicate_type_refused(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    resign(folder, key_path, lambda s: s.update(predicateType="https://model_signing/Digests/v0.1"))
    assert "predicateType is 'https://model_signing/Digests/v0.1'" in refused(folder, pub_path)


def test_subject_digest_must_match_resources(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    resign(folder, key_path, lambda s: s["subject"][0]["digest"].update(sha256="0" * 64))
    assert "subject digest does not match" in refused(folder, pub_path)


def test_folder_named_subject_relies_on_the_signed_card(
    folder: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    resign(
        folder, key_path, lambda s: s["subject"][0].update(name="1.0.0")
    )  # as model_signing names it
    assert verify(folder, pub_path).subject == "1.0.0"
    # Same version number under another model: only the card tells them apart.
    elsewhere = tmp_path / "models" / "other" / "1.0.0"
    shutil.copytree(folder, elsewhere)
    assert "signed card names demo@1.0.0, not other@1.0.0" in refused(
        elsewhere, pub_path, name="other"
    )


def test_symlink_refused(folder: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    (tmp_path / "outside.txt").write_text("x")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    assert "link.txt: is a symlink" in refused(folder, pub_path)
    with pytest.raises(SignatureError, match="is a symlink"):
        sign(folder, key_path)


def test_missing_signature(folder: Path, keys: tuple[Path, Path]) -> None:
    assert "not signed (no signature file)" in refused(folder, keys[1])


# --- keys ------------------------------------------------------------------------


def test_private_key_mode_0600(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "k", None)
    assert (key_path.name, pub_path.name) == ("k.key", "k.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]  # no temp files left


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    key_path, _ = generate_keypair(tmp_path / "k", None)
    before = key_path.read_bytes()
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_keypair(tmp_path / "k", None)
    assert key_path.read_bytes() == before


def test_encrypted_key_needs_passphrase(folder: Path, tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "k", b"s3cret")
    assert key_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(SigningKeyError, match="key is encrypted; give its passphrase"):
        read_private_key(key_path)
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        read_private_key(key_path, b"guess")
    sign_folder(folder, NAME, VERSION, read_private_key(key_path, b"s3cret"))
    assert verify(folder, pub_path).subject == "demo@1.0.0"


def test_trusted_keys_file_with_several_pems(folder: Path, tmp_path: Path) -> None:
    _, alice_pub = generate_keypair(tmp_path / "alice", None)
    bob_key, bob_pub = generate_keypair(tmp_path / "bob", None)
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(b"# release team\n" + alice_pub.read_bytes() + b"\n" + bob_pub.read_bytes())
    keys = load_public_keys(trusted)
    assert len(keys) == 2
    sign(folder, bob_key)
    assert (
        verify_folder(folder, NAME, VERSION, keys).key_id
        == hashlib.sha256(bob_pub.read_bytes()).hexdigest()
    )
    assert "signed by unknown key" in refused(folder, alice_pub)


def test_trusted_keys_file_refuses_private_keys_and_junk(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "k", None)
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(pub_path.read_bytes() + key_path.read_bytes())
    with pytest.raises(SigningKeyError, match="key 2: is a PRIVATE KEY, expected a PUBLIC KEY"):
        load_public_keys(mixed)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    with pytest.raises(SigningKeyError, match="no PEM public key found"):
        load_public_keys(junk)


# --- interop with model_signing 1.1 ----------------------------------------------


def model_signing_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


@needs_model_signing
def test_model_signing_verifies_what_we_sign(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    sign(folder, key_path)
    signature = folder / "signature.json"
    # No --ignore-paths: our bundle lists signature.json, *.dvc and .gitignore itself.
    done = model_signing_cli(
        "verify", "key", folder, "--signature", signature, "--public_key", pub_path
    )
    assert done.returncode == 0, done.stderr
    assert "Verification succeeded" in done.stdout

    (folder / "config.json").write_text('{"layers": 3}\n')
    done = model_signing_cli(
        "verify", "key", folder, "--signature", signature, "--public_key", pub_path
    )
    assert done.returncode == 1
    assert "Hash mismatch for 'config.json'" in done.stderr


@needs_model_signing
def test_we_verify_what_model_signing_signs(folder: Path, keys: tuple[Path, Path]) -> None:
    key_path, pub_path = keys
    signature = folder / "signature.json"
    done = model_signing_cli(
        "sign",
        "key",
        folder,
        "--private_key",
        key_path,
        "--signature",
        signature,
        "--ignore-paths",
        folder / "weights.bin.dvc",
    )
    assert done.returncode == 0, done.stderr
    statement = payload_of(bundle_of(folder))
    assert statement["subject"][0]["name"] == "1.0.0"  # model_signing names the folder
    # It leaves out the signature file and git paths (.gitignore) by itself.
    assert {"signature.json", ".gitignore", "weights.bin.dvc"} <= set(
        statement["predicate"]["serialization"]["ignore_paths"]
    )
    verified = verify(folder, pub_path)
    assert verified.subject == "1.0.0"
    assert verified.files == ("card.yaml", "config.json", "tokenizer/vocab.txt", "weights.bin")

    (folder / "weights.bin").write_bytes(WEIGHTS[:-1])
    assert "weights.bin: sha256 is" in refused(folder, pub_path)


@needs_model_signing
def test_model_signing_bundle_that_signs_dvc_pointers_is_refused(
    folder: Path, keys: tuple[Path, Path]
) -> None:
    key_path, pub_path = keys
    done = model_signing_cli(
        "sign", "key", folder, "--private_key", key_path, "--signature", folder / "signature.json"
    )
    assert done.returncode == 0, done.stderr
    assert "signs files that are never signed here: weights.bin.dvc" in refused(folder, pub_path)


@needs_model_signing
def test_model_signing_bundle_ignoring_an_artifact_is_refused(
    folder: Path, keys: tuple[Path, Path]
) -> None:
    key_path, pub_path = keys
    done = model_signing_cli(
        "sign",
        "key",
        folder,
        "--private_key",
        key_path,
        "--signature",
        folder / "signature.json",
        "--ignore-paths",
        folder / "weights.bin.dvc",
        "--ignore-paths",
        folder / "config.json",
    )
    assert done.returncode == 0, done.stderr
    assert "not signed: config.json" in refused(folder, pub_path)
