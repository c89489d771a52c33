"""What the gate tests share: gated registries, and helpers that register, promote and run `check`.

`gated`: a policy, a trusted key, m@1.0.0 (accuracy 0.95) signed and merged; `regression`: the same
with per-task policy and a regression model; `in_production`: gated with m@1.0.0 in production.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from registry.signing.bundle import sign_folder
from registry.signing.keys import generate_keypair, read_private_key
from tests.conftest import Result, git, merge, snapshot

PREDICT = """\
import numpy as np
from safetensors.numpy import load_file


def load(path):
    return load_file(f"{path}/model.safetensors")


def predict(model, inputs):
    return ((np.asarray(inputs, dtype=np.float32) @ model["weight"]) > 0).astype(int).tolist()
"""

CARD = """\
description: A small linear model.
framework: numpy
task: classification
creator: "@dana"
metrics: {{accuracy: {accuracy}}}
entrypoint: predict.py
input_example: [[0.1, 0.2, 0.3, 0.4]]
"""

POLICY = """\
policy:
  staging:
    metrics: {accuracy: {min: 0.80}}
    latency: {p50_ms: 500, p99_ms: 1000, runs: 5}
    smoke_timeout_s: 20
  production:
    metrics: {accuracy: {min: 0.90}}
    max_regression: {accuracy: {absolute: 0.01}}
    latency: {p50_ms: 500, p99_ms: 1000, runs: 5}
    smoke_timeout_s: 20
    require_signature: true
trusted_keys: [keys/release.pub]
roles: {admin: ["@org/ml-admins"]}
"""

REGRESSION_CARD = """\
description: A small regression model.
framework: numpy
task: regression
creator: "@dana"
metrics: {{rmse: {rmse}, r2: 0.9}}
entrypoint: predict.py
input_example: [[0.1, 0.2, 0.3, 0.4]]
"""

TASKS = """\
  tasks:
    regression:
      staging:
        metrics: {rmse: {max: 0.4}}
      production:
        metrics: {rmse: {max: 0.3}}
        max_regression: {rmse: {absolute: 0.01}}
      canary:
        metrics: {rmse: {max: 0.3}}
        max_regression: {rmse: {absolute: 0.01}}
"""

# POLICY (and its key, roles) with the task overrides added under `policy`.
TASK_POLICY = POLICY.replace("trusted_keys:", TASKS + "trusted_keys:", 1)

HOLDOUT = "datasets/holdout.npz"
EVALUATION = f"""\
evaluation:
  sets:
  - data: {{path: {HOLDOUT}}}
    metrics: [accuracy]
"""


# -- registries ---------------------------------------------------------------------------------------


def _policy_and_key(repo: Path, tmp_path: Path, cli: Callable[..., Result], policy: str) -> None:
    """registry.yaml, tmp_path's release key trusted, CODEOWNERS: one commit on main."""
    (repo / "keys").mkdir()
    generate_keypair(tmp_path / "release")
    (repo / "keys/release.pub").write_bytes((tmp_path / "release.pub").read_bytes())
    (repo / "registry.yaml").write_text(policy)
    assert cli("codeowners", cwd=repo).code == 0
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "Policy and key")


