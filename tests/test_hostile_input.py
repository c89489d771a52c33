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
