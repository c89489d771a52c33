"""Fixtures: real git repositories and real DVC remotes in tmp_path, with an isolated environment."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SCIENTIST = ("Dana Scientist", "dana@example.com")
REVIEWER = ("Rita Reviewer", "rita@example.com")

CARD = """\
description: Credit approval classifier
framework: numpy
task: classification
creator: "@dana"
metrics: {accuracy: 0.93, f1: 0.91}
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow install packages from the index (minutes): CI runs them, `make test` says why not."""
    if os.environ.get("REGISTRY_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: installs packages from the index; set REGISTRY_RUN_SLOW=1 (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path_factory.mktemp("home"))


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """A home of its own (no user or system git config, DVC quiet), committing as the scientist.

    Fixtures that outlive one test (scope="module") call it with a MonkeyPatch.context().
    """
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(home / "dvc-site-cache"))
    as_user(monkeypatch, SCIENTIST)


def as_user(monkeypatch: pytest.MonkeyPatch, who: tuple[str, str]) -> None:
    name, email = who
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", name)
        monkeypatch.setenv(f"GIT_{role}_EMAIL", email)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run the real entry point in-process, from a given directory."""
    from registry.cli.main import main

    def invoke(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    """A fresh registry (git + DVC with a local remote) with a local bare origin."""
    from registry import api

    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    reg = api.init(tmp_path / "reg", dvc_remote=str(tmp_path / "dvc-remote"))
    git(reg.root, "remote", "add", "origin", str(origin))
    git(reg.root, "push", "--quiet", "-u", "origin", "main")
    return reg.root


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A trained version's files outside the registry: weights, a config and a card."""
    from safetensors.numpy import save_file

    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    save_file({"weight": rng.random((64, 10), dtype=np.float32), "bias": np.zeros(10, np.float32)},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"threshold": 0.5}\n')
    (folder / "card.yaml").write_text(CARD)
    return folder


def new_weights(folder: Path, seed: int) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path = folder / "model.safetensors"
    save_file({"weight": rng.random((64, 10), dtype=np.float32), "bias": np.ones(10, np.float32)}, str(path))
    return path


def merge(repo: Path, branch: str, monkeypatch: pytest.MonkeyPatch, pr: int = 1) -> None:
    """What a reviewer's merge does: --no-ff into main, authored by the reviewer."""
    as_user(monkeypatch, REVIEWER)
    git(repo, "switch", "--quiet", "main")
    git(repo, "merge", "--quiet", "--no-ff", branch, "-m", f"Merge pull request #{pr} from org/{branch}")
    as_user(monkeypatch, SCIENTIST)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file's content digest and every ref: equal snapshots mean nothing changed on disk.

    Git's index stat cache and the validation cache may be refreshed by reads; they are left out.
    """
    state: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root)
            if rel_dir.parts[:2] in ((".git", "registry"),) or rel_dir.parts[:2] == (".dvc", "tmp"):
                dirnames[:] = []
                continue
            for name in filenames:
                path = Path(dirpath) / name
                rel = str(root / rel_dir / name)
                if rel_dir.parts[:1] == (".git",) and name == "index":
                    continue
                if path.is_symlink():
                    state[rel] = "link:" + os.readlink(path)
                else:
                    state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            state[str(root / rel_dir)] = "dir"
    return state


def index_tree(repo: Path) -> str:
    """The tree the index would commit: catches staged-but-uncommitted leftovers."""
    return git(repo, "write-tree").strip()


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def registered(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A registry with credit-approval 1.0.0 and 1.1.0 registered and merged into main."""
    result = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), "--artifact", str(inputs / "config.json"),
                 cwd=registry_dir)
    assert result.code == 0, result.err
    merge(registry_dir, "register/credit-approval/1.0.0", monkeypatch, pr=1)
    new_weights(inputs, seed=1)
    result = cli("register", "credit-approval", "1.1.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
    assert result.code == 0, result.err
    merge(registry_dir, "register/credit-approval/1.1.0", monkeypatch, pr=2)
    yield registry_dir


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of model environments per test file: a bare environment is built once (a venv)."""
    return tmp_path_factory.mktemp("envcache")


@pytest.fixture
def cache(env_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$REGISTRY_ENV_CACHE for this test: the file's environment cache."""
    from registry.runner import environment

    monkeypatch.setenv(environment.CACHE_ENV, str(env_cache))
    return env_cache
