"""`registry serve DIR`: the built-in V2 model server over a folder a real `registry pull` keeps.

Versions are registered, signed and promoted in a real registry, pushed to a bare origin
and pulled with real keys; the server runs the models in real sandboxed workers and
answers over real HTTP (uvicorn on a free port) where concurrency matters.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from registry import api
from registry.serving import puller
from registry.serving.server.app import VERSION_HEADER, create_app
from registry.serving.server.metrics import METRIC_NAMES
from registry.serving.server.models import Server
from registry.serving.server.pool import Timeouts
from registry.serving.server.v2 import BadRequest, model_inputs, outputs
from registry.signing.bundle import sign_folder
from registry.signing.keys import generate_keypair, read_private_key
from tests.conftest import CARD, git, isolate

# Each version multiplies its inputs by FACTOR: the answer shows which version computed it. A
# prediction takes a few milliseconds, so that a swap always finds requests in flight.
PREDICT = """\
import time

FACTOR = {factor}


def load(path):
    {load}
    return FACTOR


def predict(model, inputs):
    {predict}
    time.sleep(0.005)
    return [[x * model for x in row] for row in inputs]
"""

# Reports the interpreter that runs it: the declared environment's, not ours.
PREFIX = """\
import sys


def load(path):
    return None


def predict(model, inputs):
    return [sys.prefix, sys.base_prefix]
"""

OK = "pass"
VERSIONS = {
    # version: (factor, load body, predict body)
    "1.0.0": (10, OK, OK),
    "1.1.0": (11, OK, OK),
    "1.2.0": (12, OK, "raise ValueError('bad weights')"),
    "1.3.0": (13, "raise RuntimeError('no weights file')", OK),
}


@dataclass(frozen=True)
class World:
    origin: Path
    trusted: Path
    tags: dict[str, str]  # tag -> commit


def _register(reg: api.Registry, inputs: Path, name: str, version: str, files: dict[str, str],
              key: Path, extra: str) -> None:
    folder = inputs / f"{name}-{version}"
    folder.mkdir()
    for file_name, text in files.items():
        (folder / file_name).write_text(text)
    (folder / "card.yaml").write_text(CARD + "entrypoint: predict.py\ninput_example: [[1, 2]]\n" + extra)
    reg.register(name, version, folder / "card.yaml", [folder / f for f in files], no_branch=True)
    version_dir = reg.version_dir(name, version)
    sign_folder(version_dir, name, version, read_private_key(key))
    git(reg.root, "add", str(version_dir / "signature.json"))
    git(reg.root, "commit", "--quiet", "-m", f"Sign {name}@{version}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("serve-world")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, base)
        origin = base / "origin.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        reg = api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
        generate_keypair(base / "release")
        key = base / "release.key"
        inputs = base / "inputs"
        inputs.mkdir()
        signature = ("signature:\n  inputs: [{name: x, type: float32, shape: [-1, 2]}]\n"
                     "  outputs: [{name: y, type: float64, shape: [-1, 2]}]\n")
        for version, (factor, load, predict) in VERSIONS.items():
            code = PREDICT.format(factor=factor, load=load, predict=predict)
            _register(reg, inputs, "m", version, {"predict.py": code}, key, signature)
        _register(reg, inputs, "envm", "1.0.0",
                  {"predict.py": PREFIX, "requirements.txt": "# nothing beyond the stdlib\n"}, key,
                  "environment: requirements.txt\n")
        tags: dict[str, str] = {}

        def promote(name: str, version: str, *stages: str, tag: str, traffic: float | None = None) -> None:
            for stage in stages:
                reg.promote(name, version, stage, "test", no_branch=True,
                            traffic=traffic if stage == "canary" else None)
            tags[tag] = git(reg.root, "rev-parse", "HEAD").strip()

        promote("m", "1.0.0", "staging", "production", tag="v1")
        promote("m", "1.1.0", "staging", "canary", tag="canary", traffic=0.3)
        promote("m", "1.1.0", "production", tag="v2")
        promote("m", "1.2.0", "staging", "production", tag="broken-predict")
        promote("m", "1.3.0", "staging", "production", tag="broken-load")
        promote("envm", "1.0.0", "staging", "production", tag="env")
        git(reg.root, "remote", "add", "origin", str(origin))
        git(reg.root, "push", "--quiet", "origin", "main")
        shutil.rmtree(reg.root)
        yield World(origin, base / "release.pub", tags)


@pytest.fixture
def origin(world: World, tmp_path: Path) -> Path:
    copy = tmp_path / "origin.git"
    shutil.copytree(world.origin, copy)
    return copy


def pull_at(world: World, origin: Path, to: Path, tag: str, stage: str = "production",
            models: tuple[str, ...] = ("m",)) -> None:
    """Merge the tag's state to main (or back: a rollback) and pull it, as a serving machine does."""
    git(origin, "update-ref", "refs/heads/main", world.tags[tag])
    puller.pull(to, stage=stage, source=str(origin), trusted_keys=world.trusted, allow_rewind=True,
                models=models)


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                        "data": [v for row in rows for v in row]}]}


