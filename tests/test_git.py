"""The git plumbing readers agree with git itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from registry.repo import git
from tests.conftest import git as run_git


def test_parse_tree_agrees_with_ls_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "-q")
    names = ["plain.yaml", "with space", "ünïcode", "tab\there", "1.0.0", "a\\b", "x" * 200]
    for name in names:
        (repo / name).write_text(name)
    (repo / "sub").mkdir()
    (repo / "sub" / "inner").write_text("inner")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "link").symlink_to("plain.yaml")
    run_git(repo, "add", "-A")
    run_git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "tree")
    raw = subprocess.run(["git", "cat-file", "tree", "HEAD^{tree}"], cwd=repo, capture_output=True,
                         check=True).stdout
    listed = subprocess.run(["git", "ls-tree", "-z", "HEAD"], cwd=repo, capture_output=True,
                            check=True).stdout.decode()
    expected = {}
    for record in filter(None, listed.split("\0")):
        meta, _, name = record.partition("\t")
        mode, _kind, sha = meta.split()
        expected[name] = (mode.lstrip("0") if mode == "040000" else mode, sha)
    assert git.parse_tree(raw) == expected
    assert len(expected) == len(names) + 3


def test_a_name_with_a_line_break_cannot_shift_the_reader_onto_other_files(tmp_path: Path) -> None:
    # `git cat-file --batch` takes one request per line: "HEAD:a\nb" would be two, and every
    # later answer would belong to the name before it (here `a` would read as b's bytes).
    from registry.errors import GitError
    from registry.repo.git import CatFile

    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "--quiet")
    for name, text in {"a": "A", "b": "B", "a\nb": "EVIL"}.items():
        (repo / name).write_text(text)
    run_git(repo, "add", "--all")
    run_git(repo, "commit", "--quiet", "-m", "files")
    with CatFile(repo) as cat:
        with pytest.raises(GitError, match="line break"):
            cat.read_many(["HEAD:a\nb", "HEAD:a"])
        assert cat.read_many(["HEAD:a", "HEAD:b"]) == [b"A", b"B"]  # the reader is still in step


def test_a_reader_whose_git_stopped_says_so_instead_of_missing(tmp_path: Path) -> None:
    from registry.errors import GitError
    from registry.repo.git import CatFile

    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "--quiet")
    (repo / "a").write_text("A")
    run_git(repo, "add", "a")
    run_git(repo, "commit", "--quiet", "-m", "a")
    with CatFile(repo) as cat:
        cat._proc.kill()
        cat._proc.wait()
        with pytest.raises(GitError, match="git cat-file failed"):
            cat.read("HEAD:a")
