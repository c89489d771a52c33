"""`registry check`: each gate fails on the PR that breaks it, naming the file; valid PRs pass."""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from registry.signing.bundle import sign_folder
from registry.signing.keys import generate_keypair, read_private_key
from tests.conftest import Result, git, merge

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


def version_files(folder: Path, accuracy: float = 0.95, predict: str = PREDICT) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": np.ones(4, np.float32)}, str(folder / "model.safetensors"))
    (folder / "predict.py").write_text(predict)
    (folder / "card.yaml").write_text(CARD.format(accuracy=accuracy))
    return folder


def register_card(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, card_text: str, *,
                  sign: bool = False) -> None:
    """Register m@version (weights and predict.py) from card_text; signed with tmp_path's release key."""
    src = version_files(tmp_path / f"in-{version}")
    (src / "card.yaml").write_text(card_text)
    result = cli("register", "m", version, "--card", str(src / "card.yaml"), "--artifact",
                 str(src / "model.safetensors"), "--artifact", str(src / "predict.py"), cwd=repo)
    assert result.code == 0, result.err
    if sign:
        sign_m(repo, tmp_path, version)


def sign_m(repo: Path, tmp_path: Path, version: str) -> None:
    """Sign m@version with tmp_path's release key, in a commit of its own."""
    folder = repo / f"models/m/{version}"
    sign_folder(folder, "m", version, read_private_key(tmp_path / "release.key"))
    git(repo, "add", str(folder / "signature.json"))
    git(repo, "commit", "--quiet", "-m", f"Sign m@{version}")