FACTORS = {version: factor for version, (factor, _, _) in VERSIONS.items()}


def check_answer(response: httpx.Response) -> str:
    """The version that answered, after checking the answer is that version's."""
    assert response.status_code == 200, response.text
    version = response.headers[VERSION_HEADER]
    reply = response.json()
    assert reply["model_name"] == "m" and reply["model_version"] == version
    assert reply["outputs"] == [{"name": "output0", "shape": [1, 2], "datatype": "INT64",
                                 "data": [FACTORS[version], 2 * FACTORS[version]]}]
    return version


@contextlib.contextmanager
def http_server(server: Server) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; stopped (and the workers killed) after."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(server), log_level="warning", access_log=False)
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: web.started, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(timeout=15)
        sock.close()
        server.stop()


@pytest.fixture
def started() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(root: Path, **options: Any) -> Server:
        options.setdefault("poll_s", 0.1)
        server = Server(root, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting to be reaped is gone as far as serving goes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


# -- V2 bodies ---------------------------------------------------------------------------------


def test_v2_inputs_become_the_json_predict_takes_and_outputs_become_v2_tensors() -> None:
    assert model_inputs(body([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    nested = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]}
    assert model_inputs(nested) == [[1, 2], [3, 4]]
    several = {"inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
                          {"name": "b", "shape": [], "datatype": "BYTES", "data": ["hi"]}]}
    assert model_inputs(several) == {"a": [1, 2], "b": "hi"}
    assert model_inputs({"inputs": [[0.5, 1.5]]}) == [[0.5, 1.5]]  # the model's own JSON, as is
    assert model_inputs({"inputs": {"text": "hello"}}) == {"text": "hello"}
    for bad in ({}, [], {"inputs": [{"name": "x", "shape": [3], "data": [1, 2]}]},
                {"inputs": [{"name": "x", "shape": "2", "data": [1, 2]}]}):
        with pytest.raises(BadRequest):
            model_inputs(bad)
    assert outputs([[1.5, 2], [3, 4]]) == [{"name": "output0", "shape": [2, 2], "datatype": "FP64",
                                            "data": [1.5, 2, 3, 4]}]
    assert outputs({"label": [1, 0], "ok": True}) == [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
        {"name": "ok", "shape": [], "datatype": "BOOL", "data": [True]}]
    ragged = outputs([[1], [2, 3]])
    assert ragged[0]["datatype"] == "BYTES" and json.loads(ragged[0]["data"][0]) == [[1], [2, 3]]


# -- serving a pulled folder ---------------------------------------------------------------------


def test_infer_answers_with_the_pulled_version_and_metadata_comes_from_the_card(
        world: World, origin: Path, tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    pull_at(world, origin, serve, "v1")
    server = started(serve)
    with TestClient(create_app(server)) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        assert check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) == "1.0.0"
        assert check_answer(client.post("/v2/models/m/versions/1.0.0/infer", json=body([[1, 2]]))) == "1.0.0"
        raw = client.post("/v2/models/m/infer", json={"inputs": [[1, 2]], "id": "r1"})
        assert raw.json()["outputs"][0]["data"] == [10, 20] and raw.json()["id"] == "r1"
        meta = client.get("/v2/models/m")
        assert meta.headers[VERSION_HEADER] == "1.0.0"
        assert meta.json() | {"last_error": None} == {
            "name": "m", "versions": ["1.0.0"], "platform": "registry-python",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
            "outputs": [{"name": "y", "datatype": "FP64", "shape": [-1, 2]}],
            "serving": {"production": "1.0.0"}, "last_error": None}
        ready = client.get("/v2/models/m/ready")
        assert ready.status_code == 200 and ready.headers[VERSION_HEADER] == "1.0.0"
        assert client.get("/v2/models/m/versions/9.9.9/ready").status_code == 503
        assert client.get("/v2/models/nope").status_code == 404
        assert client.post("/v2/models/nope/infer", json=body([[1, 2]])).status_code == 404
        missing = client.post("/v2/models/m/versions/9.9.9/infer", json=body([[1, 2]]))
        assert missing.status_code == 404 and "live: 1.0.0" in missing.json()["error"]
        assert client.post("/v2/models/m/infer", content=b"{not json").status_code == 400
        assert client.post("/v2/models/m/infer", json={"data": 1}).status_code == 400
        raised = client.post("/v2/models/m/infer", json={"inputs": 5})
        assert raised.status_code == 500 and raised.headers[VERSION_HEADER] == "1.0.0"
        assert "predict.py raised TypeError" in raised.json()["error"]
        # The model raised on one request: its worker goes on answering.
        assert check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) == "1.0.0"

        metrics = client.get("/metrics").text
    for name in METRIC_NAMES[:5]:
        assert f"# TYPE {name.removesuffix('_total')}" in metrics, name
    assert 'registry_model_requests_total{code="200",model="m",version="1.0.0"} 4.0' in metrics
    assert 'registry_model_requests_total{code="500",model="m",version="1.0.0"} 1.0' in metrics
    assert 'registry_model_request_errors_total{model="m",version="1.0.0"} 1.0' in metrics
    assert 'registry_model_request_duration_seconds_count{model="m",version="1.0.0"}' in metrics
    assert 'registry_served_version_info{model="m",role="production",version="1.0.0"} 1.0' in metrics
    assert 'registry_model_swaps_total{model="m"} 1.0' in metrics
    assert 'model="nope"' not in metrics  # unknown names make no series


