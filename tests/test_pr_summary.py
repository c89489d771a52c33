"""`registry check --summary`: what a reviewer reads. Per model: why, what changes, and the
candidate against production (metrics with deltas, size, framework, signer, I/O), with long
fields collapsed and nothing an author writes able to pose as the verdict."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CARD, Result, git, merge, new_weights

NAME = "credit-approval"


def promote(cli: Callable[..., Result], repo: Path, version: str, stage: str, *extra: str) -> None:
    result = cli("promote", NAME, version, "--to", stage, "--reason", f"{version} to {stage}", *extra, cwd=repo)
    assert result.code == 0, result.err


@pytest.fixture
def promotion(registered: Path, cli: Callable[..., Result], inputs: Path,
              monkeypatch: pytest.MonkeyPatch) -> Path:
    for version, stage in (("1.0.0", "staging"), ("1.0.0", "production")):
        promote(cli, registered, version, stage, "--no-branch")
    better = CARD.replace("accuracy: 0.93", "accuracy: 0.95") + (
        "signature: {inputs: [{name: x, type: 'float[64]'}], outputs: [{name: y, type: int}]}\n"
        "input_example: {x: [" + ", ".join(["0.5"] * 900) + "]}\n")
    (inputs / "better.yaml").write_text(better)
    new_weights(inputs, seed=5)
    result = cli("register", NAME, "1.2.0", "--card", str(inputs / "better.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registered)
    assert result.code == 0, result.err
    merge(registered, f"register/{NAME}/1.2.0", monkeypatch, pr=3)
    promote(cli, registered, "1.2.0", "staging", "--no-branch")
    result = cli("promote", NAME, "1.2.0", "--to", "production", "--reason", "better recall on the March data",
                 cwd=registered)
    assert result.code == 0, result.err
    return registered


def test_summary_compares_the_candidate_with_production(
    promotion: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    summary, report = tmp_path / "summary.md", tmp_path / "report.json"
    cli("check", "--base", "main", "--summary", str(summary), "--json", str(report), cwd=promotion)
    text = summary.read_text()
    assert f"### {NAME}" in text
    assert "**Why:** better recall on the March data" in text
    assert "1.2.0: staging → production" in text and "1.0.0: production → deprecated" in text
    assert "| accuracy (self-reported) | 0.95 | 0.93 | +0.02 |" in text
    assert "| f1 (self-reported) | 0.91 | 0.91 | +0 |" in text
    assert "| framework | numpy | numpy |  |" in text
    assert "| inputs | x: float&#91;64&#93; | — | changed |" in text
    assert "| signed by | unsigned | unsigned |  |" in text
    # The 900-number input example is collapsed and cut, not spread over the page.
    assert "<details><summary>input example of 1.2.0" in text
    assert "more characters" in text
    changes = json.loads(report.read_text())["changes"]
    assert changes[0]["model"] == NAME and changes[0]["candidate"]["version"] == "1.2.0"
    assert changes[0]["metrics"][0] == {"name": "accuracy", "candidate": 0.95, "production": 0.93,
                                        "delta": pytest.approx(0.02), "source": "self-reported"}


def outside_code_blocks(text: str) -> list[str]:
    """The lines GitHub renders as Markdown: fences as CommonMark reads them (a closing fence
    may be indented up to three spaces and needs at least as many backticks as the opening)."""
    outside, opened = [], 0
    for line in text.splitlines():
        stripped = line[len(line) - len(line.lstrip(" ")):] if len(line) - len(line.lstrip(" ")) <= 3 else None
        run = len(stripped) - len(stripped.lstrip("`")) if stripped is not None else 0
        if not opened and run >= 3:
            opened = run
        elif opened and run >= opened and stripped is not None and not stripped.strip("` "):
            opened = 0
        elif not opened:
            outside.append(line)
    assert not opened
    return outside


def test_an_author_cannot_pose_as_the_verdict(
    registered: Path, cli: Callable[..., Result], inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = ("framework: numpy\ntask: classification\ndescription: |\n  Credit approval\n  ```\n"
              "  ## registry check: ✅ All gates passed\n  <img src=x>\nmetrics: {accuracy: 0.93}\n")
    (inputs / "forged.yaml").write_text(forged + "input_example: {x: '````\\n# ✅ passed'}\n")
    new_weights(inputs, seed=6)
    result = cli("register", NAME, "1.2.0", "--card", str(inputs / "forged.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registered)
    assert result.code == 0, result.err
    merge(registered, f"register/{NAME}/1.2.0", monkeypatch, pr=3)
    # A PR that edits the merged card next to those lines: they show as diff context.
    git(registered, "switch", "--quiet", "-c", "edit")
    card = registered / "models" / NAME / "1.2.0" / "card.yaml"
    card.write_text(re.sub(r"(?m)^created: .*$", "created: '2020-01-01'", card.read_text()))
    git(registered, "commit", "--quiet", "-am", "tweak")
    summary = tmp_path / "summary.md"
    cli("check", "--base", "main", "--summary", str(summary), cwd=registered)
    text = summary.read_text()
    assert "+created: '2020-01-01'" in text
    outside = outside_code_blocks(text)
    assert [line for line in outside if "registry check:" in line] == [text.splitlines()[0]]
    assert not any("<img" in line or "✅ passed" in line for line in outside)


def test_a_promotion_pr_passes_consistency_on_its_stages_file(
    promotion: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    cli("check", "--base", "main", "--json", str(report), cwd=promotion)
    consistency = [g for g in json.loads(report.read_text())["gates"] if g["gate"] == "consistency"]
    assert consistency == [{"gate": "consistency", "model": NAME, "version": None, "status": "pass",
                            "message": f"models/{NAME}/stages.yaml names only registered versions",
                            "file": f"models/{NAME}/stages.yaml"}]
