"""The one error handler (cli/main): exit codes, --traceback and --json on every command."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest

import registry
from registry.cli.main import LAZY_COMMANDS
from registry.cli.main import cli as group
from tests.conftest import Result


def _bug(root: Path) -> object:
    raise KeyError("a bug in the registry")


@pytest.fixture
def buggy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command that opens the registry hits a bug of ours."""
    monkeypatch.setattr(registry, "open", _bug)


def test_a_bug_is_exit_3_with_one_line_and_no_traceback(buggy: None, cli: Callable[..., Result]) -> None:
    result = cli("ls")
    assert result.code == 3
    assert result.err == ("internal error: KeyError: 'a bug in the registry'\n"
                          "This is a bug; run again with --traceback and report it.\n")
    assert "Traceback" not in result.err and result.out == ""


def test_traceback_shows_the_traceback_of_a_bug_and_still_exits_3(buggy: None, cli: Callable[..., Result]) -> None:
    result = cli("--traceback", "ls")
    assert result.code == 3
    assert result.err.startswith("Traceback (most recent call last):\n")
    assert 'raise KeyError("a bug in the registry")' in result.err
    assert result.err.endswith("internal error: KeyError: 'a bug in the registry'\n")


def test_traceback_shows_the_traceback_of_a_user_error_with_its_exit_code(cli: Callable[..., Result],
                                                                          tmp_path: Path) -> None:
    plain = cli("show", "m@1.0.0", cwd=tmp_path)
    shown = cli("--traceback", "show", "m@1.0.0", cwd=tmp_path)
    assert plain.code == shown.code == 1
    assert plain.err.startswith("error: ") and "Traceback" not in plain.err
    assert shown.err.startswith("Traceback (most recent call last):\n") and shown.err.endswith(plain.err)


def test_json_errors_are_one_json_object_on_stdout(buggy: None, cli: Callable[..., Result], tmp_path: Path) -> None:
    bug = cli("ls", "--json")
    assert bug.code == 3 and json.loads(bug.out) == {"error": "internal error: KeyError: 'a bug in the registry'"}
    assert bug.err == ""
    usage = cli("ls", "--json", "--stage", "nowhere")
    assert usage.code == 2 and "nowhere" in json.loads(usage.out)["error"]
    # --json of one call does not leak into the next one in the same process
    assert cli("ls").out == ""


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None, name
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_command_has_json() -> None:
    commands = dict(_commands(group))
    assert {name.split()[0] for name in commands} == set(LAZY_COMMANDS) and "import mlflow" in commands
    missing = [name for name, command in commands.items()
               if not any("--json" in p.opts for p in command.params if isinstance(p, click.Option))]
    assert missing == []


def test_the_json_answers_of_the_change_commands(cli: Callable[..., Result], tmp_path: Path) -> None:
    made = cli("init", str(tmp_path / "reg"), "--dvc-remote", str(tmp_path / "remote"), "--json")
    assert made.code == 0, made.err
    assert json.loads(made.out) == {"root": str(tmp_path / "reg"), "dvc_remote": str(tmp_path / "remote")}
    for command, path in (("codeowners", ".github/CODEOWNERS"), ("workflow", ".github/workflows/registry.yml")):
        result = cli(command, "--json", cwd=tmp_path / "reg")
        assert result.code == 0, result.err
        assert json.loads(result.out) == {"path": path, "changed": False}
