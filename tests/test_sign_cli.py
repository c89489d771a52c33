"""`registry keys generate`, `register --sign-key`, `registry sign`, `registry verify` and
the signature status of `registry show`, through the real CLI on real git and DVC.

Every refusal asserts the exit code, the message and that nothing changed on disk.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from registry.signing import keys as signing_keys
from tests.conftest import Result, git, index_tree, merge, new_weights, snapshot

NAME = "credit-approval"
V1 = f"models/{NAME}/1.0.0"
V2 = f"models/{NAME}/1.1.0"

needs_model_signing = pytest.mark.skipif(
    importlib.util.find_spec("model_signing") is None,
    reason="model_signing (test-only: pip install model-signing pyopenssl) is not installed",
)


@dataclass(frozen=True)
class Env:
    tmp: Path
    reg: Path
    inputs: Path
    keys: Path
    cli: Callable[..., Result]

    def run(self, *args: str, cwd: Path | None = None) -> Result:
        return self.cli(*args, cwd=cwd or self.reg)

    def ok(self, *args: str, cwd: Path | None = None) -> Result:
        result = self.run(*args, cwd=cwd)
        assert result.code == 0, f"{args}\n{result.out}\n{result.err}"
        return result

    def keypair(self, name: str, *extra: str) -> tuple[Path, Path]:
        self.ok("keys", "generate", "--out", str(self.keys / name), *extra)
        return self.keys / f"{name}.key", self.keys / f"{name}.pub"

    def register(self, version: str, *extra: str) -> Result:
        return self.run("register", NAME, version, "--card", str(self.inputs / "card.yaml"),
                        "--artifact", str(self.inputs / "model.safetensors"),
                        "--artifact", str(self.inputs / "config.json"), *extra)

    def trust(self, *pubs: Path) -> None:
        """Commit the public keys under keys/ and list them in registry.yaml, on the current branch."""
        (self.reg / "keys").mkdir(exist_ok=True)
        listed = []
        for pub in pubs:
            shutil.copyfile(pub, self.reg / "keys" / pub.name)
            listed.append(f"keys/{pub.name}")
        config = self.reg / "registry.yaml"
        text = config.read_text()
        assert "trusted_keys: []" in text
        config.write_text(text.replace("trusted_keys: []", f"trusted_keys: [{', '.join(listed)}]"))
        git(self.reg, "add", "keys", "registry.yaml")
        git(self.reg, "commit", "--quiet", "-m", "Trust signing keys")


@pytest.fixture
def env(tmp_path: Path, registry_dir: Path, inputs: Path, cli: Callable[..., Result]) -> Env:
    keys = tmp_path / "keys"
    keys.mkdir()
    return Env(tmp_path, registry_dir, inputs, keys, cli)


@pytest.fixture
def signed(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """alice's key trusted on main; 1.0.0 registered with --sign-key and merged; 1.1.0 registered unsigned."""
    _, alice_pub = env.keypair("alice")
    env.trust(alice_pub)
    result = env.register("1.0.0", "--sign-key", str(env.keys / "alice.key"))
    assert result.code == 0, result.err
    merge(env.reg, f"register/{NAME}/1.0.0", monkeypatch, pr=1)
    new_weights(env.inputs, seed=7)
    assert env.register("1.1.0").code == 0
    merge(env.reg, f"register/{NAME}/1.1.0", monkeypatch, pr=2)
    return env


def state(*roots: Path, repo: Path) -> dict[str, Any]:
    return {
        "head": git(repo, "rev-parse", "HEAD").strip(),
        "branch": git(repo, "branch", "--show-current").strip(),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "index": index_tree(repo),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "files": snapshot(*roots),
    }


def refused(env: Env, args: Sequence[str], code: int, expected: Sequence[str], *,
            extra_roots: Sequence[Path] = (), cwd: Path | None = None, has_json: bool = True) -> str:
    """Run args (and with --json where the command has it): refused, one clear message, nothing changed."""
    repo = cwd or env.reg
    roots = [repo, env.keys, env.tmp / "dvc-remote", *extra_roots]
    before = state(*roots, repo=repo)
    result = env.run(*args, cwd=repo)
    shown = f"exit {result.code}\n--- out\n{result.out}\n--- err\n{result.err}"
    assert result.code == code, shown
    assert result.out == "", shown
    assert "Traceback" not in result.err and "internal error" not in result.err, shown
    for text in expected:
        assert text in result.err, f"{text!r} not in\n{shown}"
    assert state(*roots, repo=repo) == before, "a refused command changed something"
    if has_json:
        result = env.run(*args, "--json", cwd=repo)
        assert result.code == code
        data = json.loads(result.out)
        assert list(data) == ["error"]
        for text in expected:
            assert text in data["error"]
        assert state(*roots, repo=repo) == before
    return result.err


