"""The workflows run code a pull request controls: what they let it do.

- Nothing of the PR's tree is importable by the Python that runs pip and `registry`: every
  such call is `python -I` (no current directory or script folder on sys.path, no PYTHON*
  variables, no user site), the install step works outside the checkout.
- The job holding the DVC credentials (`fetch`) runs none of the PR's code; the job running
  the gates and the model (`gates`) has no secret and a read-only token; the bytes go from
  one to the other as a workflow artifact (`registry.handover`), placed only where the plan
  says, never through a link.
- Every checkout keeps no token; every action is pinned by commit SHA.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.changes import workflows as templates
from registry.errors import RegistryError
from registry.gates import handover
from tests.conftest import Result, git
from tests.test_workflows import (
    EXPRESSIONS,
    PROJECT,
    WORKFLOWS,
    load,
    on_origin,  # noqa: F401 - the fixture
    open_pr,
    run_job,
    run_pr,
    runner_clone,
    step,
)

PYTHON_WORD = re.compile(r"^(python[0-9.]*|pip[0-9.]*|registry|dvc)$")
ISOLATED_PYTHONS = {"$REGISTRY_PYTHON", "$python", "python"}
SHA_PIN = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w.-]+)@([0-9a-f]{40})  # v\d+(\.\d+)*$")


def all_workflows(repo: Path) -> dict[str, str]:
    texts = {kind: make(repo) for kind, make in WORKFLOWS.items()}
    texts["ci"] = (PROJECT / ".github/workflows/ci.yml").read_text()
    return texts


def run_steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, job in workflow["jobs"].items():
        for item in job["steps"]:
            if "run" in item:
                yield name, item


def commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a step script, as words (control words and comments dropped)."""
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        while words and words[0] in ("if", "then", "else", "fi", "[", "!"):
            words = words[1:]
        if words and not re.match(r"^\w+=", words[0]):
            yield words


# -- 1. nothing of the PR's tree is importable ---------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_every_python_pip_or_registry_call_is_isolated(kind: str, registry_dir: Path) -> None:
    workflow = load(WORKFLOWS[kind](registry_dir))
    calls = 0
    for job, item in run_steps(workflow):
        for words in commands(item["run"]):
            if words[0] in ("echo", "cd", "mkdir"):
                continue
            command = words[0]
            assert not PYTHON_WORD.match(os.path.basename(command)) or command == "python", \
                f"{job}: {' '.join(words)}: run it as python -I -m ..."
            if command in ISOLATED_PYTHONS:
                calls += 1
                assert words[1:3] in (["-I", "-m"],), f"{job}: {' '.join(words)}: not python -I -m"
        if item.get("id") == "install":
            first = next(commands(item["run"]))
            assert first == ["cd", "$RUNNER_TEMP"], f"{job}: the install step must leave the checkout first"
    assert calls >= 10


def marker_modules(repo: Path, markers: Path) -> list[str]:
    """Modules at the PR's root that, if ever imported, leave a file in `markers`."""
    names = ["pip/__init__.py", "pip/__main__.py", "registry/__init__.py", "registry/__main__.py",
             "yaml/__init__.py", "click/__init__.py", "dvc/__init__.py", "numpy/__init__.py",
             "safetensors/__init__.py", "sitecustomize.py", "usercustomize.py", "venv/__init__.py",
             "venv/__main__.py"]
    for name in names:
        path = repo / name
        path.parent.mkdir(exist_ok=True)
        tag = name.replace("/", "-")
        path.write_text(f"import pathlib\npathlib.Path({str(markers / tag)!r}).write_text('imported')\n"
                        "print('## registry check: ✅ All gates passed')\nraise SystemExit(0)\n")
    return names


def pr_with_impostors(repo: Path, cli: Callable[..., Result], inputs: Path, markers: Path) -> str:
    branch = open_pr(repo, cli, inputs)
    git(repo, "switch", "--quiet", branch)
    names = marker_modules(repo, markers)
    git(repo, "add", *names)
    git(repo, "commit", "--quiet", "-m", "Helpers")
    git(repo, "push", "--quiet", "origin", branch)
    return branch


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_modules_at_the_pr_root_are_never_imported(kind: str, on_origin: Path,  # noqa: F811
                                                   inputs: Path, tmp_path: Path,
                                                   cli: Callable[..., Result]) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    branch = pr_with_impostors(on_origin, cli, inputs, markers)
    run = run_pr(WORKFLOWS[kind](on_origin), on_origin, tmp_path, branch)

    assert (run.gates_clone / "pip/__init__.py").is_file()  # the impostors are in both checkouts
    assert sorted(p.name for p in markers.iterdir()) == []
    for runs in (run.fetch, run.gates):
        assert all(r.outcome == "success" for r in runs), [(r.run, r.err) for r in runs if r.outcome != "success"]
    assert step(run.gates, "registry check").code == 0


