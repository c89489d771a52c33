"""The git plumbing readers agree with git itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

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
