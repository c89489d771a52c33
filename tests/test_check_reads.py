"""`registry check` reads only what the diff touches: counted through the one reader, not timed.

The registries come from tools/synth.py (the benchmark's generator), N and 3N models; the PR
(tools/synth_pr.py) registers one version of one model. A check that read every model.yaml (as the approval gate
once did) or listed the whole models/ folder would read three times as much in the larger one.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from registry.gates import run as check
from registry.repo import git, tree
from registry.repo.blobcache import BlobCache
from registry.repo.registry import Registry

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _reads(monkeypatch: pytest.MonkeyPatch, root: Path, head: str) -> tuple[int, int, check.Report]:
    """Objects read and tree entries listed (through the reader or any ls-tree) by one check."""
    readers: list[tree.Reader] = []
    listed = [0]
    original_init, original_ls_tree = tree.Reader.__init__, git.ls_tree

    def init(self: tree.Reader, where: Path) -> None:
        original_init(self, where)
        readers.append(self)

    def ls_tree(*args: object, **kwargs: object) -> list[git.TreeEntry]:
        entries = original_ls_tree(*args, **kwargs)  # type: ignore[arg-type]
        listed[0] += len(entries)
        return entries

    with monkeypatch.context() as patch:
        patch.setattr(tree.Reader, "__init__", init)
        patch.setattr(git, "ls_tree", ls_tree)
        report = check.run(Registry(root), "main", head)
    return sum(r.objects for r in readers), listed[0], report


def test_a_one_version_registration_reads_the_same_in_a_registry_three_times_larger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(TOOLS))
    import synth
    import synth_pr

    counts = []
    for models in (4, 12):
        built = synth.ensure_registry(tmp_path, models, 2)
        head = synth_pr.registration_pr(built.path, built.busiest_model)
        objects, entries, report = _reads(monkeypatch, built.path, head)
        assert report.passed, [r for r in report.results if r.status == "fail"]
        assert {r.gate for r in report.results} == set(check.GATE_ORDER)
        counts.append((objects, entries))
    assert counts[0] == counts[1]
    assert counts[0][0] > 0  # the reader did the reading


def test_a_tree_reads_a_commit_and_the_work_tree_alike(tmp_path: Path) -> None:
    git.run(["init", "--quiet"], tmp_path)
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "model.yaml").write_text("owners: []\n")
    (tmp_path / "top.yaml").write_text("x: 1\n")
    git.run(["add", "."], tmp_path)
    git.run(["commit", "--quiet", "-m", "one"], tmp_path)
    with closing(tree.Reader(tmp_path)) as reader:
        commit, work = reader.at(git.rev_parse("HEAD", tmp_path)), reader.at(None)
        for side in (commit, work):
            assert side.read("models/m/model.yaml") == b"owners: []\n"
            assert side.read("models/m/missing.yaml") is None
            assert [(e.path, e.kind) for e in side.ls("models")] == [("models/m/model.yaml", "blob")]
            assert [(e.path, e.kind) for e in side.ls("models", recursive=False)] == [("models/m", "tree")]
        assert [e.sha for e in commit.ls("models")] == [git.blob_id(b"owners: []\n")]
        assert reader.objects == 4 and reader.entries == 5


def test_a_limited_blob_cache_keeps_the_newest_entries(tmp_path: Path) -> None:
    git.run(["init", "--quiet"], tmp_path)
    cache = BlobCache(tmp_path, "test-cache", "k", limit=2)
    for blob in ("a", "b", "a", "c"):
        cache.put(blob, True)
    assert list(cache.entries) == ["a", "c"]
    cache.save()
    assert list(BlobCache(tmp_path, "test-cache", "k", limit=2).entries) == ["a", "c"]
