"""CODEOWNERS and the approval gate: owners that cannot be read never shrink who must approve."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from registry.errors import ValidationError
from registry.files import codeowners
from tests.conftest import Result, git, merge

MODEL = "models/credit-approval/model.yaml"


@pytest.mark.parametrize("data", [{"owners": ["@alice", 42]}, {"owners": "@alice"}, ["@alice"]])
def test_owners_that_are_not_a_list_of_handles_are_refused_not_dropped(data: object) -> None:
    with pytest.raises(ValidationError, match="owners must be a list of handles"):
        codeowners.owners_of(data, MODEL)


def test_no_owners_is_no_owners() -> None:
    assert codeowners.owners_of(None) == codeowners.owners_of({"description": "x"}) == []
    assert codeowners.owners_of({"owners": ["@a", "@b"]}) == ["@a", "@b"]


@pytest.fixture
def owned(registry_dir: Path, inputs: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Path:
    """credit-approval on main, owned by @alice and @bob, with CODEOWNERS generated."""
    repo = registry_dir
    result = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "config.json"), cwd=repo)
    assert result.code == 0, result.err
    merge(repo, "register/credit-approval/1.0.0", monkeypatch)
    model = repo / MODEL
    data = yaml.safe_load(model.read_text())
    model.write_text(yaml.safe_dump({**data, "owners": ["@alice", "@bob"]}))
    assert cli("codeowners", cwd=repo).code == 0
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "Owners")
    return repo


@pytest.mark.parametrize("broken", ["owners: ['@alice', 42]\n", "owners: ['@alice'\n"])
def test_a_pr_that_breaks_model_yaml_keeps_the_base_owners(broken: str, owned: Path,
                                                           cli: Callable[..., Result]) -> None:
    """The PR also drops @bob from CODEOWNERS, as a generator that skips what it cannot read would."""
    repo = owned
    git(repo, "switch", "--quiet", "-c", "drop-bob")
    model = repo / MODEL
    model.write_text("".join(line for line in model.read_text().splitlines(keepends=True)
                             if not line.startswith(("owners:", "- '@", "- \"@"))) + broken)
    owners_file = repo / codeowners.CODEOWNERS_FILE
    owners_file.write_text(owners_file.read_text().replace(" @bob", ""))
    git(repo, "commit", "--quiet", "-am", "Break model.yaml")

    result = cli("check", "--base", "main", "--gate", "approval", "--json", "-", cwd=repo)

    gates = json.loads(result.out)["gates"]
    failed = [g["message"] for g in gates if g["status"] == "fail"]
    assert result.code == 1, gates
    assert any("owners unreadable, so the base branch's owners still apply (@alice, @bob)" in m for m in failed)
    assert any("CODEOWNERS is out of date" in m for m in failed)  # @bob's lines must stay