def test_hot_swap_under_load_drops_no_request(
        world: World, origin: Path, tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    pull_at(world, origin, serve, "v1")
    server = started(serve, workers=2)
    seen: dict[str, int] = {}
    failures: list[str] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                try:
                    version = check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]])))
                except (AssertionError, httpx.HTTPError, KeyError) as exc:
                    failures.append(repr(exc))
                    continue
                seen[version] = seen.get(version, 0) + 1

    def answered_by(url: str, version: str) -> Callable[[], bool]:
        return lambda: httpx.post(f"{url}/v2/models/m/infer", json=body([[1, 2]])).headers.get(
            VERSION_HEADER) == version

    with http_server(server) as url:
        threads = [threading.Thread(target=hammer, args=(url,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            old_pids = set(server.worker_pids())
            for _ in range(3):  # promotion, rollback, three times over
                for tag, version in (("v2", "1.1.0"), ("v1", "1.0.0")):
                    before = seen.get(version, 0)
                    pull_at(world, origin, serve, tag)
                    wait_for(answered_by(url, version), what=f"{version} to answer")
                    wait_for(lambda v=version, b=before: seen.get(v, 0) > b + 5, what="load on the new version")
            wait_for(lambda: not any(alive(pid) for pid in old_pids), what="the retired workers to stop")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert failures == []
    assert seen["1.0.0"] > 20 and seen["1.1.0"] > 20
    assert server.metrics.swaps.labels("m")._value.get() == 7


def test_a_version_that_fails_to_load_or_answer_is_not_switched_to(
        world: World, origin: Path, tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    lines: list[str] = []
    pull_at(world, origin, serve, "v1")
    server = started(serve, echo=lines.append)
    with TestClient(create_app(server)) as client:
        for tag, version, why in (("broken-predict", "1.2.0", "predict.py raised ValueError: bad weights"),
                                  ("broken-load", "1.3.0", "predict.py raised RuntimeError: no weights file")):
            pull_at(world, origin, serve, tag)
            wait_for(lambda v=version: any(f"m@{v} not served" in line for line in lines), what="the refusal")
            line = next(line for line in lines if f"m@{version} not served" in line)
            assert why in line and line.endswith("still serving m 1.0.0 (production)")
            meta = client.get("/v2/models/m").json()
            assert meta["versions"] == ["1.0.0"] and why in meta["last_error"]
            for _ in range(5):
                assert check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) == "1.0.0"
            metrics = client.get("/metrics").text
            assert f'registry_model_swap_failures_total{{model="m",version="{version}"}} 1.0' in metrics
        time.sleep(0.5)  # several polls: a refused version is not retried while its link stays
        assert sum("not served" in line for line in lines) == 2
        pull_at(world, origin, serve, "v2")  # a good version after the bad ones: switched to
        wait_for(lambda: server.versions("m") == ["1.1.0"], what="1.1.0")
        assert check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) == "1.1.0"


def _canary_by_hand(serve: Path, traffic: float) -> None:
    """C1's --with-canary layout: production 1.0.0 at `current`, 1.1.0 at `canary` with its share."""
    model = serve / "m"
    assert (model / "versions" / "1.0.0").is_dir() and (model / "versions" / "1.1.0").is_dir()
    for link, version in (("current", "1.0.0"), ("canary", "1.1.0")):
        (model / f".tmp-{link}").symlink_to(f"versions/{version}")
        os.replace(model / f".tmp-{link}", model / link)
    state = json.loads((serve / "state.json").read_text())
    state["models"]["m"]["canary"] = {"version": "1.1.0", "traffic": traffic}
    (serve / "state.tmp").write_text(json.dumps(state))
    os.replace(serve / "state.tmp", serve / "state.json")


def test_a_canary_gets_its_share_of_traffic_and_sticky_keys_stay_put(
        world: World, origin: Path, tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    pull_at(world, origin, serve, "v1")
    pull_at(world, origin, serve, "v2")  # 1.0.0 stays on disk as the previous version
    _canary_by_hand(serve, 0.3)
    server = started(serve, seed=1)
    n, share = 400, 0.3
    with TestClient(create_app(server)) as client:
        assert client.get("/v2/models/m").json()["serving"] == {
            "production": "1.0.0", "canary": "1.1.0", "canary_traffic": 0.3}
        versions = [check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) for _ in range(n)]
        canary = versions.count("1.1.0")
        bound = 4.5 * math.sqrt(n * share * (1 - share))  # ~1 in 150,000 to fail by chance
        assert abs(canary - n * share) < bound, canary
        for key in ("alice", "bob", "carol", "dave"):
            sticky = {check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]),
                                               headers={"X-Canary-Key": key})) for _ in range(10)}
            assert len(sticky) == 1
        metrics = client.get("/metrics").text
        assert 'registry_served_version_info{model="m",role="canary",version="1.1.0"} 1.0' in metrics
        assert 'registry_served_version_info{model="m",role="production",version="1.0.0"} 1.0' in metrics
        # The canary leaves (promoted, or dropped): production answers everything again.
        (serve / "m" / "canary").unlink()
        wait_for(lambda: server.versions("m") == ["1.0.0"], what="the canary to go")
        assert {check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) for _ in range(20)} == {
            "1.0.0"}
        assert 'role="canary"' not in client.get("/metrics").text
        # A model whose links are gone is no longer served.
        (serve / "m" / "current").unlink()
        wait_for(lambda: server.names() == [], what="m to be removed")
        assert client.post("/v2/models/m/infer", json=body([[1, 2]])).status_code == 404