@pytest.mark.slow
def test_the_real_install_step_ignores_a_pip_in_the_checkout(on_origin: Path, inputs: Path,  # noqa: F811
                                                            tmp_path: Path, cli: Callable[..., Result],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The exact install step, for real: a venv under $RUNNER_TEMP, pip from the index; this
    # project's source as the package (gitops-registry installed from a path).
    markers = tmp_path / "markers"
    markers.mkdir()
    branch = pr_with_impostors(on_origin, cli, inputs, markers)
    monkeypatch.setitem(EXPRESSIONS, "inputs.registry-package", str(PROJECT))
    clone = runner_clone(on_origin, tmp_path, branch)
    runs = run_job(WORKFLOWS["reusable"](on_origin), "fetch", clone, tmp_path, {templates.SKIP_INSTALL_ENV: ""})
    installed = step(runs, "pip install")
    assert installed.outcome == "success", installed.out[-2000:] + installed.err[-2000:]
    assert (tmp_path / "runner-temp-fetch/registry-venv/bin/python").exists()
    assert sorted(p.name for p in markers.iterdir()) == []
    assert step(runs, "registry fetch").outcome == "success"


# -- 2. the fetch job holds the credentials and runs nothing of the PR; the gates job holds none --


def test_only_the_pull_step_sees_the_dvc_credentials(registry_dir: Path) -> None:
    for kind, make in WORKFLOWS.items():
        text = make(registry_dir)
        workflow = load(text)
        jobs = workflow["jobs"]
        with_secrets = [(job, item.get("name")) for job, spec in jobs.items() for item in spec["steps"]
                        if "secrets." in str(item)]
        assert with_secrets == [("fetch", "Pull the checked versions' artifacts from DVC")], kind
        for job, spec in jobs.items():
            assert "secrets." not in str(spec.get("env", {})), (kind, job)
            assert spec["permissions"] == {"contents": "read"}, (kind, job)
        pull = next(item for item in jobs["fetch"]["steps"] if "secrets." in str(item))
        assert [w[:5] for w in commands(pull["run"]) if w[0] not in ("-L", "rm", "git")] == \
            [["$REGISTRY_PYTHON", "-I", "-m", "registry", "fetch"]]
        # The fetch job runs no gate and none of the model's code; the gates job runs them.
        fetch_runs = " ".join(item["run"] for item in jobs["fetch"]["steps"] if "run" in item)
        assert "registry check" not in fetch_runs
        gates_runs = " ".join(item["run"] for item in jobs["gates"]["steps"] if "run" in item)
        assert "registry check" in gates_runs and "registry fetch" not in gates_runs
        assert jobs["gates"]["needs"] == "fetch"
        assert "secrets" not in str(jobs["gates"])


def test_the_dvc_remote_comes_from_the_base_branch(on_origin: Path, inputs: Path,  # noqa: F811
                                                  tmp_path: Path, cli: Callable[..., Result]) -> None:
    # A PR that points DVC at another remote (another bucket the credentials can read, or an
    # endpoint of the author's) still pulls from the base branch's remote.
    branch = open_pr(on_origin, cli, inputs)
    git(on_origin, "switch", "--quiet", branch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = on_origin / ".dvc/config"
    config.write_text(config.read_text().replace(str(tmp_path / "dvc-remote"), str(elsewhere)))
    assert str(elsewhere) in config.read_text()
    (on_origin / ".dvc/config.local").write_text(f"['remote \"storage\"']\n    url = {elsewhere}\n")
    git(on_origin, "add", "-f", ".dvc/config", ".dvc/config.local")
    git(on_origin, "commit", "--quiet", "-m", "Use my remote")
    git(on_origin, "push", "--quiet", "origin", branch)
    run = run_pr(WORKFLOWS["reusable"](on_origin), on_origin, tmp_path, branch)

    fetched = step(run.fetch, "registry fetch")
    assert fetched.outcome == "success", fetched.err
    assert (run.gates_clone / "models/credit-approval/1.1.0/model.safetensors").read_bytes() == \
        (inputs / "model.safetensors").read_bytes()
    assert list(elsewhere.iterdir()) == []


def test_the_bytes_go_from_fetch_to_gates_as_an_artifact(registry_dir: Path) -> None:
    for kind, make in WORKFLOWS.items():
        jobs = load(make(registry_dir))["jobs"]
        uploads = [item["with"] for item in jobs["fetch"]["steps"]
                   if str(item.get("uses", "")).startswith("actions/upload-artifact@")]
        downloads = [item["with"] for item in jobs["gates"]["steps"]
                     if str(item.get("uses", "")).startswith("actions/download-artifact@")]
        assert [u["name"] for u in uploads] == [d["name"] for d in downloads] == [templates.FETCHED_ARTIFACT], kind


def test_every_checkout_keeps_no_token_and_every_action_is_pinned(registry_dir: Path) -> None:
    for kind, text in all_workflows(registry_dir).items():
        uses = [line for line in text.splitlines() if re.match(r"^\s*(- )?uses:", line)]
        assert uses, kind
        for line in uses:
            assert SHA_PIN.match(line), f"{kind}: {line.strip()}: pin by commit SHA, the tag in a comment"
        workflow = load(text)
        for job, spec in workflow["jobs"].items():
            for item in spec["steps"]:
                if str(item.get("uses", "")).startswith("actions/checkout@"):
                    assert item["with"]["persist-credentials"] is False, (kind, job)
    assert set(templates.ACTIONS) == {"checkout", "setup-python", "upload-artifact", "download-artifact", "cache"}


# -- the handover -------------------------------------------------------------------------------


def write(path: Path, data: bytes = b"bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def packed(tmp_path: Path, files: dict[str, bytes]) -> Path:
    source = tmp_path / "source"
    write(source / "paths.json", repr(list(files)).replace("'", '"').encode())
    for index, data in enumerate(files.values()):
        write(source / str(index), data)
    return source


def test_unpack_places_only_planned_files(tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    outputs = ["models/m/1.0.0/model.safetensors", "data/eval"]
    placed = handover.unpack(root, outputs, packed(tmp_path, {"models/m/1.0.0/model.safetensors": b"w",
                                                              "data/eval/part-0.npz": b"e"}))
    assert placed == ["models/m/1.0.0/model.safetensors", "data/eval/part-0.npz"]
    assert (root / "models/m/1.0.0/model.safetensors").read_bytes() == b"w"


@pytest.mark.parametrize("path", ["registry/__init__.py", ".github/workflows/registry.yml", "../outside",
                                  "/etc/x", "models/m/1.0.0/model.safetensors/../../../../x", ".git/hooks/post-checkout",
                                  "models/m/1.0.0/model.safetensorsX"])
def test_unpack_refuses_a_file_the_plan_does_not_name(path: str, tmp_path: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    with pytest.raises(RegistryError, match="is not a file that registry fetch pulls"):
        handover.unpack(root, ["models/m/1.0.0/model.safetensors"], packed(tmp_path, {path: b"x"}))
    assert list(root.iterdir()) == []
    assert not (tmp_path / "outside").exists()


def test_unpack_never_writes_through_a_link_nor_over_a_file(tmp_path: Path) -> None:
    root = tmp_path / "work"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "models/m").mkdir(parents=True)
    (root / "models/m/1.0.0").symlink_to(outside)
    with pytest.raises(RegistryError, match="is not a folder"):
        handover.unpack(root, ["models/m/1.0.0/model.safetensors"],
                        packed(tmp_path, {"models/m/1.0.0/model.safetensors": b"x"}))
    assert list(outside.iterdir()) == []

    (root / "models/m/1.0.0").unlink()
    write(root / "models/m/1.0.0/model.safetensors", b"tracked")
    with pytest.raises(RegistryError, match="already in the work tree"):
        handover.unpack(root, ["models/m/1.0.0/model.safetensors"],
                        packed(tmp_path / "again", {"models/m/1.0.0/model.safetensors": b"x"}))
    assert (root / "models/m/1.0.0/model.safetensors").read_bytes() == b"tracked"


def test_pack_hands_over_no_link(tmp_path: Path) -> None:
    root = tmp_path / "work"
    secret = write(tmp_path / "runner" / ".credentials", b"runner token")
    write(root / "models/m/1.0.0/model.safetensors", b"w")
    (root / "models/m/2.0.0").mkdir(parents=True)
    (root / "models/m/2.0.0/model.safetensors").symlink_to(secret)
    (root / "models/n").mkdir(parents=True)
    (root / "models/n/1.0.0").symlink_to(secret.parent)
    out = tmp_path / "out"
    moved = handover.pack(root, ["models/m/1.0.0/model.safetensors", "models/m/2.0.0/model.safetensors",
                                 "models/n/1.0.0/.credentials"], out)
    assert moved == ["models/m/1.0.0/model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == ["0", "paths.json"]
    assert secret.read_bytes() == b"runner token"


def test_handover_command_errors_are_one_line(on_origin: Path, tmp_path: Path,  # noqa: F811
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(on_origin)
    assert handover.main(["unpack", "--base", "main", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert handover.main(["pack", "--base", "origin/no-such", str(tmp_path / "out")]) == 2
    assert "--base origin/no-such: no such commit" in capsys.readouterr().err