@pytest.fixture
def gated(registry_dir: Path, tmp_path: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with a policy, a trusted key, and m@1.0.0 registered, signed and merged."""
    (registry_dir / "keys").mkdir()
    generate_keypair(tmp_path / "release")
    (registry_dir / "keys/release.pub").write_bytes((tmp_path / "release.pub").read_bytes())
    (registry_dir / "registry.yaml").write_text(POLICY)
    assert cli("codeowners", cwd=registry_dir).code == 0
    git(registry_dir, "add", "-A")
    git(registry_dir, "commit", "--quiet", "-m", "Policy and key")
    register(cli, registry_dir, tmp_path, "1.0.0", sign=True)
    merge(registry_dir, "register/m/1.0.0", monkeypatch)
    return registry_dir


def register(cli: Callable[..., Result], repo: Path, tmp_path: Path, version: str, *, sign: bool = False,
             extra: list[Path] | None = None, **files: object) -> None:
    src = version_files(tmp_path / f"in-{version}", **files)  # type: ignore[arg-type]
    args = ["register", "m", version, "--card", str(src / "card.yaml"), "--artifact", str(src / "model.safetensors"),
            "--artifact", str(src / "predict.py")]
    for path in extra or []:
        args += ["--artifact", str(path)]
    result = cli(*args, cwd=repo)
    assert result.code == 0, result.err
    if sign:
        sign_m(repo, tmp_path, version)


def check(cli: Callable[..., Result], repo: Path, tmp_path: Path) -> dict[str, object]:
    out = tmp_path / "report.json"
    summary = tmp_path / "summary.md"
    result = cli("check", "--base", "main", "--json", str(out), "--summary", str(summary), cwd=repo)
    report = json.loads(out.read_text())
    assert result.code == (0 if report["passed"] else 1), result.err
    assert "Traceback" not in result.out + result.err
    assert summary.read_text().startswith("## registry check")
    return report  # type: ignore[no-any-return]


def failures(report: dict[str, object]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for gate in report["gates"]:  # type: ignore[attr-defined]
        if gate["status"] == "fail":
            found.setdefault(gate["gate"], []).append(gate["message"])
    return found


def promote_on_main(cli: Callable[..., Result], repo: Path, version: str, *stages: str) -> None:
    git(repo, "switch", "--quiet", "main")
    for stage in stages:
        result = cli("promote", "m", version, "--to", stage, "--reason", "setup", "--no-branch", cwd=repo)
        assert result.code == 0, result.err


def test_valid_registration_and_promotion_pass(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True)
    report = check(cli, gated, tmp_path)
    assert failures(report) == {}
    statuses = {(g["gate"], g["status"]) for g in report["gates"]}  # type: ignore[attr-defined]
    assert {("scan", "pass"), ("format", "pass"), ("smoke", "pass"), ("consistency", "pass"),
            ("signature", "pass")} <= statuses
    git(gated, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.0.0", "--to", "staging", "--reason", "ok", cwd=gated).code == 0
    report = check(cli, gated, tmp_path)
    assert failures(report) == {}
    assert {"lifecycle", "metrics", "smoke", "latency", "approval"} <= {
        g["gate"] for g in report["gates"] if g["status"] == "pass"}  # type: ignore[attr-defined]


def test_schema_gate_wrong_type(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    card = gated / "models/m/1.1.0/card.yaml"
    card.write_text(card.read_text().replace("task: classification", "task: [classification]"))
    git(gated, "commit", "--quiet", "-am", "edit")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/1.1.0/card.yaml:" in m and "task" in m for m in fails["schema"])


def test_consistency_gate_digest_mismatch(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    card = gated / "models/m/1.1.0/card.yaml"
    data = yaml.safe_load(card.read_text())
    old = next(a["sha256"] for a in data["artifacts"] if a["path"] == "model.safetensors")
    card.write_text(card.read_text().replace(old, "f" * 64))
    git(gated, "commit", "--quiet", "-am", "edit digest")
    fails = failures(check(cli, gated, tmp_path))
    # The one consistency rule's message (also `registry validate`'s): the card's line and field, the file.
    assert any(m.startswith("models/m/1.1.0/card.yaml:") and "models/m/1.1.0/model.safetensors is " in m
               and "f" * 64 in m for m in fails["consistency"])


def test_immutability_gate_edited_merged_card(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "fix-card")
    card = gated / "models/m/1.0.0/card.yaml"
    card.write_text(card.read_text().replace("A small linear model.", "A better description."))
    git(gated, "commit", "--quiet", "-am", "Edit a merged card")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/1.0.0/card.yaml: changes a file of m@1.0.0, which is already merged" in m
               for m in fails["immutability"])


def test_lifecycle_gate_development_to_production(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "skip-stages")
    (gated / "models/m/stages.yaml").write_text("production: 1.0.0\n")
    git(gated, "commit", "--quiet", "-am", "Straight to production")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/stages.yaml: development → production is not allowed" in m for m in fails["lifecycle"])


def test_two_productions_fail_schema(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "two")
    (gated / "models/m/stages.yaml").write_text("production: 1.0.0\nproduction: 1.0.0\n")
    git(gated, "commit", "--quiet", "-am", "Two productions")
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/stages.yaml:2: duplicate key 'production'" in m for m in fails["schema"])


def test_format_gate_header_past_the_end(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    broken = tmp_path / "broken" / "weights.safetensors"
    broken.parent.mkdir()
    header = b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'
    broken.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    register(cli, gated, tmp_path, "1.1.0", extra=[broken])
    fails = failures(check(cli, gated, tmp_path))
    assert any(m.startswith("models/m/1.1.0/weights.safetensors:") for m in fails["format"])


class Payload:
    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, ("touch /tmp/registry-test-pwned",))


def test_scan_gate_pickle_calling_os_system(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    evil = tmp_path / "evil" / "extra.pkl"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(Payload()))
    register(cli, gated, tmp_path, "1.1.0", extra=[evil])
    report = check(cli, gated, tmp_path)
    fails = failures(report)
    assert any(m.startswith("models/m/1.1.0/extra.pkl@") and "system" in m for m in fails["scan"])
    smoke = [g for g in report["gates"] if g["gate"] == "smoke"]  # type: ignore[attr-defined]
    assert smoke and all(g["status"] == "skip" for g in smoke)  # never run after a failed scan
    assert not Path("/tmp/registry-test-pwned").exists()


def test_metrics_gate_below_production_threshold(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True, accuracy=0.85)
    merge(gated, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, gated, "1.1.0", "staging")
    assert cli("promote", "m", "1.1.0", "--to", "production", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert fails.keys() == {"metrics"}
    assert any("models/m/1.1.0/card.yaml: accuracy 0.85 is below the production minimum 0.9" in m
               for m in fails["metrics"])


def test_metrics_gate_regression_against_production(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    register(cli, gated, tmp_path, "1.1.0", sign=True, accuracy=0.92)
    merge(gated, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, gated, "1.0.0", "staging", "production")
    promote_on_main(cli, gated, "1.1.0", "staging")
    assert cli("promote", "m", "1.1.0", "--to", "production", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert any("regresses from production 1.0.0's 0.95" in m for m in fails["metrics"])


def test_smoke_gate_entrypoint_raises(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0", predict="def load(path):\n    return None\n\n\n"
             "def predict(model, inputs):\n    raise RuntimeError('boom')\n")
    fails = failures(check(cli, gated, tmp_path))
    assert any(m.startswith("models/m/1.1.0/predict.py:") and "RuntimeError: boom" in m for m in fails["smoke"])


def test_latency_gate_too_slow(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    slow = PREDICT.replace("def predict(model, inputs):\n", "def predict(model, inputs):\n    import time\n"
                           "    time.sleep(1.2)\n")
    register(cli, gated, tmp_path, "1.1.0", predict=slow)
    merge(gated, "register/m/1.1.0", monkeypatch)
    git(gated, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.1.0", "--to", "staging", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert any("models/m/1.1.0/predict.py: p50" in m and "exceeds the staging limit 500" in m for m in fails["latency"])


def test_signature_gate_unsigned_for_production(gated: Path, tmp_path: Path, cli: Callable[..., Result],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    register(cli, gated, tmp_path, "1.1.0")
    merge(gated, "register/m/1.1.0", monkeypatch)
    promote_on_main(cli, gated, "1.1.0", "staging")
    assert cli("promote", "m", "1.1.0", "--to", "production", "--reason", "try", cwd=gated).code == 0
    fails = failures(check(cli, gated, tmp_path))
    assert fails.keys() == {"signature"}
    assert any("unsigned; the production policy requires a signature" in m for m in fails["signature"])


def test_approval_gate_stale_codeowners(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "-c", "owners")
    model = gated / "models/m/model.yaml"
    model.write_text(model.read_text().replace("owners:", "owners:\n- '@someone'\n#"))
    git(gated, "commit", "--quiet", "-am", "New owner")
    fails = failures(check(cli, gated, tmp_path))
    assert any("CODEOWNERS is out of date" in m for m in fails["approval"])


def test_markdown_summary_shows_the_stage_diff(gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    git(gated, "switch", "--quiet", "main")
    assert cli("promote", "m", "1.0.0", "--to", "staging", "--reason", "ok", cwd=gated).code == 0
    check(cli, gated, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "+staging: [1.0.0]" in summary
    assert "| lifecycle | m@1.0.0 | ✅ pass |" in summary


def test_bad_refs_are_usage_errors(gated: Path, cli: Callable[..., Result]) -> None:
    result = cli("check", "--base", "no-such-branch", cwd=gated)
    assert result.code == 2 and "--base no-such-branch: no such commit" in result.err
    result = cli("check", "--base", "main", "--gate", "nope", cwd=gated)
    assert result.code == 2 and "--gate nope: unknown gate" in result.err