@pytest.fixture
def gated(registry_dir: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with a policy, a trusted key, and m@1.0.0 (accuracy 0.95) registered, signed and merged."""
    _policy_and_key(registry_dir, tmp_path, cli, POLICY)
    register(cli, registry_dir, tmp_path, "1.0.0", sign=True)
    merge(registry_dir, "register/m/1.0.0", monkeypatch)
    return registry_dir


@pytest.fixture
def regression(registry_dir: Path, tmp_path: Path, cli: Callable[..., Result],
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with per-task policy and a trusted key; m@1.0.0 (regression, rmse 0.2) merged, signed."""
    _policy_and_key(registry_dir, tmp_path, cli, TASK_POLICY)
    register_regression(cli, registry_dir, tmp_path, "1.0.0")
    merge(registry_dir, "register/m/1.0.0", monkeypatch)
    return registry_dir


@pytest.fixture
def in_production(gated: Path, cli: Callable[..., Result]) -> Path:
    """The gated registry with m@1.0.0 (accuracy 0.95) in production on main."""
    promote_on_main(cli, gated, "1.0.0", "staging", "production")
    return gated


# -- registering and promoting ------------------------------------------------------------------------


def version_files(folder: Path, accuracy: object = 0.95, predict: str = PREDICT) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": np.ones(4, np.float32)}, str(folder / "model.safetensors"))
    (folder / "predict.py").write_text(predict)
    (folder / "card.yaml").write_text(CARD.format(accuracy=accuracy))
    return folder


def register_card(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, card_text: str, *,
                  sign: bool = False, extra: list[Path] | None = None, predict: str = PREDICT) -> None:
    """Register m@version (weights, predict.py and extra) from card_text; signed with tmp_path's release key."""
    src = version_files(tmp_path / f"in-{version}", predict=predict)
    (src / "card.yaml").write_text(card_text)
    args = ["register", "m", version, "--card", str(src / "card.yaml"), "--artifact", str(src / "model.safetensors"),
            "--artifact", str(src / "predict.py")]
    for path in extra or []:
        args += ["--artifact", str(path)]
    result = cli(*args, cwd=repo)
    assert result.code == 0, result.err
    if sign:
        sign_m(repo, tmp_path, version)


def register(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, *, sign: bool = False,
             extra: list[Path] | None = None, accuracy: object = 0.95, predict: str = PREDICT,
             card_extra: str = "") -> None:
    """Register m@version from CARD (accuracy, then card_extra appended)."""
    register_card(cli, repo, tmp_path, version, CARD.format(accuracy=accuracy) + card_extra, sign=sign,
                  extra=extra, predict=predict)


def register_regression(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, *,
                        rmse: float = 0.2, sign: bool = True, card: str = REGRESSION_CARD) -> None:
    register_card(cli, repo, tmp_path, version, card.format(rmse=rmse), sign=sign)


def sign_m(repo: Path, tmp_path: Path, version: str) -> None:
    """Sign m@version with tmp_path's release key, in a commit of its own."""
    folder = repo / f"models/m/{version}"
    sign_folder(folder, "m", version, read_private_key(tmp_path / "release.key"))
    git(repo, "add", str(folder / "signature.json"))
    git(repo, "commit", "--quiet", "-m", f"Sign m@{version}")


def promote(cli: Callable[..., Result], repo: Path, version: str, stage: str, *, branch: bool = True,
            reason: str = "test") -> None:
    """From main: a promotion PR branch (branch=True), or straight onto main as a merged one."""
    git(repo, "switch", "--quiet", "main")
    args = ["promote", "m", version, "--to", stage, "--reason", reason]
    result = cli(*args, cwd=repo) if branch else cli(*args, "--no-branch", cwd=repo)
    assert result.code == 0, result.err


def promote_on_main(cli: Callable[..., Result], repo: Path, version: str, *stages: str) -> None:
    for stage in stages:
        promote(cli, repo, version, stage, branch=False, reason="setup")


def staged(cli: Callable[..., Result], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           accuracy: float, sign: bool) -> None:
    """m@1.1.0 registered, merged and in staging on main."""
    git(repo, "switch", "--quiet", "main")
    register(cli, repo, tmp_path, "1.1.0", accuracy=accuracy, sign=sign)
    merge(repo, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, repo, "1.1.0", "staging")


def to_canary(cli: Callable[..., Result], repo: Path, traffic: str = "0.1") -> None:
    result = cli("promote", "m", "1.1.0", "--to", "canary", "--traffic", traffic, "--reason", "try", cwd=repo)
    assert result.code == 0, result.err


def write_holdout(path: Path, positives: int, total: int = 20) -> None:
    """Inputs the test model labels 1 (all positive), so its accuracy is positives / total."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.full((total, 4), 0.5, np.float32)
    y = np.array([1] * positives + [0] * (total - positives), np.int64)
    with path.open("wb") as handle:
        np.savez(handle, x=x, y=y)


def on_main(repo: Path, *, config: str | None = None, model_yaml: str | None = None,
            holdout: int | None = None) -> None:
    """Commit policy straight to main, as an admin's merged change."""
    git(repo, "switch", "--quiet", "main")
    if config is not None:
        (repo / "registry.yaml").write_text(config)
    if model_yaml is not None:
        (repo / "models/m/model.yaml").write_text(model_yaml)
    if holdout is not None:
        write_holdout(repo / HOLDOUT, holdout)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "Policy")


# -- running the check --------------------------------------------------------------------------------


def check(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> dict[str, object]:
    out = tmp_path / "report.json"
    summary = tmp_path / "summary.md"
    result = cli("check", "--base", "main", "--json", str(out), "--summary", str(summary), cwd=repo)
    report = json.loads(out.read_text())
    assert result.code == (0 if report["passed"] else 1), result.err
    assert "Traceback" not in result.out + result.err
    assert summary.read_text().startswith("## registry check")
    return report  # type: ignore[no-any-return]


def checked(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> dict[str, object]:
    """`check` on the current branch, asserting it changed nothing in the registry."""
    before = snapshot(repo)
    report = check(cli, repo, tmp_path)
    assert snapshot(repo) == before
    return report


def failures(report: dict[str, object]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for gate in report["gates"]:  # type: ignore[attr-defined]
        if gate["status"] == "fail":
            found.setdefault(gate["gate"], []).append(gate["message"])
    return found


def gate(report: dict[str, object], name: str) -> list[dict[str, object]]:
    return [g for g in report["gates"] if g["gate"] == name]  # type: ignore[attr-defined]