def test_a_folder_pulled_with_stage_canary_serves_its_one_version(
        world: World, origin: Path, tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    pull_at(world, origin, serve, "canary", stage="canary")
    server = started(serve)
    with TestClient(create_app(server)) as client:
        assert {check_answer(client.post("/v2/models/m/infer", json=body([[1, 2]]))) for _ in range(10)} == {
            "1.1.0"}
        assert client.get("/v2/models/m").json()["serving"] == {"canary": "1.1.0"}


def test_the_declared_environment_runs_the_model(
        world: World, origin: Path, tmp_path: Path, started: Callable[..., Server],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "env-cache"
    monkeypatch.setenv("REGISTRY_ENV_CACHE", str(cache))
    serve = tmp_path / "serve"
    pull_at(world, origin, serve, "env", models=("envm",))
    server = started(serve, timeouts=Timeouts(load_s=600))
    with TestClient(create_app(server)) as client:
        reply = client.post("/v2/models/envm/infer", json={"inputs": [[1]]})
        assert reply.status_code == 200, reply.text
        prefix, base = reply.json()["outputs"][0]["data"]
    assert Path(prefix).is_relative_to(cache) and prefix != sys.prefix and prefix != base


# -- the command ---------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found.update(int(p) for p in (task / "children").read_text().split())
    return found


def test_the_command_serves_swaps_and_stops_cleanly_on_sigterm(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    pull_at(world, origin, serve, "v1")
    proc = subprocess.Popen([sys.executable, "-m", "registry", "serve", str(serve), "--port", "0", "--poll", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline(), proc.stderr.readline()]
        assert lines[0].strip() == "m@1.0.0 now serving as production", lines
        assert lines[1].startswith(f"serving {serve} on http://127.0.0.1:") and "(models: m)" in lines[1]
        url = lines[1].split(" on ")[1].split(" ")[0].removesuffix("/v2")
        assert check_answer(httpx.post(f"{url}/v2/models/m/infer", json=body([[1, 2]]))) == "1.0.0"
        pull_at(world, origin, serve, "v2")
        assert proc.stderr.readline().strip() == "m@1.1.0 now serving as production, was 1.0.0"
        wait_for(lambda: httpx.post(f"{url}/v2/models/m/infer", json=body([[1, 2]])).headers[VERSION_HEADER]
                 == "1.1.0", what="1.1.0")
        workers = _children(proc.pid)
        assert workers
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err.strip().endswith("stopped") and "Traceback" not in err
    assert not any(alive(pid) for pid in workers)


def test_a_folder_no_pull_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    for folder, expected in ((tmp_path / "stuff", "not a serving folder (no state.json"),
                             (tmp_path / "missing", "no such folder")):
        done = subprocess.run([sys.executable, "-m", "registry", "serve", str(folder), "--port", "0"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr
        assert "registry pull --stage production --to DIR" in done.stderr


def test_an_onnx_only_version_is_served_with_onnxruntime(tmp_path: Path, started: Callable[..., Server]) -> None:
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])], "double",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2])],
    )
    serve = tmp_path / "serve"  # C1's layout by hand: what a pull of an ONNX version leaves
    folder = serve / "o" / "versions" / "1.0.0"
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(folder / "model.onnx"))
    (folder / "card.yaml").write_text("name: o\nversion: 1.0.0\ninput_example: [[1.0, 2.5]]\nartifacts:\n"
                                      "- {path: model.onnx, size: 1, sha256: x, storage: dvc}\n")
    (serve / "o" / "current").symlink_to("versions/1.0.0")
    (serve / "state.json").write_text(json.dumps({"format": 1, "stage": "production",
                                                  "models": {"o": {"version": "1.0.0"}}}))
    server = started(serve)
    with TestClient(create_app(server)) as client:
        assert client.get("/v2/models/o").json()["platform"] == "onnxruntime"
        reply = client.post("/v2/models/o/infer", json={"inputs": [
            {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4.5]}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"] == [{"name": "y", "shape": [2, 2], "datatype": "FP64",
                                            "data": [2.0, 4.0, 6.0, 9.0]}]


