"""The `torchserve` adapter and the `.mar` builder, against a real TorchServe 0.12 (Java) on 127.0.0.1.

One TorchServe serves the whole file (its JVM takes seconds to start), with its model API
enabled and token authorization on, as its docs require. Each test uses models of its own.
Skipped with the reason when Java, TorchServe or torch-model-archiver is missing
(`.ci/run` installs them).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from registry import api
from registry.errors import UsageError
from registry.files import yamlio
from registry.serving import puller
from registry.serving.adapters import AdapterError, Change, make_adapter, parse_spec
from registry.serving.adapters.torchserve import TorchServeAdapter, from_spec
from registry.serving.formats import mar
from registry.signing.bundle import sign_folder
from registry.signing.keys import generate_keypair, read_private_key
from tests.conftest import CARD, git, isolate

BIN = Path(sys.executable).parent
HAVE_ARCHIVER = importlib.util.find_spec("model_archiver") is not None
needs_archiver = pytest.mark.skipif(not HAVE_ARCHIVER, reason="torch-model-archiver is not installed (pip install 'gitops-registry[torchserve]')")


def _torchserve() -> str | None:
    found = BIN / "torchserve"
    return str(found) if found.exists() else shutil.which("torchserve")


# --- version folders ---------------------------------------------------------------


def version_folder(root: Path, name: str, version: str, predict: str, **card: Any) -> Path:
    folder = root / name / version
    folder.mkdir(parents=True)
    body = {"name": name, "version": version, "entrypoint": "predict.py", "input_example": [1, 2, 3], **card}
    (folder / "card.yaml").write_text(yamlio.dumps(body), encoding="utf-8")
    (folder / "predict.py").write_text(predict, encoding="utf-8")
    return folder


def answering(tag: str) -> str:
    return f"def load(path):\n    return {tag!r}\n\ndef predict(model, inputs):\n    return {{'version': model, 'sum': sum(inputs)}}\n"


RAISING = "def load(path):\n    return None\n\ndef predict(model, inputs):\n    raise ValueError('broken on purpose')\n"
FAILING_LOAD = "def load(path):\n    raise RuntimeError('weights missing')\n\ndef predict(model, inputs):\n    return 0\n"


def change(folder: Path, previous: Path | None = None) -> Change:
    card = yamlio.load_file(folder / "card.yaml")
    return Change(model=card["name"], version=card["version"], folder=folder,
                  previous=previous.name if previous else None, previous_folder=previous,
                  card=card, stage="production", registry_commit="0" * 40)


# --- the .mar on its own -------------------------------------------------------------


@needs_archiver
def test_build_mar_writes_a_zip_whose_manifest_names_the_version_and_the_handler(tmp_path: Path) -> None:
    folder = version_folder(tmp_path / "src", "m", "1.2.0", answering("v1"))
    (folder / "weights").mkdir()
    (folder / "weights" / "w.bin").write_bytes(b"\x00\x01")
    (folder / "env").mkdir()
    (folder / "env" / "requirements.txt").write_text("numpy==2.1.3\n")
    (folder / "card.yaml").write_text((folder / "card.yaml").read_text() + "environment: env/requirements.txt\n")
    before = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    built = mar.build_mar(folder, yamlio.load_file(folder / "card.yaml"), tmp_path / "out", name="m", version="1.2.0")
    assert built == tmp_path / "out" / "m.mar"
    assert sorted(os.listdir(tmp_path / "out")) == ["m.mar"]  # no work folder left behind
    with zipfile.ZipFile(built) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        names = set(archive.namelist())
        config = json.loads(archive.read(mar.CONFIG_FILE))
        assert archive.read("predict.py") == (folder / "predict.py").read_bytes()
    assert manifest["model"] == {"modelName": "m", "modelVersion": "1.2.0", "handler": mar.HANDLER_FILE,
                                 "requirementsFile": "requirements.txt"}
    assert {"card.yaml", "predict.py", "weights/w.bin", "env/requirements.txt", "requirements.txt",
            mar.HANDLER_FILE, mar.CONFIG_FILE} <= names
    assert config == {"model": "m", "version": "1.2.0", "entrypoint": "predict.py"}
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == before  # folder untouched


@needs_archiver
def test_build_mar_refuses_what_it_cannot_serve_and_writes_nothing(tmp_path: Path) -> None:
    folder = version_folder(tmp_path / "src", "m", "1.0.0", answering("v1"))
    out = tmp_path / "out"
    with pytest.raises(mar.MarError, match="not a model name and version"):
        mar.build_mar(folder, {"entrypoint": "predict.py"}, out, name="../m", version="1.0.0")
    with pytest.raises(mar.MarError, match="names no Python entrypoint"):
        mar.build_mar(folder, {"name": "m"}, out, name="m", version="1.0.0")
    with pytest.raises(mar.MarError, match=r"entrypoint other\.py is not in the folder"):
        mar.build_mar(folder, {"entrypoint": "other.py"}, out, name="m", version="1.0.0")
    (folder / "link").symlink_to("/etc/passwd")
    with pytest.raises(mar.MarError, match="link is a symbolic link"):
        mar.build_mar(folder, {"entrypoint": "predict.py"}, out, name="m", version="1.0.0")
    (folder / "link").unlink()
    (folder / "env").mkdir()
    (folder / "env" / "requirements.txt").write_text("numpy\n")
    (folder / "requirements.txt").write_text("torch\n")
    with pytest.raises(mar.MarError, match=r"would replace the folder.s own requirements\.txt"):
        mar.build_mar(folder, {"entrypoint": "predict.py", "environment": "env/requirements.txt"}, out, name="m", version="1.0.0")
    (folder / mar.HANDLER_FILE).write_text("x = 1\n")
    with pytest.raises(mar.MarError, match="would clash"):
        mar.build_mar(folder, {"entrypoint": "predict.py"}, out, name="m", version="1.0.0")
    assert not out.exists() or not any(out.iterdir())


@needs_archiver
def test_the_handler_loads_the_entrypoint_and_answers_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What TorchServe's worker does with the archive, in this process: initialise, then a batch."""
    folder = version_folder(tmp_path / "src", "m", "1.0.0",
                            "import helper\n\ndef load(path):\n    return helper.TAG\n\n"
                            "class Arr:\n    def tolist(self):\n        return [1.5]\n\n"
                            "def predict(model, inputs):\n    return {'v': model, 'in': inputs, 'a': Arr(), 't': (1, 2)}\n")
    (folder / "helper.py").write_text("TAG = 'from-helper'\n")
    built = mar.build_mar(folder, {"entrypoint": "predict.py"}, tmp_path / "out", name="m", version="1.0.0")
    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(built) as archive:
        archive.extractall(extracted)
    handler_source = Path(mar.__file__).with_name("torchserve_handler.py")
    assert (extracted / mar.HANDLER_FILE).read_bytes() == handler_source.read_bytes()
    monkeypatch.setattr(sys, "path", list(sys.path))
    for module in ("helper", "registry_entrypoint"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    handler = _load_module(handler_source)
    context = SimpleNamespace(system_properties={"model_dir": str(extracted)})
    assert handler.handle(None, context) is None
    rows = [{"body": [1, 2]}, {"body": bytearray(b'{"x": 1}')}, {"data": b"[3]"}]
    assert handler.handle(rows, context) == [
        {"v": "from-helper", "in": [1, 2], "a": [1.5], "t": [1, 2]},
        {"v": "from-helper", "in": {"x": 1}, "a": [1.5], "t": [1, 2]},
        {"v": "from-helper", "in": [3], "a": [1.5], "t": [1, 2]},
    ]
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        handler.to_jsonable(object())
    with pytest.raises(TypeError, match="non-string keys"):
        handler.to_jsonable({1: 2})
    (extracted / "predict.py").write_text("def load(path):\n    return 1\n")
    with pytest.raises(AttributeError, match=r"predict\(\) missing"):
        _load_module(handler_source).handle([{"body": [1]}], context)


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("registry_handler_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- settings --------------------------------------------------------------------------


def test_spec_settings_and_their_defaults() -> None:
    adapter = make_adapter("torchserve=http://10.0.0.5:8081/,key-file=/etc/ts/key_file.json,workers=2,timeout=30")
    assert isinstance(adapter, TorchServeAdapter)
    assert (adapter.url, adapter.inference_url) == ("http://10.0.0.5:8081", "http://10.0.0.5:8080")
    assert (adapter.key_file, adapter.workers, adapter.timeout) == (Path("/etc/ts/key_file.json"), 2, 30.0)
    adapter = from_spec(parse_spec("torchserve=http://h:9081,inference=http://h:9080"))
    assert adapter.inference_url == "http://h:9080" and adapter.key_file is None
    for bad, message in [("torchserve=http://h:1,colour=red", "unknown setting 'colour'"),
                         ("torchserve=ftp://h", "not an http"), ("torchserve=http://h,workers=0", "at least 1"),
                         ("torchserve=http://h,timeout=soon", "numbers of seconds"), ("torchserve=http://h,drain=-1", "drain")]:
        with pytest.raises(UsageError, match=message):
            make_adapter(bad)


def test_a_server_that_is_not_there_is_an_adapter_error_naming_the_step(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = make_adapter(f"torchserve=http://ops:s3cret@127.0.0.1:{port},timeout=5")
    folder = version_folder(tmp_path, "m", "1.0.0", answering("v1"))
    with pytest.raises(AdapterError, match=rf"^m@1\.0\.0: torchserve=http://127.0.0.1:{port}: GET http://127.0.0.1:{port}/models/m/all: .*nothing was changed") as refused:
        adapter.apply(change(folder))
    assert "s3cret" not in str(refused.value)
    with pytest.raises(AdapterError, match=rf"^m@1\.0\.0: torchserve=http://127.0.0.1:{port}: reverting to nothing failed: .*what serves m is unknown"):
        adapter.revert(change(folder))


# --- a real TorchServe -----------------------------------------------------------------


@dataclass
class Server:
    management: str
    inference: str
    key_file: Path
    store: Path
    log: Path

    def keys(self) -> dict[str, Any]:
        return dict(json.loads(self.key_file.read_text()))

    def adapter(self, *settings: str) -> TorchServeAdapter:
        drain = [] if any(s.startswith("drain=") for s in settings) else ["drain=0.3"]  # quick; the load test keeps 2 s
        spec = ",".join([f"torchserve={self.management}", f"inference={self.inference}", *drain, *settings])
        adapter = make_adapter(spec)
        assert isinstance(adapter, TorchServeAdapter)
        return adapter

    def predict(self, path: str, body: Any, key: str | None = "inference", timeout: float = 30) -> tuple[int, Any]:
        request = urllib.request.Request(self.inference + path, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {self.keys()[key]['key']}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    torchserve = _torchserve()
    if shutil.which("java") is None:
        pytest.skip("java is not installed (TorchServe's frontend needs Java 17)")
    if torchserve is None or not HAVE_ARCHIVER:
        pytest.skip("torchserve / torch-model-archiver are not installed (.ci/run installs torchserve==0.12.0)")
    root = tmp_path_factory.mktemp("torchserve")
    store, temp = root / "store", root / "tmp"
    store.mkdir()
    temp.mkdir()
    inference, management, metrics, grpc_inference, grpc_management, worker_port = _free_ports(6)
    (root / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{inference}",
        f"management_address=http://127.0.0.1:{management}",
        f"metrics_address=http://127.0.0.1:{metrics}",
        "grpc_inference_address=127.0.0.1", f"grpc_inference_port={grpc_inference}",
        "grpc_management_address=127.0.0.1", f"grpc_management_port={grpc_management}",
        "enable_model_api=true", "load_models=", "default_workers_per_model=1",
        "number_of_netty_threads=2", "netty_client_threads=1", "job_queue_size=16",
        "disable_system_metrics=true",
        # Its workers' sockets are <java.io.tmpdir>/.ts.sock.<port from 9000>: a folder and ports of
        # its own, or two TorchServes on one machine (pytest -n) take each other's workers.
        f"initial_worker_port={worker_port}",
        f"vmargs=-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.io.tmpdir={temp}", "",
    ]))
    # TMPDIR/TEMP of its own: its pid file and extracted models stay apart from any other TorchServe.
    # Without coverage's subprocess hook: TorchServe's workers are killed, not ended.
    inherited = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}
    env = {**inherited, "TMPDIR": str(temp), "TEMP": str(temp), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = root / "torchserve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([torchserve, "--start", "--foreground", "--ncs", "--model-store", str(store),
                                 "--ts-config", str(root / "config.properties")],
                                cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        served = Server(f"http://127.0.0.1:{management}", f"http://127.0.0.1:{inference}", root / "key_file.json", store, log)
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"TorchServe exited ({proc.returncode}): {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"TorchServe did not answer /ping in 180 s: {log.read_text()[-2000:]}")
            try:
                request = urllib.request.Request(served.inference + "/ping")
                request.add_header("Authorization", f"Bearer {served.keys()['inference']['key']}")
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        yield served
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass


def test_token_authorization_is_on_and_the_adapter_needs_the_key(server: Server, tmp_path: Path) -> None:
    status, body = server.predict("/predictions/anything", [1], key=None)
    assert (status, body["type"]) == (400, "InvalidKeyException")  # TorchServe 0.12 answers 400, not 401
    request = urllib.request.Request(server.management + "/models")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()
    assert refused.value.code == 400
    folder = version_folder(tmp_path, "keyless", "1.0.0", answering("v1"))
    with pytest.raises(AdapterError, match=r"TorchServe refused the management key .*nothing was changed on the server"):
        server.adapter().apply(change(folder))


def test_apply_promotes_v2_refuses_a_broken_v3_and_revert_brings_v1_back(server: Server, tmp_path: Path) -> None:
    v1 = version_folder(tmp_path, "m", "1.0.0", answering("v1"))
    v2 = version_folder(tmp_path, "m", "2.0.0", answering("v2"))
    v3 = version_folder(tmp_path, "m", "3.0.0", RAISING)
    adapter = server.adapter(f"key-file={server.key_file}")

    adapter.apply(change(v1))
    assert adapter.versions("m") == ["1.0.0"] and adapter.default_version("m") == "1.0.0"
    assert server.predict("/predictions/m", [1, 2]) == (200, {"version": "v1", "sum": 3})

    to_v2 = change(v2, previous=v1)
    adapter.apply(to_v2)
    assert adapter.versions("m") == ["2.0.0"] and adapter.default_version("m") == "2.0.0"
    assert server.predict("/predictions/m", [1, 2]) == (200, {"version": "v2", "sum": 3})
    assert server.predict("/predictions/m/1.0.0", [1])[0] == 404

    adapter.apply(to_v2)  # idempotent: registered already, checked and default again
    assert adapter.versions("m") == ["2.0.0"]

    with pytest.raises(AdapterError) as refused:
        adapter.apply(change(v3, previous=v2))
    message = str(refused.value)
    assert message.startswith(f"m@3.0.0: torchserve={server.management}: check and set-default failed: "
                              "input_example: /predictions/m/3.0.0 answered 503")
    assert message.endswith("serving now: m@2.0.0")
    assert adapter.versions("m") == ["2.0.0"]
    assert server.predict("/predictions/m", [5]) == (200, {"version": "v2", "sum": 5})

    adapter.revert(to_v2)  # 1.0.0 was unregistered: built again from its folder
    assert adapter.versions("m") == ["1.0.0"] and adapter.default_version("m") == "1.0.0"
    assert server.predict("/predictions/m", [4]) == (200, {"version": "v1", "sum": 4})
    stored = [p.name for p in server.store.iterdir() if p.name.startswith("m-")]
    assert len(stored) == 1 and stored[0].startswith("m-1.0.0-")  # TorchServe's copies of 2.0.0 and 3.0.0 are gone


def test_a_version_whose_load_fails_is_unregistered_and_the_previous_keeps_serving(server: Server, tmp_path: Path) -> None:
    v1 = version_folder(tmp_path, "n", "1.0.0", answering("n1"))
    bad = version_folder(tmp_path, "n", "1.1.0", FAILING_LOAD)
    adapter = server.adapter(f"key-file={server.key_file}", "timeout=60")
    adapter.apply(change(v1))
    with pytest.raises(AdapterError, match=r"n@1\.1\.0: torchserve=\S+: build and register failed: .*Failed to start workers.*model_log.log.*serving now: n@1.0.0"):
        adapter.apply(change(bad, previous=v1))
    assert adapter.versions("n") == ["1.0.0"]
    assert server.predict("/predictions/n", [1]) == (200, {"version": "n1", "sum": 1})
    adapter.revert(change(v1))  # the model was new: revert unregisters it
    assert adapter.versions("n") == []


def test_token_files_and_a_shared_model_store(server: Server, tmp_path: Path) -> None:
    keys = server.keys()
    (tmp_path / "management.key").write_text(keys["management"]["key"] + "\n")
    (tmp_path / "inference.key").write_text(keys["inference"]["key"] + "\n")
    adapter = server.adapter(f"token={tmp_path / 'management.key'}", f"inference-token={tmp_path / 'inference.key'}",
                             f"model-store={server.store}")
    v1 = version_folder(tmp_path, "s", "1.0.0", answering("s1"))
    v2 = version_folder(tmp_path, "s", "1.0.1", answering("s2"))
    adapter.apply(change(v1))
    assert (server.store / "s-1.0.0.mar").is_file()
    adapter.apply(change(v2, previous=v1))
    assert server.predict("/predictions/s", [2]) == (200, {"version": "s2", "sum": 2})
    assert sorted(p.name for p in server.store.glob("s-*")) == ["s-1.0.1.mar"]
    bad = version_folder(tmp_path, "s", "1.1.0", FAILING_LOAD)
    with pytest.raises(AdapterError, match=r"s@1\.1\.0: torchserve=\S+: build and register failed: .*serving now: s@1\.0\.1"):
        adapter.apply(change(bad, previous=v2))
    assert sorted(p.name for p in server.store.glob("s-*")) == ["s-1.0.1.mar"]
    assert sorted(p.name for p in server.store.glob(".s-*")) == []


def test_requests_during_a_promotion_and_its_revert_all_succeed(server: Server, tmp_path: Path) -> None:
    v1 = version_folder(tmp_path, "load", "1.0.0", answering("l1"))
    v2 = version_folder(tmp_path, "load", "2.0.0", answering("l2"))
    adapter = server.adapter(f"key-file={server.key_file}", "drain=2")
    adapter.apply(change(v1))
    answers: list[tuple[int, Any]] = []
    stop = threading.Event()

    def client() -> None:  # bounded: at most 3000 requests each, and stops when told
        for _ in range(3000):
            if stop.is_set():
                break
            try:
                answers.append(server.predict("/predictions/load", [1], timeout=10))
            except OSError as exc:  # a request that TorchServe dropped times out
                answers.append((0, repr(exc)))

    threads = [threading.Thread(target=client) for _ in range(3)]  # more than one: requests queue up
    for thread in threads:
        thread.start()
    try:
        to_v2 = change(v2, previous=v1)
        for _ in range(3):
            adapter.apply(to_v2)
            adapter.revert(to_v2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    failed = [answer for answer in answers if answer[0] != 200]
    assert answers and not failed, failed[:3]
    assert {answer[1]["version"] for answer in answers} <= {"l1", "l2"}
    assert server.predict("/predictions/load", [1]) == (200, {"version": "l1", "sum": 1})


def test_an_expired_key_in_the_key_file_is_renewed_through_the_token_api(server: Server, tmp_path: Path) -> None:
    keys = server.keys()
    stale = {**keys, "management": {**keys["management"], "expiration time": "2020-01-01T00:00:00.000000001Z"}}
    copy = tmp_path / "key_file.json"
    copy.write_text(json.dumps(stale))
    # The renewal goes to TorchServe, which writes the new key to its own key file (not to this copy).
    with pytest.raises(AdapterError, match="refused the management key"):
        server.adapter(f"key-file={copy}").versions("m")
    renewed = server.keys()["management"]["key"]
    assert renewed != keys["management"]["key"]
    assert server.adapter(f"key-file={server.key_file}").versions("nothing-here") == []
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AdapterError, match="cannot read TorchServe's key file"):
        server.adapter(f"key-file={tmp_path / 'broken.json'}").versions("m")



def test_a_canary_beside_production_is_registered_and_checked_but_not_made_the_default(
        server: Server, tmp_path: Path) -> None:
    v1 = version_folder(tmp_path, "c", "1.0.0", answering("c1"))
    v2 = version_folder(tmp_path, "c", "2.0.0", answering("c2"))
    v3 = version_folder(tmp_path, "c", "3.0.0", answering("c3"))
    broken = version_folder(tmp_path, "c", "4.0.0", RAISING)
    adapter = server.adapter(f"key-file={server.key_file}")
    adapter.apply(change(v1))

    def canary(folder: Path, previous: Path | None = None) -> Change:
        return dataclasses.replace(change(folder, previous), traffic=0.25)  # pull --with-canary's canary

    adapter.apply(canary(v2))
    assert sorted(adapter.versions("c")) == ["1.0.0", "2.0.0"] and adapter.default_version("c") == "1.0.0"
    assert server.predict("/predictions/c", [1]) == (200, {"version": "c1", "sum": 1})
    assert server.predict("/predictions/c/2.0.0", [1]) == (200, {"version": "c2", "sum": 1})
    with pytest.raises(AdapterError, match=r"c@4\.0\.0: torchserve=\S+: check failed: input_example.*serving now: c@1\.0\.0"):
        adapter.apply(canary(broken, previous=v2))
    assert sorted(adapter.versions("c")) == ["1.0.0", "2.0.0"]
    to_v3 = canary(v3, previous=v2)  # a new canary replaces the old one; production stays
    adapter.apply(to_v3)
    assert sorted(adapter.versions("c")) == ["1.0.0", "3.0.0"] and adapter.default_version("c") == "1.0.0"
    adapter.revert(to_v3)
    assert sorted(adapter.versions("c")) == ["1.0.0", "2.0.0"] and adapter.default_version("c") == "1.0.0"

# --- the whole story: registry pull --server torchserve=... --------------------------------


@dataclass(frozen=True)
class Origin:
    bare: Path
    trusted: Path

    def merge(self, tag: str) -> None:
        """What merging the promotion's pull request does to main."""
        git(self.bare, "update-ref", "refs/heads/main", git(self.bare, "rev-parse", f"{tag}^{{commit}}").strip())


@pytest.fixture(scope="module")
def registry_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """A registry whose model `ts` has 1.0.0, 1.1.0 (answering with their versions) and a broken 1.2.0, each
    promoted to production in turn (tags v1, v2, broken), pushed to a bare origin."""
    base = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, base)
        bare = base / "origin.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        reg = api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
        generate_keypair(base / "release")
        for version, code, tag in (("1.0.0", answering("1.0.0"), "v1"), ("1.1.0", answering("1.1.0"), "v2"),
                                   ("1.2.0", RAISING, "broken")):
            inputs = base / "inputs" / version
            inputs.mkdir(parents=True)
            (inputs / "predict.py").write_text(code)
            (inputs / "card.yaml").write_text(CARD + "entrypoint: predict.py\ninput_example: [1, 2]\n")
            reg.register("ts", version, inputs / "card.yaml", [inputs / "predict.py"], no_branch=True)
            sign_folder(reg.version_dir("ts", version), "ts", version, read_private_key(base / "release.key"))
            git(reg.root, "add", str(reg.version_dir("ts", version) / "signature.json"))
            git(reg.root, "commit", "--quiet", "-m", f"Sign ts@{version}")
            for stage in ("staging", "production"):
                reg.promote("ts", version, stage, "test", no_branch=True)
            git(reg.root, "tag", tag)
        git(reg.root, "remote", "add", "origin", str(bare))
        git(reg.root, "push", "--quiet", "origin", "main", "--tags")
        yield Origin(bare, base / "release.pub")


