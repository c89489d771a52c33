"""repo/storage: DVC's own failures become StorageError; a bug (ours or DVC's) stays a bug."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dvc.api
import dvc.repo
import pytest
from dvc.exceptions import DvcException, UploadError

from registry.errors import StorageError
from registry.repo import storage


class FakeRepo:
    """Stands in for dvc.repo.Repo; `fail` is raised by the method named `where`."""

    fail: BaseException = DvcException("boom")
    where = ""

    def __init__(self, root: str = "") -> None:
        self._raise_at("open")

    @classmethod
    def init(cls, root: str, no_scm: bool = False) -> FakeRepo:
        cls._raise_at("init")
        return cls(root)

    @classmethod
    def _raise_at(cls, where: str) -> None:
        if cls.where == where:
            raise cls.fail

    def close(self) -> None:
        pass

    def add(self, targets: list[str]) -> None:
        self._raise_at("add")

    def push(self, targets: list[str]) -> None:
        self._raise_at("push")

    def pull(self, targets: list[str]) -> None:
        self._raise_at("pull")

    @property
    def cloud(self) -> Any:
        self._raise_at("cloud")
        return None


CALLS: dict[str, Callable[[Path], None]] = {
    "init": lambda root: storage.init(root, "/remote"),
    "open": lambda root: storage.add_and_push(root, [root / "w.bin"]),
    "add": lambda root: storage.add_and_push(root, [root / "w.bin"]),
    "push": lambda root: storage.add_and_push(root, [root / "w.bin"]),
    "pull": lambda root: storage.pull(root, ["w.bin.dvc"]),
    "cloud": lambda root: storage.delete_objects(root, ["0" * 32]),
}


@pytest.fixture
def fake_dvc(monkeypatch: pytest.MonkeyPatch) -> type[FakeRepo]:
    monkeypatch.setattr(dvc.repo, "Repo", FakeRepo)
    monkeypatch.setattr(FakeRepo, "where", "")
    return FakeRepo


@pytest.mark.parametrize("fail", [UploadError(1), ConnectionRefusedError(111, "Connection refused")],
                         ids=["dvc", "unreachable"])
@pytest.mark.parametrize("where", sorted(CALLS))
def test_a_dvc_failure_is_a_storage_error(where: str, fail: BaseException, fake_dvc: type[FakeRepo], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_dvc, "where", where)
    monkeypatch.setattr(fake_dvc, "fail", fail)
    with pytest.raises(StorageError, match="DVC could not") as info:
        CALLS[where](tmp_path)
    assert str(fail) in str(info.value)


@pytest.mark.parametrize("where", sorted(CALLS))
def test_a_bug_is_not_reported_as_a_storage_error(where: str, fake_dvc: type[FakeRepo], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake_dvc, "where", where)
    monkeypatch.setattr(fake_dvc, "fail", TypeError("a bug"))
    with pytest.raises(TypeError, match="a bug"):
        CALLS[where](tmp_path)


def test_fetch_at_reports_dvc_failures_and_lets_bugs_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    failure: list[BaseException] = [DvcException("path missing")]

    def open_(*args: Any, **kwargs: Any) -> Any:
        raise failure[0]

    monkeypatch.setattr(dvc.api, "open", open_)
    with pytest.raises(StorageError, match=r"could not fetch w\.bin at 0123abcd: path missing"):
        storage.fetch_at(tmp_path, "w.bin", "0123abcd" * 5, dest)
    failure[0] = AttributeError("a bug")
    with pytest.raises(AttributeError):
        storage.fetch_at(tmp_path, "w.bin", "0123abcd" * 5, dest)
    assert not dest.exists()