def committed_files(repo: Path, rev: str = "HEAD") -> list[str]:
    return git(repo, "show", "--name-only", "--format=", rev).split()


def show_signature(env: Env, ref: str, cwd: Path | None = None) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(env.ok("show", ref, "--json", cwd=cwd).out)
    return data["signing"]  # type: ignore[no-any-return]


# --- keys generate -----------------------------------------------------------------------


def test_keys_generate_writes_a_p256_pair(env: Env) -> None:
    result = env.ok("keys", "generate", "--out", str(env.keys / "release"))
    key, pub = env.keys / "release.key", env.keys / "release.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"-----BEGIN PRIVATE KEY-----" in key.read_bytes()  # not encrypted without a passphrase
    (public,) = signing_keys.load_public_keys(pub)
    assert public.curve.name == "secp256r1"
    assert signing_keys.read_private_key(key).public_key() == public
    key_id = signing_keys.key_id(public)
    assert key_id[:16] in result.out and "not encrypted" in result.out
    assert "trusted_keys" in result.out


def test_keys_generate_json(env: Env) -> None:
    data = json.loads(env.ok("keys", "generate", "--out", str(env.keys / "ci"), "--json").out)
    assert data == {"private_key": str(env.keys / "ci.key"), "public_key": str(env.keys / "ci.pub"),
                    "key_id": signing_keys.key_id(signing_keys.load_public_keys(env.keys / "ci.pub")[0]),
                    "encrypted": False, "warnings": []}


def test_keys_generate_default_prefix_in_the_current_folder(env: Env) -> None:
    env.ok("keys", "generate", cwd=env.keys)
    assert sorted(p.name for p in env.keys.iterdir()) == ["registry-signing.key", "registry-signing.pub"]


