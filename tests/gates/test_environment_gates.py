"""The model-running gates with a declared environment (`environment: requirements.txt` in the card)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result
from tests.gates.conftest import check, failures, gate, register
from tests.test_environments import IN_ENVIRONMENT, MISSING_MODULE


def requirements_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reqs" / "requirements.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_smoke_gate_runs_the_model_in_its_declared_environment(
        gated: Path, tmp_path: Path, cli: Callable[..., Result], cache: Path) -> None:
    register(cli, gated, tmp_path, "1.1.0", predict=IN_ENVIRONMENT.format(cache=str(cache)),
             extra=[requirements_file(tmp_path, "# the stdlib is enough\n")],
             card_extra="environment: requirements.txt\n")
    report = check(cli, gated, tmp_path)
    smoke = gate(report, "smoke")
    assert [r["status"] for r in smoke] == ["pass"], smoke


def test_the_smoke_gate_refuses_an_option_line_with_its_file_and_line(
        gated: Path, tmp_path: Path, cli: Callable[..., Result], cache: Path) -> None:
    register(cli, gated, tmp_path, "1.1.0", extra=[
        requirements_file(tmp_path, "# deps\n--extra-index-url https://evil.example/simple\n")],
        card_extra="environment: requirements.txt\n")
    fails = failures(check(cli, gated, tmp_path))
    assert any(m.startswith("environment: models/m/1.1.0/requirements.txt:2: the option --extra-index-url")
               for m in fails["smoke"]), fails


def test_the_smoke_gate_without_an_environment_is_unchanged_and_says_how_to_declare_one(
        gated: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    register(cli, gated, tmp_path, "1.1.0", predict=MISSING_MODULE)
    fails = failures(check(cli, gated, tmp_path))
    assert any(m.startswith("models/m/1.1.0/predict.py: ") and "No module named" in m
               and "environment: requirements.txt" in m for m in fails["smoke"]), fails
