"""The model child's sandbox: real children, real namespaces and Landlock where the kernel has them.

The model's code (smoke, latency and metrics gates) must not read the parent's
environment or memory, reach the network, or write anywhere but its own temporary
folder. What this machine cannot confine is said in the gate's message.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.runner import run as runner
from registry.runner import sandbox as confinement_module
from registry.runner.metrics import evaluate
from registry.runner.run import latency, smoke
from registry.runner.sandbox import sandbox

DENIED = "PermissionError"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux's")


def model_folder(tmp_path: Path, code: str) -> Path:
    folder = tmp_path / "registry" / "models" / "credit" / "1.0.0"
    folder.mkdir(parents=True)
    save_file({"w": np.ones((3, 1), dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "predict.py").write_text(textwrap.dedent(code), encoding="utf-8")
    return folder


def output(result: runner.RunResult) -> object:
    assert result.status == "pass", result.message
    return json.loads(result.output_preview or "null")


@pytest.fixture
def without_unshare(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a machine where unprivileged user namespaces are off (Ubuntu's AppArmor default)."""
    sandbox.cache_clear()
    monkeypatch.setattr(confinement_module, "UNSHARE", ("registry-test-no-such-unshare", "--"))
    yield
    sandbox.cache_clear()


# --- the parent's environment --------------------------------------------------------


READ_PARENT = """\
    import os

    def load(path):
        return None

    def predict(model, inputs):
        seen = {}
        for name in ("environ", "mem"):
            try:
                with open(f"/proc/{os.getppid()}/{name}", "rb") as stream:
                    seen[name] = stream.read(1 << 20).decode("latin-1")
            except OSError as exc:
                seen[name] = type(exc).__name__
        return seen
    """


@pytest.mark.parametrize("mode", ["namespaces", "no-unshare"])
def test_child_cannot_read_the_parents_environment(mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   request: pytest.FixtureRequest) -> None:
    if mode == "no-unshare":
        request.getfixturevalue("without_unshare")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "registry-test-hunter2")
    folder = model_folder(tmp_path, READ_PARENT)
    result = smoke(folder, "predict.py", [1], timeout_s=60)
    seen = output(result)
    assert seen == {"environ": DENIED, "mem": DENIED}, str(seen)[:300]
    assert "registry-test-hunter2" not in (result.output_preview or "")


def test_parent_is_dumpable_again_after_the_run(tmp_path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    before = libc.prctl(confinement_module.PR_GET_DUMPABLE, 0, 0, 0, 0)
    output(smoke(model_folder(tmp_path, "def load(p):\n    return 1\ndef predict(m, x):\n    return x\n"),
                 "predict.py", [1], timeout_s=60))
    assert libc.prctl(confinement_module.PR_GET_DUMPABLE, 0, 0, 0, 0) == before


# --- the network ---------------------------------------------------------------------


CONNECT = """\
    import socket

    def load(path):
        return None

    def predict(model, inputs):
        try:
            with socket.create_connection(("127.0.0.1", inputs), timeout=5):
                return "connected"
        except OSError as exc:
            return type(exc).__name__
    """


@pytest.mark.parametrize("mode", ["namespaces", "no-unshare"])
def test_child_cannot_connect_to_a_listening_port(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if mode == "no-unshare":
        request.getfixturevalue("without_unshare")
    confinement = sandbox()
    if mode == "namespaces" and not confinement.prefix:
        pytest.skip(f"unshare does not work here: {confinement.notes}")
    if mode == "no-unshare" and confinement.landlock_abi < confinement_module.LANDLOCK_NET_ABI:
        pytest.skip(f"no Landlock network rules here (ABI {confinement.landlock_abi})")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        result = smoke(model_folder(tmp_path, CONNECT), "predict.py", server.getsockname()[1], timeout_s=60)
        assert output(result) in ("OSError", DENIED, "ConnectionRefusedError")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    if mode == "no-unshare":
        assert "sandbox: network partly isolated: TCP refused by Landlock, not UDP" in result.message
        assert "registry-test-no-such-unshare not found on PATH" in result.message
    else:
        assert "sandbox:" not in result.message


# --- writes --------------------------------------------------------------------------


WRITE = """\
    import os, tempfile
    from pathlib import Path

    def load(path):
        return path

    def attempt(action):
        try:
            action()
            return "written"
        except OSError as exc:
            return type(exc).__name__

    def predict(folder, inputs):
        folder = Path(folder)
        work_tree = folder.parents[2]
        return {
            "tree": attempt(lambda: (work_tree / "pwned.txt").write_text("x")),
            "version": attempt(lambda: (folder / "pwned.txt").write_text("x")),
            "code": attempt(lambda: (folder / "predict.py").write_text("x")),
            "rm": attempt(lambda: (folder / "model.safetensors").unlink()),
            "mkdir": attempt(lambda: (work_tree / "models" / "evil").mkdir()),
            "cwd": attempt(lambda: Path(os.getcwd(), "scratch.txt").write_text("x")),
            "tmp": attempt(lambda: tempfile.NamedTemporaryFile().close()),
            "null": attempt(lambda: open(os.devnull, "w").close()),
        }
    """


def test_child_writes_only_to_its_own_temporary_folder(tmp_path: Path) -> None:
    if sandbox().landlock_abi == 0:
        pytest.skip(f"no Landlock here: {sandbox().notes}")
    folder = model_folder(tmp_path, WRITE)
    code = (folder / "predict.py").read_bytes()
    weights = (folder / "model.safetensors").read_bytes()
    result = smoke(folder, "predict.py", [1], timeout_s=60)
    assert output(result) == {"tree": DENIED, "version": DENIED,
                              "code": DENIED, "rm": DENIED,
                              "mkdir": DENIED, "cwd": "written", "tmp": "written",
                              "null": "written"}
    assert not (tmp_path / "registry" / "pwned.txt").exists()
    assert not (folder / "pwned.txt").exists()
    assert not (tmp_path / "registry" / "models" / "evil").exists()
    assert (folder / "predict.py").read_bytes() == code
    assert (folder / "model.safetensors").read_bytes() == weights


def test_latency_and_metrics_children_are_confined_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sandbox().landlock_abi == 0:
        pytest.skip(f"no Landlock here: {sandbox().notes}")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_registry_test_token")
    folder = model_folder(tmp_path, """\
        import os
        from pathlib import Path

        def load(path):
            return path

        def predict(folder, inputs):
            try:
                Path(folder, "pwned.txt").write_text(open(f"/proc/{os.getppid()}/environ").read())
            except OSError:
                pass
            return [0] * len(inputs)
        """)
    assert latency(folder, "predict.py", [1], runs=2, timeout_s=60).status == "pass"
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((4, 3)), y=np.zeros(4, dtype=np.int64))
    assert evaluate(folder, "predict.py", data, ["accuracy"], timeout_s=60).status == "pass"
    assert not (folder / "pwned.txt").exists()


# --- what is not confined is said ------------------------------------------------------


def test_a_machine_without_unshare_is_named_in_every_gate_message(tmp_path: Path, without_unshare: None) -> None:
    folder = model_folder(tmp_path, "def load(p):\n    return 1\ndef predict(m, x):\n    return [0] * len(x)\n")
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.zeros((4, 3)), y=np.zeros(4, dtype=np.int64))
    messages = [smoke(folder, "predict.py", [1], timeout_s=60).message,
                latency(folder, "predict.py", [1], runs=2, timeout_s=60).message,
                evaluate(folder, "predict.py", data, ["accuracy"], timeout_s=60).message]
    for message in messages:
        assert "; sandbox: network " in message, message
        assert "registry-test-no-such-unshare not found on PATH" in message