def test_keys_generate_encrypts_with_the_named_variable(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELEASE_PASS", "correct horse")
    result = env.ok("keys", "generate", "--out", str(env.keys / "release"), "--passphrase-env", "RELEASE_PASS")
    key = env.keys / "release.key"
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in key.read_bytes()
    assert "correct horse" not in result.out + result.err and "encrypted with your passphrase" in result.out
    signing_keys.read_private_key(key, b"correct horse")
    with pytest.raises(signing_keys.SigningKeyError, match="wrong passphrase"):
        signing_keys.read_private_key(key, b"wrong")


def test_keys_generate_uses_registry_key_passphrase_when_set(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_KEY_PASSPHRASE", "s3cret")
    env.ok("keys", "generate", "--out", str(env.keys / "release"))
    signing_keys.read_private_key(env.keys / "release.key", b"s3cret")


def test_keys_generate_warns_inside_a_git_work_tree(env: Env) -> None:
    result = env.ok("keys", "generate", "--out", str(env.reg / "oops"))
    assert "never commit it" in result.err
    (env.reg / "oops.key").unlink()
    (env.reg / "oops.pub").unlink()


@pytest.mark.parametrize(("args", "code", "expected"), [
    (["--passphrase-env", "NOT_SET_ANYWHERE"], 2,
     ["--passphrase-env NOT_SET_ANYWHERE", "is not set or empty"]),
    (["--passphrase-env", "BAD-NAME"], 2, ["not an environment variable name"]),
    (["--out", "{keys}/missing/release"], 2, ["does not exist; create it first"]),
    (["--out", "{keys}"], 2, ["is a folder; give a file prefix"]),
    (["--out", "{keys}/taken"], 1, ["taken.key: already exists"]),
])
def test_keys_generate_refuses(env: Env, args: list[str], code: int, expected: list[str]) -> None:
    (env.keys / "taken.key").write_text("an old key\n")
    args = [a.format(keys=env.keys) for a in args]
    if "--out" not in args:
        args += ["--out", str(env.keys / "new")]
    refused(env, ["keys", "generate", *args], code, expected)
    assert (env.keys / "taken.key").read_text() == "an old key\n"


# --- register --sign-key -------------------------------------------------------------------


def test_register_signs_in_the_registration_commit(env: Env) -> None:
    key, pub = env.keypair("alice")
    result = env.register("1.0.0", "--sign-key", str(key))
    assert result.code == 0, result.err
    assert f"{V1}/signature.json" in committed_files(env.reg)
    assert git(env.reg, "log", "--format=%s", "-1").strip() == f"Register {NAME}@1.0.0"
    assert not git(env.reg, "status", "--porcelain")
    verified = env.ok("verify", f"{NAME}@1.0.0", "--trusted-keys", str(pub)).out
    key_id = signing_keys.key_id(signing_keys.load_public_keys(pub)[0])
    assert f"signature verified by key {key_id[:16]} ({pub})" in verified
    assert "3 files: card.yaml, config.json, model.safetensors" in verified


def test_register_with_an_encrypted_key(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_KEY_PASSPHRASE", "s3cret")
    key, pub = env.keypair("alice")
    assert env.register("1.0.0", "--sign-key", str(key)).code == 0
    env.ok("verify", f"{NAME}@1.0.0", "--trusted-keys", str(pub))


def test_register_refuses_bad_sign_keys(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    _, pub = env.keypair("alice")
    monkeypatch.setenv("REGISTRY_KEY_PASSPHRASE", "s3cret")
    locked, _ = env.keypair("locked")
    monkeypatch.delenv("REGISTRY_KEY_PASSPHRASE")
    (env.keys / "junk.key").write_text("not a key\n")
    base = ["register", NAME, "1.0.0", "--card", str(env.inputs / "card.yaml"),
            "--artifact", str(env.inputs / "model.safetensors")]
    roots = [env.inputs]
    refused(env, [*base, "--sign-key", str(env.keys / "nope.key")], 2,
            [f"--sign-key {env.keys / 'nope.key'}: no such file"], extra_roots=roots)
    refused(env, [*base, "--sign-key", str(env.keys)], 2, ["is a folder"], extra_roots=roots)
    refused(env, [*base, "--sign-key", str(pub)], 1, ["is a public key; sign with the private key"],
            extra_roots=roots)
    refused(env, [*base, "--sign-key", str(env.keys / "junk.key")], 1, ["not a PEM private key"],
            extra_roots=roots)
    refused(env, [*base, "--sign-key", str(locked)], 1,
            ["the key is encrypted; put its passphrase in the environment variable REGISTRY_KEY_PASSPHRASE"],
            extra_roots=roots)
    monkeypatch.setenv("REGISTRY_KEY_PASSPHRASE", "wrong")
    refused(env, [*base, "--sign-key", str(locked)], 1, ["wrong passphrase"], extra_roots=roots)


# --- sign ------------------------------------------------------------------------------------


def test_sign_commits_on_its_own_branch(signed: Env) -> None:
    env = signed
    main = git(env.reg, "rev-parse", "main").strip()
    result = env.ok("sign", f"{NAME}@1.1.0", "--key", str(env.keys / "alice.key"))
    assert f"Signed {NAME}@1.1.0 with key" in result.out and f"on branch sign/{NAME}/1.1.0" in result.out
    assert git(env.reg, "branch", "--show-current").strip() == f"sign/{NAME}/1.1.0"
    assert git(env.reg, "rev-parse", "HEAD~1").strip() == main
    assert committed_files(env.reg) == [f"{V2}/signature.json"]
    message = git(env.reg, "log", "--format=%B", "-1")
    key_id = signing_keys.key_id(signing_keys.load_public_keys(env.keys / "alice.pub")[0])
    assert message.startswith(f"Sign {NAME}@1.1.0\n") and f"Signed-with-key: {key_id}" in message
    assert not git(env.reg, "status", "--porcelain")
    assert "signature verified" in env.ok("verify", f"{NAME}@1.1.0").out


def test_sign_no_branch_json_and_push(signed: Env, tmp_path: Path) -> None:
    env = signed
    data = json.loads(env.ok("sign", f"{NAME}@1.1.0", "--key", str(env.keys / "alice.key"),
                             "--no-branch", "--json").out)
    assert data["branch"] is None and data["replaced"] is False
    assert data["files"] == ["card.yaml", "config.json", "model.safetensors"]
    assert git(env.reg, "branch", "--show-current").strip() == "main"
    assert data["commit"] == git(env.reg, "rev-parse", "HEAD").strip()
    # --push pushes a sign branch to origin.
    git(env.reg, "reset", "--quiet", "--hard", "HEAD~1")
    env.ok("sign", f"{NAME}@1.1.0", "--key", str(env.keys / "alice.key"), "--push")
    assert git(tmp_path / "origin.git", "rev-parse", f"sign/{NAME}/1.1.0").strip() == \
        git(env.reg, "rev-parse", "HEAD").strip()


def test_sign_force_replaces_the_signature(signed: Env) -> None:
    env = signed
    bob_key, bob_pub = env.keypair("bob")
    result = env.ok("sign", f"{NAME}@1.0.0", "--key", str(bob_key), "--force", "--no-branch")
    assert result.out.startswith(f"Re-signed {NAME}@1.0.0")
    assert git(env.reg, "log", "--format=%s", "-1").strip() == f"Re-sign {NAME}@1.0.0"
    env.ok("verify", f"{NAME}@1.0.0", "--trusted-keys", str(bob_pub))
    result = env.run("verify", f"{NAME}@1.0.0")  # registry.yaml trusts alice only
    assert result.code == 1
    bob_id = signing_keys.key_id(signing_keys.load_public_keys(bob_pub)[0])
    assert f"signed by unknown key {bob_id} (not among the 1 trusted key(s))" in result.err


def test_sign_with_an_encrypted_key_and_passphrase_env(signed: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = signed
    monkeypatch.setenv("CAROL_PASS", "pw")
    key, pub = env.keypair("carol", "--passphrase-env", "CAROL_PASS")
    env.ok("sign", f"{NAME}@1.1.0", "--key", str(key), "--passphrase-env", "CAROL_PASS")
    env.ok("verify", f"{NAME}@1.1.0", "--trusted-keys", str(pub))


def test_sign_refuses(signed: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env = signed
    key = str(env.keys / "alice.key")
    monkeypatch.setenv("CAROL_PASS", "pw")
    locked, _ = env.keypair("carol", "--passphrase-env", "CAROL_PASS")
    monkeypatch.delenv("CAROL_PASS")
    refused(env, ["sign", f"{NAME}@1.0.0", "--key", key], 2,
            [f"{NAME}@1.0.0 is already signed ({V1}/signature.json); give --force"])
    refused(env, ["sign", NAME, "--key", key], 2, ["give a version, NAME@VERSION"])
    refused(env, ["sign", f"{NAME}@9.9.9", "--key", key], 2, [f"{NAME}@9.9.9 is not registered"])
    refused(env, ["sign", "nobody@1.0.0", "--key", key], 2, ["no model named 'nobody'"])
    refused(env, ["sign", "../etc@1.0.0", "--key", key], 2, ["../etc"])
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", str(env.keys / "nope.key")], 2, ["no such file"])
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", str(locked)], 1,
            ["the key is encrypted", "REGISTRY_KEY_PASSPHRASE", "--passphrase-env VAR"])
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", str(locked), "--passphrase-env", "CAROL_PASS"], 2,
            ["--passphrase-env CAROL_PASS: the environment variable CAROL_PASS is not set"])
    git(env.reg, "branch", f"sign/{NAME}/1.1.0")
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", key], 2, [f"branch sign/{NAME}/1.1.0 already exists"])
    git(env.reg, "branch", "-D", f"sign/{NAME}/1.1.0")
    (env.reg / "registry.yaml").write_text((env.reg / "registry.yaml").read_text() + "\n")
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", key], 2, ["uncommitted changes (registry.yaml)"])
    git(env.reg, "checkout", "--", "registry.yaml")


def test_sign_refuses_a_folder_that_differs_from_its_card(signed: Env) -> None:
    env = signed
    key = str(env.keys / "alice.key")
    weights = env.reg / V2 / "model.safetensors"  # DVC-tracked: git does not see it change
    original = weights.read_bytes()
    weights.write_bytes(original + b"\0")
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", key], 1,
            [f"{V2}/model.safetensors: sha256 is", "the card says", "before signing"])
    weights.write_bytes(original)
    (env.reg / V2 / "notes.txt").write_text("untracked\n")
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", key], 1,
            [f"{V2}/notes.txt: is not an artifact listed in the card"])
    (env.reg / V2 / "notes.txt").unlink()
    (env.reg / V2 / "config.json").unlink()  # in git: a deleted tracked file is an uncommitted change
    refused(env, ["sign", f"{NAME}@1.1.0", "--key", key], 2, ["uncommitted changes"])
    git(env.reg, "checkout", "--", V2)


def test_sign_refuses_a_version_not_committed_here(signed: Env) -> None:
    env = signed
    shutil.copytree(env.reg / V2, env.reg / "models" / NAME / "2.0.0")
    card = env.reg / "models" / NAME / "2.0.0" / "card.yaml"
    card.write_text(card.read_text().replace("version: 1.1.0", "version: 2.0.0"))
    refused(env, ["sign", f"{NAME}@2.0.0", "--key", str(env.keys / "alice.key")], 2,
            [f"{NAME}@2.0.0 is not committed on the current branch"])


def test_sign_in_a_clone_without_the_weights_fetches_them(signed: Env, tmp_path: Path) -> None:
    env = signed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(env.reg), str(clone))
    assert not (clone / V2 / "model.safetensors").exists()
    env.ok("sign", f"{NAME}@1.1.0", "--key", str(env.keys / "alice.key"), "--no-branch", cwd=clone)
    assert committed_files(clone) == [f"{V2}/signature.json"]
    assert not (clone / V2 / "model.safetensors").exists()  # fetched into a temporary copy only
    assert not git(clone, "status", "--porcelain", "--untracked-files=all")
    env.ok("verify", f"{NAME}@1.1.0", cwd=clone)


# --- verify ----------------------------------------------------------------------------------


def test_verify_with_the_registry_trusted_keys(signed: Env) -> None:
    env = signed
    before = state(env.reg, repo=env.reg)
    result = env.ok("verify", f"{NAME}@1.0.0")
    key_id = signing_keys.key_id(signing_keys.load_public_keys(env.keys / "alice.pub")[0])
    assert result.out.startswith(f"{NAME}@1.0.0: signature verified by key {key_id[:16]} (keys/alice.pub)")
    data = json.loads(env.ok("verify", f"{NAME}@1.0.0", "--json").out)
    assert data == {"name": NAME, "version": "1.0.0", "verified": True, "subject": f"{NAME}@1.0.0",
                    "key_id": key_id, "trusted_key": "keys/alice.pub",
                    "files": ["card.yaml", "config.json", "model.safetensors"]}
    assert state(env.reg, repo=env.reg) == before


def test_verify_trusts_any_key_of_several(signed: Env) -> None:
    env = signed
    _, bob_pub = env.keypair("bob")
    both = env.tmp / "both.pem"
    both.write_bytes(bob_pub.read_bytes() + (env.keys / "alice.pub").read_bytes())
    assert f"({both})" in env.ok("verify", f"{NAME}@1.0.0", "--trusted-keys", str(both)).out


def test_verify_reports_the_exact_reason(signed: Env) -> None:
    env = signed
    weights = env.reg / V1 / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    refused(env, ["verify", f"{NAME}@1.0.0"], 1,
            [f"{V1}/signature.json: file changed since signing: model.safetensors: sha256 is"])
    weights.write_bytes(original)
    _, bob_pub = env.keypair("bob")
    refused(env, ["verify", f"{NAME}@1.0.0", "--trusted-keys", str(bob_pub)], 1,
            [f"{V1}/signature.json: signed by unknown key"])
    refused(env, ["verify", f"{NAME}@1.1.0"], 1,
            [f"{V2}/signature.json: {NAME}@1.1.0 is not signed; sign it with `registry sign {NAME}@1.1.0"])


def test_verify_refuses_a_signature_moved_from_another_version(signed: Env) -> None:
    env = signed
    other = env.reg / V1 / "signature.json"
    refused(env, ["verify", f"{NAME}@1.1.0", "--signature", str(other)], 1,
            [f"{other}: signature was made for {NAME}@1.0.0, not {NAME}@1.1.0"])
    refused(env, ["verify", f"{NAME}@1.0.0", "--signature", str(env.tmp / "none.json")], 2,
            [f"--signature {env.tmp / 'none.json'}: no such file"])


@pytest.mark.parametrize(("config", "code", "expected"), [
    ("trusted_keys: []", 1, ["registry.yaml lists no trusted_keys", "--trusted-keys FILE"]),
    ("trusted_keys: [keys/gone.pub]", 1, ["registry.yaml:", "trusted_keys[0]: keys/gone.pub does not exist"]),
    ("trusted_keys: [../outside.pub]", 1, ["trusted_keys[0]: ../outside.pub is outside the registry"]),
    ("trusted_keys: [registry.yaml]", 1, ["registry.yaml: no PEM public key found"]),
])
def test_verify_refuses_bad_trusted_keys(signed: Env, config: str, code: int, expected: list[str]) -> None:
    env = signed
    (env.tmp / "outside.pub").write_bytes((env.keys / "alice.pub").read_bytes())
    path = env.reg / "registry.yaml"
    path.write_text(path.read_text().replace("trusted_keys: [keys/alice.pub]", config))
    refused(env, ["verify", f"{NAME}@1.0.0"], code, expected)
    refused(env, ["verify", f"{NAME}@1.0.0", "--trusted-keys", str(env.tmp / "nope.pub")], 2,
            [f"--trusted-keys {env.tmp / 'nope.pub'}: no such file"])


def test_verify_in_a_clone_fetches_into_a_temporary_copy(signed: Env, tmp_path: Path) -> None:
    env = signed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(env.reg), str(clone))
    assert not (clone / V1 / "model.safetensors").exists()
    before = state(clone, repo=clone)
    assert "signature verified" in env.ok("verify", f"{NAME}@1.0.0", cwd=clone).out
    assert state(clone, repo=clone) == before  # nothing pulled into the work tree, no DVC cache written
    # The remote's copy is what gets verified: a corrupted object there fails with the reason.
    md5 = signing_md5(clone / V1 / "model.safetensors.dvc")
    obj = tmp_path / "dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]
    obj.chmod(0o644)
    obj.write_bytes(obj.read_bytes() + b"tampered")
    result = env.run("verify", f"{NAME}@1.0.0", cwd=clone)
    assert result.code == 1
    assert f"{V1}/signature.json: file changed since signing: model.safetensors: sha256 is" in result.err
    assert state(clone, repo=clone) == before


