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

from registry import signing, yamlio
from registry.errors import UsageError, ValidationError
from registry.names import Version, check_version
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
    assert f"models/{NAME}/stages.yaml:1: staging[0]: '1.0.0+build' does not have the required form " \
           "(A semantic version without build metadata" in result.err
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