# --- each layer on its own -------------------------------------------------------------


def child_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("registry_runner_child_under_test", runner.CHILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARENT = """\
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
import child as _runner_child
from registry.runner import sandbox

_runner_child.confine(os.getcwd(), 0)  # no capability, for this process and the peeking one

peek = [sys.executable, "-I", "-c", (
    "import os\\n"
    "try:\\n"
    "    print(open(f'/proc/{os.getppid()}/environ', 'rb').read().decode('latin-1'))\\n"
    "except OSError as exc:\\n"
    "    print(type(exc).__name__)\\n")]
dumpable = subprocess.run(peek, capture_output=True, text=True, check=True).stdout
with sandbox.not_dumpable():
    hidden = subprocess.run(peek, capture_output=True, text=True, check=True).stdout
print(json.dumps([dumpable, hidden]))
"""


def test_a_non_dumpable_parent_hides_its_environment_from_a_same_user_process(tmp_path: Path) -> None:
    # No namespaces, no Landlock: both processes have the same user and no capability
    # (root's CAP_SYS_PTRACE would read anything), so only PR_SET_DUMPABLE stands between them.
    if platform.machine() not in child_module().SYS_CAPSET:
        pytest.skip(f"capabilities are not dropped on {platform.machine()}")
    env = {"PATH": os.environ["PATH"], "AWS_SECRET_ACCESS_KEY": "registry-test-hunter2"}
    out = subprocess.run([sys.executable, "-I", "-c", PARENT, str(runner.CHILD_SCRIPT.parent)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True)
    dumpable, hidden = json.loads(out.stdout)
    assert "registry-test-hunter2" in dumpable  # the same user reads a dumpable process
    assert hidden.strip() == DENIED


def test_a_confinement_that_cannot_be_applied_is_an_error(tmp_path: Path) -> None:
    child = child_module()
    if sandbox().landlock_abi == 0:
        pytest.skip(f"no Landlock here: {sandbox().notes}")
    script = f"""\
import sys
sys.path.insert(0, {str(runner.CHILD_SCRIPT.parent)!r})
import child as _runner_child
try:
    _runner_child.confine({str(tmp_path / "gone")!r}, {sandbox().landlock_abi})
except _runner_child.SandboxError as exc:
    print("SandboxError:", exc)
"""
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.startswith("SandboxError: landlock rule for ")
    assert issubclass(child.SandboxError, Exception)
