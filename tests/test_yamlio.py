"""Safe YAML: duplicate keys, alias bombs, size limits, located errors, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from registry.errors import ValidationError
from registry.files import schemas, yamlio

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def problem(text: str) -> str:
    with pytest.raises(ValidationError) as info:
        yamlio.loads(text, "card.yaml")
    [found] = info.value.problems
    return str(found)


def test_duplicate_key_is_refused_with_both_lines() -> None:
    assert problem("a: 1\nb: 2\na: 3\n") == (
        "card.yaml:3: duplicate key 'a' (first defined on line 1); keep one of them"
    )


def test_nested_duplicate_key() -> None:
    assert problem("metrics:\n  accuracy: 1\n  accuracy: 2\n").startswith("card.yaml:3: duplicate key 'accuracy'")


def test_alias_bomb_is_refused_quickly() -> None:
    # Refused at the count (100,000 nodes), not after expanding 10^9: no clock needed to see it.
    assert "aliases expand to more than 100000 nodes" in problem(BILLION_LAUGHS)


def test_small_aliases_are_fine() -> None:
    assert yamlio.loads("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_merge_keys_are_refused() -> None:
    assert "merge keys" in problem("base: &b {x: 1}\nother:\n  <<: *b\n")


def test_broken_yaml_names_the_line() -> None:
    assert problem("a: [1, 2\nb: 3\n").startswith("card.yaml:")
    assert "invalid YAML" in problem("a: b: c\n")


def test_size_limit_is_checked_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (yamlio.MAX_YAML_BYTES + 1))
    with pytest.raises(ValidationError, match="over the 1048576-byte limit"):
        yamlio.load_file(big)


def test_dates_stay_text_so_the_schema_checks_them() -> None:
    assert yamlio.loads("created: 2026-01-02\n") == {"created": "2026-01-02"}


def test_python_tags_are_refused() -> None:
    assert "invalid YAML" in problem("x: !!python/object/apply:os.system ['true']\n")


def test_schema_errors_carry_line_and_field() -> None:
    text = "name: m\nversion: 1.0.0\ndescription: d\ncreated: 2026-01-01\nframework: f\ntask: t\nmetrics:\n  accuracy: high\nartifacts: []\n"
    problems = schemas.validate("card", yamlio.loads(text), "card.yaml", text)
    rendered = sorted(str(p) for p in problems)
    assert "card.yaml:8: metrics.accuracy: expected number, got str 'high'" in rendered
    assert any(p.startswith("card.yaml:9: artifacts:") for p in rendered)


def test_unquoted_number_version_gets_a_hint() -> None:
    text = "production: 1.0\n"
    [found] = schemas.validate("stages", yamlio.loads(text), "stages.yaml", text)
    assert str(found).startswith("stages.yaml:1: production: expected string, got float 1.0 (quote it")


def test_atomic_write_replaces_and_keeps_normal_mode(tmp_path: Path) -> None:
    target = tmp_path / "f.yaml"
    target.write_text("old")
    yamlio.atomic_write(target, "new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["f.yaml"]  # no temp file left behind


def test_atomic_write_fsyncs_the_file_and_then_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename is durable only once the folder is fsynced (files.fsutil, the one atomic write)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yamlio.atomic_write(tmp_path / "f.yaml", "new")
    assert synced == ["file", "folder"]


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.yaml"
    target.write_text("old")

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        yamlio.atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.yaml"]
