"""The `registry-validate` pre-commit hook, run by pre-commit itself.

`pre-commit try-repo` clones a hook repository at a commit and installs it in an
environment of its own, as a registry repository's users would get it. The
hook's repository here is a temporary clone of this project with the current
package and hooks file committed on top, so the test runs what is in the work tree.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import git

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pre_commit") is None,
                                reason="pre-commit is not installed (a test dependency)")

PROJECT = Path(__file__).resolve().parents[1]
HOOKS_FILE = PROJECT / ".pre-commit-hooks.yaml"
# What the hook's repository needs to build and install the package, taken from the work tree.
PACKAGE_PATHS = ("registry", "schemas", "pyproject.toml", "README.md", ".pre-commit-hooks.yaml")


def hook() -> dict[str, object]:
    hooks = yaml.safe_load(HOOKS_FILE.read_text())
    [found] = [h for h in hooks if h["id"] == "registry-validate"]
    assert isinstance(found, dict)
    return found


def test_hooks_file_is_a_valid_manifest() -> None:
    from pre_commit.clientlib import load_manifest

    [loaded] = [h for h in load_manifest(str(HOOKS_FILE)) if h["id"] == "registry-validate"]
    assert loaded["language"] == "python"
    assert loaded["entry"] == "registry validate"
    assert loaded["pass_filenames"] is True


@pytest.mark.parametrize(("path", "checked"), [
    ("registry.yaml", True),
    ("models/credit-approval/model.yaml", True),
    ("models/credit-approval/stages.yaml", True),
    ("models/credit-approval/1.2.0/card.yaml", True),
    ("models/credit-approval/1.2.0/model.safetensors.dvc", True),
    ("models/credit-approval/1.2.0/predict.py", False),
    ("models/credit-approval/1.2.0/model.safetensors", False),
    ("models/credit-approval/card.yaml", False),
    ("docs/registry.yaml", False),
    ("models/credit-approval/1.2.0/extra/card.yaml", False),
    (".github/workflows/registry.yml", False),
    ("README.md", False),
])
def test_hook_selects_the_registry_files(path: str, checked: bool) -> None:
    # pre-commit matches `files` with re.search on the repository-relative path.
    assert (re.search(str(hook()["files"]), path) is not None) is checked


@pytest.fixture
def hook_repo(tmp_path: Path) -> Path:
    """This project as a hook repository: a clone with the work tree's package committed on top."""
    clone = tmp_path / "hook-repo"
    git(tmp_path, "clone", "--quiet", "--no-hardlinks", str(PROJECT), str(clone))
    for rel in PACKAGE_PATHS:
        source, target = PROJECT / rel, clone / rel
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    git(clone, "add", "--all", "--", *PACKAGE_PATHS)
    git(clone, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", "work tree under test")
    return clone


def try_repo(hook_repo: Path, registry: Path, pre_commit_home: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PRE_COMMIT_HOME=str(pre_commit_home), PRE_COMMIT_COLOR="never")
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(hook_repo), "registry-validate",
         "--verbose", "--files", *files],
        cwd=registry, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200,
    )


# pre-commit builds the hook's environment from the package index (gitops-registry and its
# dependencies, DVC included): about 3-4 minutes here, hence `slow`.
@pytest.mark.slow
def test_try_repo_fails_a_broken_card_and_passes_a_valid_one(
    registered: Path, hook_repo: Path, tmp_path: Path
) -> None:
    good = "models/credit-approval/1.0.0/card.yaml"
    broken = "models/credit-approval/1.1.0/card.yaml"
    card = registered / broken
    lines = card.read_text().splitlines(keepends=True)
    lines.append("colour: blue\n")  # an unknown top-level key: a typo must not pass
    card.write_text("".join(lines))
    home = tmp_path / "pre-commit-home"  # shared by both runs: the hook's environment is built once

    failed = try_repo(hook_repo, registered, home, good, broken)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output
    assert f"{broken}:{len(lines)}:" in output
    assert "colour" in output
    assert good not in output.replace(f"--files {good}", "")
    assert "Traceback" not in output

    passed = try_repo(hook_repo, registered, home, good)
    output = passed.stdout + passed.stderr
    assert passed.returncode == 0, output
    assert "registry validate" in output and "Passed" in output

    # Files the hook does not select are not passed to it: nothing to check, nothing fails.
    skipped = try_repo(hook_repo, registered, home, "models/credit-approval/1.1.0/config.json", ".gitignore")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
