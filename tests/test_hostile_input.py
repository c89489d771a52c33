"""Input built to break the readers rather than pass the gates: versions with build metadata,
integers longer than Python prints, signature bundles nested past the stack.

Each is refused with one located message and exit 1 (2 for a bad argument); nothing changes
on disk; `check` still writes its report; `pull --watch` keeps serving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from registry.errors import UsageError, ValidationError
from registry.files import yamlio
from registry.files.names import Version, check_version
from registry.signing.bundle import PAYLOAD_TYPE, Bundle, Verifier, pae
from registry.signing.keys import ecdsa, generate_keypair, load_public_keys, read_private_key
from registry.signing.manifest import Manifest, Resource, SignatureError
from tests import test_sign_cli
from tests.conftest import git, snapshot
from tests.test_sign_cli import NAME, Env, refused, state

env, signed = test_sign_cli.env, test_sign_cli.signed  # the fixtures: a registry with alice's key trusted

NESTED = "[" * 100_000 + "]" * 100_000
LONG_INT = "1" * 5000


# --- build metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1.0.0+build", "1.0.0+build.7", "2.0.0-rc.1+sha.5114f85"])
def test_build_metadata_is_refused_with_its_reason(text: str) -> None:
    assert not Version.is_valid(text)
    with pytest.raises(UsageError, match=r"build metadata \(\+\.\.\.\) is not allowed: versions that differ only "
                                         r"in it have equal precedence"):
        check_version(text)


def test_register_refuses_a_version_with_build_metadata_beside_the_release(signed: Env) -> None:
    refused(signed, ["register", NAME, "1.0.0+build", "--card", str(signed.inputs / "card.yaml"),
                     "--artifact", str(signed.inputs / "model.safetensors")], 2,
            ["invalid version '1.0.0+build': build metadata (+...) is not allowed"])
    refused(signed, ["show", f"{NAME}@1.0.0+build"], 2, ["build metadata (+...) is not allowed"])


def test_validate_refuses_a_card_and_a_stage_naming_a_build(signed: Env) -> None:
    env = signed
    folder = env.reg / f"models/{NAME}/1.0.0+build"
    folder.mkdir()
    card = (env.reg / f"models/{NAME}/1.0.0/card.yaml").read_text().replace("version: 1.0.0", "version: 1.0.0+build")
    (folder / "card.yaml").write_text(card)
    stages_file = env.reg / f"models/{NAME}/stages.yaml"
    stages_file.write_text("staging: ['1.0.0+build']\n")
    before = snapshot(env.reg)
    result = env.run("validate")
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err
    assert f"models/{NAME}/1.0.0+build/card.yaml" in result.err and "is not a semantic version folder" in result.err
    assert f"models/{NAME}/stages.yaml:1: staging[0]: '1.0.0+build': build metadata (+...) is not allowed: " \
           "versions that differ only in it have equal precedence" in result.err
    assert snapshot(env.reg) == before


# --- integers longer than Python prints ----------------------------------------------------------


@pytest.mark.parametrize("value", [LONG_INT, "-" + LONG_INT, "0x" + "f" * 4000])
def test_a_long_integer_is_a_located_yaml_error(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        yamlio.loads(f"a: 1\nb:\n  c: {value}\n", "x.yaml")
    assert str(info.value) == "x.yaml:3: invalid YAML: an integer this long is not allowed (at most 4300 digits)"
    assert yamlio.loads("a: " + "9" * 4300)["a"] == 10**4300 - 1


@pytest.mark.parametrize(("path", "text"), [
    (f"models/{NAME}/1.1.0/card.yaml", None),
    (f"models/{NAME}/stages.yaml", f"staging: [1.0.0]\nx: {LONG_INT}\n"),
    (f"models/{NAME}/model.yaml", f"description: d\ntags: {{n: {LONG_INT}}}\n"),
    ("registry.yaml", f"retention: {{keep_latest: {LONG_INT}}}\n"),
])
def test_check_reports_a_long_integer_in_any_registry_yaml(signed: Env, path: str, text: str | None) -> None:
    env = signed
    git(env.reg, "switch", "--quiet", "-c", "long-int")
    if text is None:  # a new version's card
        text = (env.reg / f"models/{NAME}/1.0.0/card.yaml").read_text().replace("1.0.0", "1.2.0") \
            + f"hyperparameters: {{seed: {LONG_INT}}}\n"
        path = f"models/{NAME}/1.2.0/card.yaml"
    target = env.reg / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    line = text.splitlines().index(next(t for t in text.splitlines() if LONG_INT in t)) + 1
    git(env.reg, "add", "-A")
    git(env.reg, "commit", "--quiet", "-m", "A long integer")
    report_file = env.tmp / "report.json"
    before = state(env.reg, repo=env.reg)
    result = env.run("check", "--base", "main", "--json", str(report_file))
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    report = json.loads(report_file.read_text())
    assert report["passed"] is False
    failed = [g for g in report["gates"] if g["status"] == "fail" and g["gate"] == "schema"]
    assert [g["message"] for g in failed] == [
        f"{path}:{line}: invalid YAML: an integer this long is not allowed (at most 4300 digits)"]
    report_file.unlink()
    assert state(env.reg, repo=env.reg) == before


def test_validate_reports_a_long_integer(signed: Env) -> None:
    env = signed
    (env.reg / "registry.yaml").write_text(f"storage: {{git_max_bytes: {LONG_INT}}}\n")
    before = snapshot(env.reg)
    result = env.run("validate")
    assert result.code == 1
    assert "registry.yaml:1: invalid YAML: an integer this long is not allowed (at most 4300 digits)" in result.err
    assert "Traceback" not in result.err and snapshot(env.reg) == before


# --- signature bundles nested past the stack -----------------------------------------------------


@pytest.mark.parametrize("bundle", [NESTED, '{"mediaType": ' + NESTED + "}", '{"a": ' + LONG_INT + "}"])
def test_one_reader_refuses_hostile_signature_json(bundle: str) -> None:
    with pytest.raises(SignatureError, match=r"^s\.json: not a JSON signature bundle: "
                                             r"(nested more than 32 levels deep|a number has too many digits)$"):
        Bundle.from_json(bundle.encode(), "s.json")


def test_a_signed_payload_nested_past_the_stack_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate_keypair(key)
    private = read_private_key(tmp_path / "k.key")
    payload = NESTED.encode()
    bundle = Bundle(None, PAYLOAD_TYPE, payload,
                    private.sign(pae(PAYLOAD_TYPE, payload), ecdsa(private)))
    verifier = Verifier(load_public_keys(tmp_path / "k.pub"))
    manifest = Manifest("m", "1.0.0", (Resource("card.yaml", "0" * 64),))
    with pytest.raises(SignatureError, match="the signed payload is not JSON: nested more than 32 levels"):
        verifier.verify(bundle, manifest, "s.json")


def _nest_signature(env: Env, version: str) -> str:
    path = f"models/{NAME}/{version}/signature.json"
    (env.reg / path).write_text(NESTED)
    return path


def test_verify_show_and_check_refuse_a_nested_signature(signed: Env) -> None:
    env = signed
    git(env.reg, "switch", "--quiet", "-c", "nested")
    path = _nest_signature(env, "1.1.0")
    git(env.reg, "add", path)
    git(env.reg, "commit", "--quiet", "-m", "Sign 1.1.0")
    message = f"{path}: not a JSON signature bundle: nested more than 32 levels deep"
    refused(env, ["verify", f"{NAME}@1.1.0"], 1, [message])
    shown = json.loads(env.ok("show", f"{NAME}@1.1.0", "--json").out)
    assert shown["signing"]["status"] == f"invalid: {message}"
    report_file = env.tmp / "report.json"
    result = env.run("check", "--base", "main", "--json", str(report_file))
    assert result.code == 1 and "Traceback" not in result.err
    gates = json.loads(report_file.read_text())["gates"]
    assert [g["message"] for g in gates if g["gate"] == "signature"] == [message]


@pytest.fixture
def served(signed: Env, monkeypatch: pytest.MonkeyPatch) -> tuple[Env, Path]:
    """1.0.0 (signed) in production on origin; a branch `bad` that moves 1.1.0, with a nested signature, there."""
    env = signed
    git(env.reg, "switch", "--quiet", "main")
    for stage in ("staging", "production"):
        env.ok("promote", NAME, "1.0.0", "--to", stage, "--reason", "ok", "--no-branch")
    git(env.reg, "push", "--quiet", "origin", "main")
    git(env.reg, "switch", "--quiet", "-c", "bad")
    path = _nest_signature(env, "1.1.0")
    git(env.reg, "add", path)
    git(env.reg, "commit", "--quiet", "-m", "Sign 1.1.0")
    for stage in ("staging", "production"):
        env.ok("promote", NAME, "1.1.0", "--to", stage, "--reason", "ok", "--no-branch")
    git(env.reg, "push", "--quiet", "origin", "bad")
    return env, env.tmp / "origin.git"


def test_pull_keeps_serving_when_the_new_signature_is_nested(served: tuple[Env, Path]) -> None:
    env, origin = served
    serve = env.tmp / "serve"
    args = ["pull", "--stage", "production", "--to", str(serve), "--from", str(origin),
            "--trusted-keys", str(env.keys / "alice.pub")]
    env.ok(*args)
    assert os.readlink(serve / NAME / "current") == "versions/1.0.0"
    git(origin, "update-ref", "refs/heads/main", "refs/heads/bad")
    before = snapshot(serve)
    result = env.run(*args)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert "signature.json: not a JSON signature bundle: nested more than 32 levels deep" in result.err
    assert os.readlink(serve / NAME / "current") == "versions/1.0.0"
    def served_files(found: dict[str, str]) -> dict[str, str]:  # state.json records the failure
        return {k: v for k, v in found.items() if ".registry-cache" not in k and not k.endswith("state.json")}

    assert served_files(snapshot(serve)) == served_files(before)


def test_pull_watch_survives_a_nested_signature(served: tuple[Env, Path]) -> None:
    env, origin = served
    serve = env.tmp / "serve"
    proc = subprocess.Popen([sys.executable, "-m", "registry", "pull", "--stage", "production", "--to", str(serve),
                             "--from", str(origin), "--trusted-keys", str(env.keys / "alice.pub"),
                             "--watch", "--interval", "0.2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict[str, object]] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        moved = False
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            events.append(json.loads(line))
            if events[-1]["event"] == "applied" and not moved:
                git(origin, "update-ref", "refs/heads/main", "refs/heads/bad")
                moved = True
            elif moved and "nested more than 32 levels deep" in json.dumps(events[-1]):
                break
        assert moved and "nested more than 32 levels deep" in json.dumps(events[-1]), events
        time.sleep(0.5)  # another poll or two: the watcher must still be alive after the failure
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "RecursionError" not in out + err
    assert os.readlink(serve / NAME / "current") == "versions/1.0.0"