def test_registry_pull_drives_torchserve_through_a_promotion_and_refuses_a_broken_version(
        server: Server, registry_origin: Origin, tmp_path: Path) -> None:
    serve, seen = tmp_path / "serve", []
    spec = f"torchserve={server.management},inference={server.inference},key-file={server.key_file}"

    def pull() -> puller.PullResult:
        return puller.pull(serve, stage="production", source=str(registry_origin.bare),
                           trusted_keys=registry_origin.trusted, servers=[spec], on_event=seen.append)

    registry_origin.merge("v1")
    pull()
    adapter = server.adapter(f"key-file={server.key_file}")
    assert adapter.versions("ts") == ["1.0.0"]
    assert server.predict("/predictions/ts", [1, 2]) == (200, {"version": "1.0.0", "sum": 3})

    registry_origin.merge("v2")
    assert pull().switched == ("ts",)
    assert adapter.versions("ts") == ["1.1.0"]
    assert server.predict("/predictions/ts", [1, 2]) == (200, {"version": "1.1.0", "sum": 3})
    switched = [e for e in seen if e["event"] == "switched"][-1]
    assert switched["servers"] == [f"torchserve={server.management}"]

    registry_origin.merge("broken")
    with pytest.raises(puller.PullError, match=r"ts@1\.2\.0: torchserve=\S+: check and set-default failed: input_example"):
        pull()
    assert os.readlink(serve / "ts" / "current") == "versions/1.1.0"
    assert adapter.versions("ts") == ["1.1.0"]
    assert server.predict("/predictions/ts", [1, 2]) == (200, {"version": "1.1.0", "sum": 3})
    back = [e for e in seen if e["event"] == "rolled_back"][-1]
    assert (back["version"], back["from_version"]) == ("1.1.0", "1.2.0")
