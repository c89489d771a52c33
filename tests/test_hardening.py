"""Text a pull request writes (card fields, model.yaml, commit authors, reasons, file names)
reaches people's terminals only neutralised: no escape sequence, no bidirectional override.
JSON keeps it exact (JSON escapes it)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from registry.files.safetext import first_control, printable
from tests.conftest import CARD, Result, as_user, git

OSC8 = "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\"  # a hyperlink hiding where it goes
CLEAR = "\x1b[2J"  # clears the screen
EVIL_AUTHOR = "Eve\x1b[31m \u202eresU"  # red, then right-to-left
UNSAFE = ("\x1b", "\x9b", "\x07", "\r", "\u202e", "\u2066")


def _clean(result: Result) -> str:
    text = result.out + result.err
    for char in UNSAFE:
        assert char not in text, (char, text)
    return text


def test_printable_escapes_control_and_bidi_characters_only() -> None:
    assert printable("café → ok\n\tdone ✓") == "café → ok\n\tdone ✓"
    assert printable(OSC8) == "\\x1b]8;;http://evil\\x1b\\click\\x1b]8;;\\x1b\\"
    assert printable("a\rb\x08c\x7fd\x9be\x00") == "a\\x0db\\x08c\\x7fd\\x9be\\x00"
    assert printable("\u202eabc\u2066\u2069\u200f") == "\\u202eabc\\u2066\\u2069\\u200f"
    assert first_control("plain\ttext\n") is None and first_control("ab\x1b") == 2


def test_show_log_and_scan_print_no_terminal_control_characters(
        registry_dir: Path, inputs: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> None:
    card = yaml.safe_load(CARD) | {"description": OSC8}
    (inputs / "card.yaml").write_text(yaml.safe_dump(card))
    as_user(monkeypatch, (EVIL_AUTHOR, "eve@example.com"))
    done = cli("register", "credit-approval", "1.0.0", "--card", str(inputs / "card.yaml"),
               "--artifact", str(inputs / "config.json"), "--no-branch", cwd=registry_dir)
    assert done.code == 0, done.err
    done = cli("promote", "credit-approval", "1.0.0", "--to", "staging", "--reason", "ok",
               "--no-branch", cwd=registry_dir)
    assert done.code == 0, done.err
    # promote refuses such a reason; a hand-made commit (as a PR may hold) still carries one.
    message = git(registry_dir, "log", "-1", "--format=%B").replace("Reason: ok", f"Reason: ok{CLEAR}")
    git(registry_dir, "commit", "--quiet", "--amend", "-m", message)
    model_yaml = registry_dir / "models/credit-approval/model.yaml"
    data = yaml.safe_load(model_yaml.read_text())
    model_yaml.write_text(yaml.safe_dump(data | {"description": f"Credit{CLEAR}"}))
    git(registry_dir, "commit", "--quiet", "-am", "describe")

    version = _clean(cli("show", "credit-approval@1.0.0", cwd=registry_dir))
    assert "\\x1b]8;;http://evil\\x1b\\click" in version  # visible, inert
    assert "Eve\\x1b[31m \\u202eresU" in version  # the history's author
    model = _clean(cli("show", "credit-approval", cwd=registry_dir))
    assert "Credit\\x1b[2J" in model
    log = _clean(cli("log", cwd=registry_dir))
    assert "ok\\x1b[2J" in log and "Eve\\x1b[31m \\u202eresU" in log
    _clean(cli("log", "credit-approval", "--format", "table", cwd=registry_dir))
    _clean(cli("ls", cwd=registry_dir))

    # JSON stays exact.
    shown = json.loads(cli("show", "credit-approval@1.0.0", "--json", cwd=registry_dir).out)
    assert shown["description"] == OSC8
    entries = json.loads(cli("log", "--json", cwd=registry_dir).out)
    assert entries[-1]["reason"] == f"ok{CLEAR}" and entries[-1]["performed_by"].startswith(EVIL_AUTHOR)

    # A file name is attacker-written too.
    evil = inputs / f"weights{CLEAR}.bin"
    evil.write_bytes(b"\x00" * 16)
    scanned = _clean(cli("scan", str(evil), cwd=registry_dir))
    assert "weights\\x1b[2J.bin" in scanned
