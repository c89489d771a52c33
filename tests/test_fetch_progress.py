"""`registry fetch` says what it downloads: register's bars on a terminal, one plain line per file
on stderr elsewhere (CI logs, pipes), from DVC's own transfer callbacks."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import Result, git

NAME = "credit-approval"
WEIGHTS = f"models/{NAME}/1.0.0/model.safetensors"


@pytest.fixture
def clone(registry_dir: Path, inputs: Path, cli: Callable[..., Result], tmp_path: Path) -> Path:
    """A CI runner's checkout of a registration branch: the weights only in the DVC remote.

    The weights are a few megabytes, so DVC copies them in more than one chunk.
    """
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    save_file({"weight": rng.random((1024, 1024), dtype=np.float32)}, str(inputs / "model.safetensors"))
    result = cli("register", NAME, "1.0.0", "--card", str(inputs / "card.yaml"),
                 "--artifact", str(inputs / "model.safetensors"), cwd=registry_dir)
    assert result.code == 0, result.err
    git(registry_dir, "push", "--quiet", "origin", f"register/{NAME}/1.0.0")
    checkout = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", "--branch", f"register/{NAME}/1.0.0", str(tmp_path / "origin.git"),
        str(checkout))
    git(checkout, "fetch", "--quiet", "origin", "main:main")
    assert not (checkout / WEIGHTS).exists()
    return checkout


def test_fetch_stays_quiet_when_piped(
    clone: Path, inputs: Path, cli: Callable[..., Result]
) -> None:
    result = cli("fetch", "--base", "main", cwd=clone)
    assert result.code == 0, result.err
    assert result.err == ""  # SPEC: long operations show a bar on a terminal and stay quiet when piped
    assert "\x1b" not in result.err + result.out
    assert (clone / WEIGHTS).read_bytes() == (inputs / "model.safetensors").read_bytes()
    assert f"Pulled 1 DVC-tracked file for {NAME}@1.0.0" in result.out  # stdout as before

    again = cli("fetch", "--base", "main", cwd=clone)  # nothing left to download: nothing said
    assert again.code == 0 and again.err == ""


def test_fetch_json_output_is_unchanged(clone: Path, cli: Callable[..., Result]) -> None:
    import json

    result = cli("fetch", "--base", "main", "--json", cwd=clone)
    assert result.code == 0, result.err
    assert json.loads(result.out)["pulled"] is True
    assert json.loads(result.out)["targets"] == [f"{WEIGHTS}.dvc"]


def test_storage_pull_reports_bytes_through_dvcs_callbacks(
    clone: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DVC's local copies count bytes from 1 GB on (remote file systems always do): lowered here."""
    from registry.repo import storage

    monkeypatch.setattr("dvc_objects.fs.utils.COPY_PBAR_MIN_SIZE", 0)
    size = (inputs / "model.safetensors").stat().st_size
    calls: list[tuple[str, int, int]] = []
    storage.pull(clone, [f"{WEIGHTS}.dvc"], lambda path, done, total: calls.append((path, done, total)))
    assert {path for path, _, _ in calls} == {WEIGHTS} and {total for _, _, total in calls} == {size}
    done = [d for _, d, _ in calls]
    assert done[0] == 0 and done[-1] == size and done == sorted(done)
    assert done.count(size) == 1  # done == total once, when the file is in the cache
    assert len(set(done)) > 2  # bytes in between (the file is several 1 MB chunks)
    assert (clone / WEIGHTS).read_bytes() == (inputs / "model.safetensors").read_bytes()


def test_fetch_draws_a_bar_on_a_terminal(clone: Path) -> None:
    """stderr a terminal (a pty): rich draws the bar there; stdout, a pipe, has no escape codes."""
    leader, follower = pty.openpty()
    import registry

    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120",
           "PYTHONPATH": str(Path(registry.__file__).parents[1])}  # the code under test, wherever it is
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "registry", "fetch", "--base", "main"], cwd=clone, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    text = drawn.decode(errors="replace")
    assert "\x1b[" in text and "━" in text and "model.safetensors" in text
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # what the terminal interprets
    assert "\x1b" not in shown and "[0m" not in shown
    assert text.count("\n") == 1  # rich's one line, then cleared: DVC's own bars left blank lines
    assert b"\x1b" not in out and f"  {WEIGHTS}".encode() in out