CRASHY = """\
import os
import time


def load(path):
    return None


def predict(model, inputs):
    if inputs == "crash":
        os._exit(3)
    if inputs == "slow":
        time.sleep(30)
    return os.getpid()
"""


def by_hand(serve: Path, predict: str) -> None:
    """C1's layout by hand: c@1.0.0 at `current`, as a pull leaves it."""
    folder = serve / "c" / "versions" / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(predict)
    (folder / "card.yaml").write_text('name: c\nversion: 1.0.0\nentrypoint: predict.py\ninput_example: "ok"\n')
    (serve / "c" / "current").symlink_to("versions/1.0.0")
    (serve / "state.json").write_text(json.dumps({"format": 1, "stage": "production",
                                                  "models": {"c": {"version": "1.0.0"}}}))


def test_a_worker_that_crashes_or_hangs_is_replaced(tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    by_hand(serve, CRASHY)
    server = started(serve, timeouts=Timeouts(request_s=2))
    with TestClient(create_app(server)) as client:
        first = client.post("/v2/models/c/infer", json={"inputs": "ok"}).json()["outputs"][0]["data"][0]
        for poison, why in (("crash", "the worker exited while predicting (exit code 3)"),
                            ("slow", "timed out predicting")):
            failed = client.post("/v2/models/c/infer", json={"inputs": poison})
            assert failed.status_code == 503 and why in failed.json()["error"], failed.text
            wait_for(lambda: client.post("/v2/models/c/infer", json={"inputs": "ok"}).status_code == 200,
                     what="a fresh worker")
            pid = client.post("/v2/models/c/infer", json={"inputs": "ok"}).json()["outputs"][0]["data"][0]
            assert pid != first and not alive(first)
            first = pid


def test_a_link_read_mid_pull_keeps_what_is_served_and_a_removed_model_stops(
        tmp_path: Path, started: Callable[..., Server]) -> None:
    serve = tmp_path / "serve"
    by_hand(serve, CRASHY)
    server = started(serve)
    with TestClient(create_app(server)) as client:
        # A link naming a folder that is gone (read just as a pull moved on): not taken for a removal.
        (serve / "c" / "next").symlink_to("versions/9.9.9")
        os.replace(serve / "c" / "next", serve / "c" / "current")
        time.sleep(0.5)
        assert client.post("/v2/models/c/infer", json={"inputs": "ok"}).status_code == 200
        assert server.versions("c") == ["1.0.0"]
        shutil.rmtree(serve / "c")
        wait_for(lambda: server.names() == [], what="c to go")
        assert client.post("/v2/models/c/infer", json={"inputs": "ok"}).status_code == 404
        assert client.get("/v2/health/ready").status_code == 200  # nothing left to load


def test_sigterm_while_loading_stops_at_once_and_kills_the_worker(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    by_hand(serve, "import time\n\ndef load(path):\n    time.sleep(120)\n\ndef predict(model, inputs):\n    return 1\n")
    proc = subprocess.Popen([sys.executable, "-m", "registry", "serve", str(serve), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: bool(_children(proc.pid)), what="the worker to start")
        workers = _children(proc.pid)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and err.strip() == "stopped", err
    assert not any(alive(pid) for pid in workers)


def _version(serve: Path, name: str, version: str, predict: str) -> None:
    folder = serve / name / "versions" / version
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(predict)
    (folder / "card.yaml").write_text(f'name: {name}\nversion: {version}\nentrypoint: predict.py\ninput_example: "ok"\n')


def _point(serve: Path, name: str, version: str) -> None:
    (serve / name / ".tmp-link").symlink_to(f"versions/{version}")
    os.replace(serve / name / ".tmp-link", serve / name / "current")


def test_a_slow_load_holds_back_no_other_model_and_stop_kills_it(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    quick = "def load(path):\n    return None\n\ndef predict(model, inputs):\n    return 1\n"
    slow = "import time\n\ndef load(path):\n    time.sleep(120)\n\ndef predict(model, inputs):\n    return 1\n"
    for name in ("a", "b"):
        _version(serve, name, "1.0.0", quick)
        _point(serve, name, "1.0.0")
    _version(serve, "a", "1.1.0", slow)
    _version(serve, "b", "1.1.0", quick)
    (serve / "state.json").write_text(json.dumps({"format": 1, "stage": "production", "models": {}}))
    before = _children(os.getpid())
    server = Server(serve, poll_s=0.1).start()
    try:
        _point(serve, "a", "1.1.0")
        time.sleep(0.5)  # a's new version is loading (for two minutes)
        _point(serve, "b", "1.1.0")
        wait_for(lambda: server.versions("b") == ["1.1.0"], timeout=10, what="b to swap beside a's load")
        assert server.versions("a") == ["1.0.0"]
        assert server.infer("a", "ok") == ("1.0.0", 1)
        started = _children(os.getpid()) - before
        assert len(started) >= 3  # a@1.0.0, a@1.1.0 (loading), b@1.1.0 (and b@1.0.0 while it retires)
    finally:
        server.stop()
    wait_for(lambda: not any(alive(pid) for pid in started), timeout=10, what="every worker to stop")


def test_accepted_connections_have_nagle_off() -> None:
    # A response's header and body are two writes: with Nagle on, the second waited for the
    # client's delayed ACK (40 ms per request on Linux). asyncio sets TCP_NODELAY only on the
    # sockets it makes itself, and `registry serve` hands uvicorn a socket of its own.
    import socket

    from registry.serving.server.app import _listen

    listener = _listen("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname()[:2])
    accepted, _ = listener.accept()
    try:
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for s in (accepted, client, listener):
            s.close()
