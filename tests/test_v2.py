"""The `v2` adapter against a real MLServer, the V2 repository layout, and the KServe InferenceService."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.errors import RegistryError, UsageError
from registry.serving.adapters import AdapterError, Change, make_adapter
from registry.serving.formats import kserve, v2_runtime
from registry.serving.formats import v2 as layout

ROOT = Path(__file__).resolve().parent.parent
PREDICT = """\
from helper import FACTOR

def load(path):
    return {"factor": FACTOR}

def predict(model, inputs):
    {body}
    return [sum(row) * model["factor"] for row in inputs]
"""


def _mlserver() -> str:
    found = os.environ.get("REGISTRY_MLSERVER") or str(ROOT / ".ci-venvs/mlserver/bin/mlserver")
    if not Path(found).is_file():
        pytest.skip(f"MLServer is not installed at {found} (.ci/run installs it: python3 -m venv "
                    ".ci-venvs/mlserver && .ci-venvs/mlserver/bin/pip install mlserver==1.7.1; or set REGISTRY_MLSERVER)")
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")


class Server:
    def __init__(self, url: str, repository: Path, log: Path) -> None:
        self.url, self.repository, self.log = url, repository, log

    def infer(self, model: str, version: str | None = None, rows: Any = ((1.0, 2.0),)) -> tuple[int, Any]:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return _get(self.url + path, v2_runtime.request_body([list(r) for r in rows]))


def _serve(work: Path, workers: int) -> Iterator[Server]:
    """A real MLServer on free ports, its repository in `work`; its process group killed at the end."""
    binary = _mlserver()
    repository = work / "repository"
    repository.mkdir()
    port = _free_port()
    (repository / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": _free_port(), "metrics_endpoint": None,
        "parallel_workers": workers, "load_models_at_startup": False, "debug": False}))
    log = work / "mlserver.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "start", str(repository)], cwd=work, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while _ready(url) is False:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"MLServer did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Server(url, repository, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Models in MLServer's own process: light, and every test below runs against it.
    yield from _serve(tmp_path_factory.mktemp("mlserver"), workers=0)


@pytest.fixture(scope="module")
def server_with_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # MLServer's default: models load in a worker process (the runtime is imported there).
    python = Path(_mlserver()).read_text(errors="replace").splitlines()[0].removeprefix("#!").strip()
    uvloop = subprocess.run([python, "-c", "import uvloop; print(uvloop.__version__)"],
                            capture_output=True, text=True).stdout.strip()
    if tuple(int(p) for p in uvloop.split(".")[:2] if p.isdigit()) >= (0, 22):
        pytest.skip(f"MLServer 1.7.1's worker processes crash at start with uvloop {uvloop} (.ci/run installs uvloop<0.22)")
    yield from _serve(tmp_path_factory.mktemp("mlserver-workers"), workers=1)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _version(root: Path, model: str, version: str, factor: int, body: str = "pass",
             example: Any = None) -> Change:
    folder = root / model / "versions" / version
    folder.mkdir(parents=True)
    (folder / "predict.py").write_text(PREDICT.replace("{body}", body))
    (folder / "helper.py").write_text(f"FACTOR = {factor}\n")
    card = {"name": model, "version": version, "entrypoint": "predict.py",
            "input_example": [[1.0, 2.0]] if example is None else example}
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    return Change(model=model, version=version, folder=folder, previous=None, previous_folder=None,
                  card=card, stage="production", registry_commit="c0ffee")


def _after(change: Change, previous: Change) -> Change:
    return Change(model=change.model, version=change.version, folder=change.folder, previous=previous.version,
                  previous_folder=previous.folder, card=change.card, stage="production", registry_commit="c0ffee")


def _folders(server: Server, model: str) -> list[str]:
    """What the model has in the repository (hidden work folders included: none may be left)."""
    return sorted(p.name for p in (server.repository / model).iterdir())


def _answers(server: Server, model: str, version: str | None = None) -> tuple[str | None, Any]:
    status, answer = server.infer(model, version)
    assert status == 200, answer
    return answer["model_version"], answer["outputs"][0]["data"]


def test_versions_swap_fail_back_and_revert(server: Server, tmp_path: Path) -> None:
    _swap_fail_back_and_revert(server, tmp_path)


def test_the_same_with_models_in_a_worker_process(server_with_workers: Server, tmp_path: Path) -> None:
    _swap_fail_back_and_revert(server_with_workers, tmp_path)


def _swap_fail_back_and_revert(server: Server, tmp_path: Path) -> None:
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    v1 = _version(tmp_path, "swap", "1.0.0", 1)
    adapter.apply(v1)
    assert _answers(server, "swap") == ("1.0.0", [3.0])

    v2 = _after(_version(tmp_path, "swap", "2.0.0", 2), v1)
    adapter.apply(v2)
    assert _answers(server, "swap") == ("2.0.0", [6.0])  # its own helper.py, not 1.0.0's
    assert _folders(server, "swap") == ["swap"] and layout.current_version(server.repository, "swap") == "2.0.0"
    status, _ = server.infer("swap", "2.0.0")
    assert status == 404  # the versioned copy it was checked as is gone: one instance serves
    adapter.apply(v2)  # idempotent: already the one loaded, just checked
    assert _answers(server, "swap") == ("2.0.0", [6.0])

    broken = _after(_version(tmp_path, "swap", "3.0.0", 3, body="raise ValueError('broken on purpose')"), v2)
    with pytest.raises(AdapterError) as failed:
        adapter.apply(broken)
    message = str(failed.value)
    assert "swap@3.0.0: infer failed" in message and "broken on purpose" in message, message
    assert "swap@2.0.0 serves again" in message, message
    assert _answers(server, "swap") == ("2.0.0", [6.0])
    assert _folders(server, "swap") == ["swap"] and layout.current_version(server.repository, "swap") == "2.0.0"
    status, _ = server.infer("swap", "3.0.0")
    assert status == 404

    adapter.revert(v2)  # back to 1.0.0, e.g. because another model of the same pull failed
    assert _answers(server, "swap") == ("1.0.0", [3.0])
    assert _folders(server, "swap") == ["swap"] and layout.current_version(server.repository, "swap") == "1.0.0"


def test_a_rollback_to_an_older_version_answers_with_it(server: Server, tmp_path: Path) -> None:
    # MLServer's default is the "newest" loaded version by its own order ("1.10.0" < "1.9.0" as
    # strings): the adapter leaves only the wanted version loaded, whatever the order says.
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    new = _version(tmp_path, "order", "1.10.0", 10)
    adapter.apply(new)
    older = _after(_version(tmp_path, "order", "1.9.0", 9), new)
    adapter.apply(older)
    assert _answers(server, "order") == ("1.9.0", [27.0])


def test_a_new_model_that_cannot_load_is_not_left_loaded(server: Server, tmp_path: Path) -> None:
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    change = _version(tmp_path, "fresh", "1.0.0", 1)
    (change.folder / "helper.py").write_text("raise RuntimeError('no weights here')\n")
    with pytest.raises(AdapterError) as failed:
        adapter.apply(change)
    assert "fresh@1.0.0: load failed" in str(failed.value), failed.value
    assert "not loaded on the server (it was new there)" in str(failed.value)
    assert _folders(server, "fresh") == []
    status, _ = server.infer("fresh")
    assert status == 404

    good = _version(tmp_path, "fresh", "1.0.1", 1)
    adapter.apply(good)
    unloadable = _after(_version(tmp_path, "fresh", "1.1.0", 2), good)
    (unloadable.folder / "predict.py").write_text("def load(path):\n    raise OSError('weights missing')\n"
                                                 "def predict(model, inputs):\n    return inputs\n")
    with pytest.raises(AdapterError) as failed:
        adapter.apply(unloadable)
    message = str(failed.value)
    assert "fresh@1.1.0: load failed" in message and "predict.py raised OSError: weights missing (line 2, in load)" \
        in message and "fresh@1.0.1 serves again" in message, message
    assert _answers(server, "fresh") == ("1.0.1", [3.0])

    no_entrypoint = _after(_version(tmp_path, "fresh", "1.2.0", 2), good)
    with pytest.raises(AdapterError, match=r"write failed: .*no entrypoint.*nothing was loaded, still serving 1.0.1"):
        adapter.apply(Change(**{**no_entrypoint.__dict__, "card": {"input_example": [[1.0, 2.0]]}}))
    assert _folders(server, "fresh") == ["fresh"] and layout.current_version(server.repository, "fresh") == "1.0.1"


def test_several_inputs_reach_predict_as_a_dict(server: Server, tmp_path: Path) -> None:
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    change = _version(tmp_path, "named", "1.0.0", 1, example={"a": [[1, 2]], "b": [[3, 4]]},
                      body="inputs = [[x + y for x, y in zip(inputs['a'][0], inputs['b'][0])]]")
    adapter.apply(change)
    status, answer = _get(server.url + "/v2/models/named/infer",
                          v2_runtime.request_body({"a": [[1, 2]], "b": [[3, 4]]}))
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert (output["name"], output["shape"], output["datatype"], output["data"]) == ("output0", [1], "INT64", [10])


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def test_write_model_is_never_seen_half_written(tmp_path: Path) -> None:
    change = _version(tmp_path / "src", "big", "1.0.0", 1)
    sizes = {f"part{i}.bin": (i + 1) * 4 << 20 for i in range(4)}
    for file, size in sizes.items():
        (change.folder / file).write_bytes(os.urandom(1024) * (size // 1024))
    repository = tmp_path / "repository"
    seen: list[str] = []
    stop = threading.Event()

    def scan() -> None:  # what MLServer does to find models
        while not stop.is_set():
            for found in glob.glob(str(repository / "**" / "model-settings.json"), recursive=True):
                folder = Path(found).parent
                before = _inode(folder)
                actual = {f: _size(folder / layout.MODEL_DIR / f) for f in sizes}
                runtime = (folder / "registry_runtime.py").exists()
                if before is None or _inode(folder) != before:
                    continue  # replaced meanwhile (the old one moved away whole): this read saw two folders
                seen.append("whole" if actual == sizes and runtime else f"partial: {actual}")

    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        for _ in range(3):  # a first write, then replacements of the same version
            written = layout.write_model(change.folder, change.card, repository, name="big", version="1.0.0")
    finally:
        stop.set()
        scanner.join()
    assert written == repository / "big" / "1.0.0"
    assert seen and set(seen) == {"whole"}, sorted(set(seen))[:3]
    settings = json.loads((written / "model-settings.json").read_text())
    assert settings["name"] == "big" and settings["parameters"]["version"] == "1.0.0"
    assert settings["implementation"] == "registry_runtime.RegistryRuntime"
    assert (written / layout.MODEL_DIR / "card.yaml").read_bytes() == (change.folder / "card.yaml").read_bytes()
    assert [p.name for p in (repository / "big").iterdir()] == ["1.0.0"]


def test_write_model_refuses_links_and_entrypoints_outside(tmp_path: Path) -> None:
    change = _version(tmp_path / "src", "bad", "1.0.0", 1)
    repository = tmp_path / "repository"
    (change.folder / "escape").symlink_to("/etc/passwd")
    with pytest.raises(RegistryError, match="not a plain file or folder"):
        layout.write_model(change.folder, change.card, repository, name="bad", version="1.0.0")
    assert not (repository / "bad" / "1.0.0").exists()
    assert list((repository / "bad").iterdir()) == []  # the temp folder went too
    (change.folder / "escape").unlink()
    for entrypoint in ("../predict.py", "/etc/passwd", "missing.py", None):
        card = {**change.card, "entrypoint": entrypoint}
        with pytest.raises(RegistryError, match="entrypoint"):
            layout.write_model(change.folder, card, repository, name="bad", version="1.0.0")
    with pytest.raises(UsageError):
        layout.write_model(change.folder, change.card, repository, name="bad", version="../1.0.0")


def test_conversions_match_the_builtin_servers_rule() -> None:
    body = v2_runtime.request_body([[1.0, 2.0], [3.0, 4.0]])
    (one,) = body["inputs"]
    assert one == {"name": "input0", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}
    assert v2_runtime.input_value("input0", one["shape"], one["data"], None) == [[1.0, 2.0], [3.0, 4.0]]
    ragged = v2_runtime.tensor("x", [[1], [2, 3]])
    assert ragged["datatype"] == "BYTES" and ragged["parameters"] == {"content_type": "json"}
    assert v2_runtime.input_value("x", ragged["shape"], ragged["data"], ragged["parameters"]) == [[1], [2, 3]]
    with pytest.raises(ValueError, match="holds 4 values"):
        v2_runtime.input_value("x", [2, 2], [1, 2, 3], None)
    assert v2_runtime.output_tensors({"label": [1, 0], "ok": True}) == [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
        {"name": "ok", "shape": [], "datatype": "BOOL", "data": [True]}]


def test_kserve_inference_service(tmp_path: Path) -> None:
    plain = yaml.safe_load(kserve.inference_service("credit-approval", "1.0.0", "s3://bucket/models/",
                                                    canary_version=None, canary_traffic=None))
    assert plain["apiVersion"] == "serving.kserve.io/v1beta1" and plain["kind"] == "InferenceService"
    assert plain["metadata"]["name"] == "credit-approval"
    model = plain["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://bucket/models/credit-approval/1.0.0"
    assert model["runtime"] == "mlserver" and model["protocolVersion"] == "v2"
    assert "canaryTrafficPercent" not in plain["spec"]["predictor"]
    change = _version(tmp_path / "src", "credit-approval", "1.0.0", 1)  # the folder KServe's storageUri names
    written = layout.write_model(change.folder, change.card, tmp_path / "models", name=change.model, version="1.0.0")
    assert model["storageUri"].endswith("/" + written.relative_to(tmp_path / "models").as_posix())
    canary = yaml.safe_load(kserve.inference_service("credit-approval", "1.0.0", "gs://b/m", canary_version="1.1.0",
                                                     canary_traffic=0.125, runtime="kserve-mlserver"))
    predictor = canary["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == round(0.125 * 100) == 12
    assert predictor["model"]["storageUri"] == "gs://b/m/credit-approval/1.1.0"
    assert predictor["model"]["runtime"] == "kserve-mlserver"
    assert canary["metadata"]["labels"] == {"registry.model": "credit-approval", "registry.version": "1.0.0",
                                            "registry.canary-version": "1.1.0"}
    for bad in [dict(name="9lives"), dict(canary_traffic=1.5, canary_version="1.1.0"),
                dict(canary_traffic=0.1, canary_version=None), dict(storage_uri="")]:
        args: dict[str, Any] = {"name": "m", "version": "1.0.0", "storage_uri": "s3://b",
                                "canary_version": None, "canary_traffic": None, **bad}
        with pytest.raises(UsageError):
            kserve.inference_service(args.pop("name"), args.pop("version"), args.pop("storage_uri"), **args)


@pytest.mark.parametrize(("spec", "message"), [
    ("v2=http://127.0.0.1:1", "needs repository=DIR"),
    ("v2=ftp://x,repository=/r", r"not an http\(s\) URL"),
    ("v2=http://127.0.0.1:1,repository=/r,colour=red", "unknown setting 'colour'"),
    ("v2=http://127.0.0.1:1,repository=/r,timeout=-3", "timeout must be"),
])
def test_bad_specs_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make_adapter(spec)


def test_an_unreachable_server_fails_the_load_and_says_so(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = make_adapter(f"v2=http://127.0.0.1:{port},repository={tmp_path / 'repository'},timeout=5")
    change = _version(tmp_path, "gone", "1.0.0", 1)
    with pytest.raises(AdapterError, match=r"gone@1.0.0: load failed: POST .* no answer") as failed:
        adapter.apply(change)
    assert "putting back nothing failed too" in str(failed.value)  # the unload could not be asked for either
    assert list((tmp_path / "repository" / "gone").iterdir()) == []  # its folder did not stay behind


def test_two_versions_in_one_process_each_import_their_own_helpers(tmp_path: Path) -> None:
    # What MLServer does when two versions are loaded side by side: the runtime's import, in-process.
    import sys
    import types

    first = _version(tmp_path, "side", "1.0.0", 1)
    second = _version(tmp_path, "side", "2.0.0", 2)
    # A module of that name imported before (the server's own, or another runtime's) must not
    # answer the entrypoint's `from helper import ...`, and is left where it was.
    theirs = types.ModuleType("helper")
    saved = sys.modules.get("helper")
    sys.modules["helper"] = theirs
    try:
        model1, predict1 = v2_runtime._import_entrypoint(str(first.folder), "predict.py", "side_1")
        model2, predict2 = v2_runtime._import_entrypoint(str(second.folder), "predict.py", "side_2")
        assert sys.modules["helper"] is theirs
    finally:
        if saved is None:
            sys.modules.pop("helper", None)
        else:
            sys.modules["helper"] = saved
    assert (predict1(model1, [[1, 2]]), predict2(model2, [[1, 2]])) == ([3], [6])
    (second.folder / "outside.py").symlink_to(first.folder / "predict.py")
    with pytest.raises(ValueError, match="not a file inside"):
        v2_runtime._import_entrypoint(str(second.folder), "outside.py", "side_x")
    (first.folder / "predict.py").write_text("def load(path):\n    return 1\n")
    with pytest.raises(ValueError, match=r"must define load\(path\) and predict"):
        v2_runtime._import_entrypoint(str(first.folder), "predict.py", "side_y")
    with pytest.raises(TypeError) as raised:
        predict1(None, [[1]])
    assert v2_runtime.described(raised.value, str(first.folder / "predict.py")).startswith(
        "predict.py raised TypeError: 'NoneType' object is not subscriptable (line 8")


def test_apply_again_only_checks_and_a_new_model_reverts_to_nothing(server: Server, tmp_path: Path) -> None:
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    loads = tmp_path / "loads.txt"
    change = _version(tmp_path, "again", "1.0.0", 1)
    (change.folder / "predict.py").write_text(
        f"def load(path):\n    open({str(loads)!r}, 'a').write('load\\n')\n    return 1\n"
        "def predict(model, inputs):\n    return [sum(row) for row in inputs]\n")
    adapter.apply(change)
    count = len(loads.read_text().splitlines())
    adapter.apply(change)  # the pull applying the same version again (a restart, a re-run)
    assert len(loads.read_text().splitlines()) == count  # checked, not loaded again
    assert _answers(server, "again") == ("1.0.0", [3.0])
    adapter.revert(change)  # it was new on this server: nothing of it is left
    assert _folders(server, "again") == []
    status, _ = server.infer("again")
    assert status == 404


def test_no_request_fails_while_a_version_replaces_another(server_with_workers: Server, tmp_path: Path) -> None:
    # A version that takes a while to load: requests without a version keep being answered
    # (by the old one, then by the new one), never "not ready" (a versioned folder alone would
    # be MLServer's default while it loads, when it orders it newer: 400 "not ready" meanwhile).
    server = server_with_workers
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    slow = "def load(path):\n    import time\n    time.sleep(1.5)\n    return {'factor': FACTOR}"
    v1 = _version(tmp_path, "nogap", "1.0.0", 1)
    adapter.apply(v1)
    v2 = _after(_version(tmp_path, "nogap", "2.0.0", 2), v1)
    (v2.folder / "predict.py").write_text((v2.folder / "predict.py").read_text().replace(
        "def load(path):\n    return {\"factor\": FACTOR}", slow))
    assert "sleep" in (v2.folder / "predict.py").read_text()
    answers: list[tuple[int, Any]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            status, answer = server.infer("nogap")
            answers.append((status, answer["model_version"] if status == 200 else answer))
            time.sleep(0.02)

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        adapter.apply(v2)
    finally:
        stop.set()
        asker.join()
    assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    assert answers[0][1] == "1.0.0"  # (requests wait while a load holds the worker: few are made)
    assert _answers(server, "nogap") == ("2.0.0", [6.0])


def test_a_model_settings_file_among_a_versions_files_is_no_model(tmp_path: Path) -> None:
    # A version shipping its own model-settings.json (naming another model, another runtime) must
    # not become a model MLServer finds: its files are below the hidden .model/.
    change = _version(tmp_path / "src", "plain", "1.0.0", 1)
    (change.folder / "sub").mkdir()
    for where in (change.folder, change.folder / "sub"):
        (where / "model-settings.json").write_text(json.dumps({"name": "someone-else", "implementation": "os.system"}))
    repository = tmp_path / "repository"
    layout.write_model(change.folder, change.card, repository, name="plain", version="1.0.0")
    layout.write_model(change.folder, change.card, repository, name="plain", version="1.0.0", current=True)
    found = sorted(glob.glob(str(repository / "**" / "model-settings.json"), recursive=True))
    assert found == [str(repository / "plain" / "1.0.0" / "model-settings.json"),
                     str(repository / "plain" / "plain" / "model-settings.json")]
    current = json.loads((repository / "plain" / "plain" / "model-settings.json").read_text())
    assert "version" not in current["parameters"] and current["parameters"]["extra"]["registry_version"] == "1.0.0"
    assert (repository / "plain" / "plain" / layout.MODEL_DIR / "sub" / "model-settings.json").is_file()


def test_a_version_that_fails_only_as_the_default_is_rolled_back(server: Server, tmp_path: Path) -> None:
    # It passes the check as a versioned copy, then fails once it is the default (its folder is
    # then named after the model): the last check catches it, and what served before serves again.
    adapter = make_adapter(f"v2={server.url},repository={server.repository}")
    late = "if __import__('pathlib').Path(model['path']).parent.name == 'late':\n        raise RuntimeError('late')"
    for previous in (None, _version(tmp_path / "old", "late", "1.0.0", 1)):
        if previous is not None:
            adapter.apply(previous)
        change = _version(tmp_path / ("b" if previous else "a"), "late", "2.0.0", 2, body=late)
        (change.folder / "predict.py").write_text((change.folder / "predict.py").read_text().replace(
            'return {"factor": FACTOR}', 'return {"factor": FACTOR, "path": path}'))
        with pytest.raises(AdapterError, match=r"late@2.0.0: check failed: .*RuntimeError: late") as failed:
            adapter.apply(change if previous is None else _after(change, previous))
        if previous is None:
            assert "not loaded on the server (it was new there)" in str(failed.value)
            assert _folders(server, "late") == []
            assert server.infer("late")[0] == 404
        else:
            assert "late@1.0.0 serves again" in str(failed.value)
            assert _folders(server, "late") == ["late"]
            assert _answers(server, "late") == ("1.0.0", [3.0])


def test_messages_name_the_server_without_the_credentials_in_its_url(tmp_path: Path) -> None:
    # As events and receipts name servers (serving/drive.label): a password in --server's URL stays out.
    adapter = make_adapter(f"v2=http://user:s3cret@127.0.0.1:9,repository={tmp_path / 'repository'},timeout=3")
    change = _version(tmp_path, "creds", "1.0.0", 1)
    with pytest.raises(AdapterError) as failed:
        adapter.apply(change)
    assert "s3cret" not in str(failed.value) and "v2 http://127.0.0.1:9: creds@1.0.0" in str(failed.value)