def test_verify_in_a_clone_with_the_remote_gone(signed: Env, tmp_path: Path) -> None:
    env = signed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(env.reg), str(clone))
    shutil.rmtree(tmp_path / "dvc-remote")
    refused(env, ["verify", f"{NAME}@1.0.0"], 1, [f"DVC could not fetch {V1}/model.safetensors"], cwd=clone)


def signing_md5(pointer: Path) -> str:
    from registry.repo import storage

    return storage.parse_pointer(pointer.read_text(), str(pointer)).md5


# --- show ---------------------------------------------------------------------------------------


def test_show_reports_the_signature_status(signed: Env, tmp_path: Path) -> None:
    env = signed
    key_id = signing_keys.key_id(signing_keys.load_public_keys(env.keys / "alice.pub")[0])
    status = show_signature(env, f"{NAME}@1.0.0")
    assert status["status"] == f"verified by {key_id[:16]} (keys/alice.pub)"
    assert status["present"] is True and status["key_id"] == key_id and status["unchecked"] == []
    assert show_signature(env, f"{NAME}@1.1.0")["status"] == "unsigned"
    # In a clone without the weights nothing is downloaded: they count at the card's digests.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(env.reg), str(clone))
    status = show_signature(env, f"{NAME}@1.0.0", cwd=clone)
    assert status["status"].startswith("verified by") and status["unchecked"] == ["model.safetensors"]
    # Tampered in the work tree: invalid, with the reason.
    config = env.reg / V1 / "config.json"
    config.write_text('{"threshold": 0.1}\n')
    status = show_signature(env, f"{NAME}@1.0.0")
    assert status["status"].startswith(f"invalid: {V1}/signature.json: file changed since signing: config.json")
    git(env.reg, "checkout", "--", V1)
    # No trusted key: signed but unverified, never "invalid".
    path = env.reg / "registry.yaml"
    path.write_text(path.read_text().replace("trusted_keys: [keys/alice.pub]", "trusted_keys: []"))
    assert show_signature(env, f"{NAME}@1.0.0")["status"].startswith(
        "unverified: registry.yaml lists no trusted_keys")


# --- help and interop ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["keys"], ["keys", "generate"], ["sign"], ["verify"]])
def test_help(env: Env, command: list[str]) -> None:
    result = env.ok(*command, "--help")
    assert "Usage: registry" in result.out


def test_outside_a_registry(env: Env) -> None:
    for args in (["sign", f"{NAME}@1.0.0", "--key", str(env.keys / "x.key")], ["verify", f"{NAME}@1.0.0"]):
        result = env.run(*args, cwd=env.keys)
        assert result.code == 1 and "not a registry" in result.err


@needs_model_signing
def test_model_signing_verifies_a_registered_version(signed: Env) -> None:
    env = signed
    done = subprocess.run(
        [sys.executable, "-m", "model_signing", "verify", "key", str(env.reg / V1),
         "--signature", str(env.reg / V1 / "signature.json"), "--public_key", str(env.keys / "alice.pub")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
