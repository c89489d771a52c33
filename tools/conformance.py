"""Conformance harness: zero failed requests while a model server follows 10 promotions and rollbacks.

For one target server it builds, in a temporary folder, a registry with a bare origin,
a DVC remote and three signed versions of one model `m`: 1.0.0 and 1.1.0, whose
`predict.py` answers its own version number, and 1.2.0, whose `predict` raises. Then:

1. `registry pull --watch` (the Python API, polling every --interval seconds) keeps a
   serving folder at production and drives the target through its adapter (the built-in
   server, `registry serve`, follows the folder by itself);
2. --clients threads send requests at a bounded rate (--rate per thread) the whole time;
3. the harness merges --swaps changes of production, alternating a promotion of 1.1.0 and a
   rollback to 1.0.0 (each a real commit pushed to the origin), and waits until the
   server answers with the new version;
4. it promotes the broken 1.2.0 and checks that the previous version keeps answering
   (the server or the adapter refused it and rolled back), then stops everything.

It reports failed requests (the goal is 0), the time from each merge to the first answer
from the new version, and P99 latency during swaps against steady state.

    .venv/bin/python tools/conformance.py --target builtin [--swaps 10] [--clients 4] [--rate 20] [--json]

Targets: `builtin` (`registry serve`), `torchserve` (TorchServe 0.12 with its model API,
`torchserve` and Java on PATH) and `v2` (MLServer: $REGISTRY_MLSERVER or
.ci-venvs/mlserver/bin/mlserver). tests/test_conformance.py runs it with a small load.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
MODEL = "m"
GOOD = ("1.0.0", "1.1.0")
BROKEN = "1.2.0"

CARD = """\
description: Conformance model; predict answers its own version number
framework: python
task: regression
metrics: {rmse: 0.1}
entrypoint: predict.py
input_example: [[0.5]]
"""

PREDICT = '''\
"""Answers {version!r} as a number, so that a client can tell which version served it."""

ANSWER = {number!r}


def load(path):
    return ANSWER


def predict(model, inputs):
    {body}
'''


def version_number(version: str) -> float:
    major, minor, patch = (int(p) for p in version.split("."))
    return major + minor / 10 + patch / 100


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the registry ----------------------------------------------------------------------------


@dataclass
class World:
    base: Path
    origin: Path
    workspace: Path  # a clone where promotions are made and pushed ("merged")
    trusted: Path


def build(base: Path) -> World:
    """A registry with m@1.0.0 in production, m@1.1.0 and the broken m@1.2.0 in staging, all signed."""
    from registry import api
    from registry.signing.bundle import sign_folder
    from registry.signing.keys import generate_keypair, read_private_key

    origin = base / "origin.git"
    git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(origin, "config", "uploadpack.allowFilter", "true")
    reg = api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
    git(reg.root, "config", "user.name", "Conformance")
    git(reg.root, "config", "user.email", "conformance@example.com")
    key, public = generate_keypair(base / "release")
    for version in (*GOOD, BROKEN):
        folder = base / "inputs" / version
        folder.mkdir(parents=True)
        body = ("raise RuntimeError('this version is broken on purpose')" if version == BROKEN
                else "return [model for _ in inputs]")
        (folder / "predict.py").write_text(PREDICT.format(version=version, number=version_number(version), body=body))
        (folder / "card.yaml").write_text(CARD)
        reg.register(MODEL, version, folder / "card.yaml", [folder / "predict.py"], no_branch=True)
        sign_folder(reg.version_dir(MODEL, version), MODEL, version, read_private_key(key))
        git(reg.root, "add", "-A")
        git(reg.root, "commit", "--quiet", "-m", f"Sign {MODEL}@{version}")
        reg.promote(MODEL, version, "staging", "conformance", no_branch=True)
    reg.promote(MODEL, GOOD[0], "production", "conformance", no_branch=True)
    git(reg.root, "remote", "add", "origin", str(origin))
    git(reg.root, "push", "--quiet", "origin", "main")
    return World(base, origin, reg.root, public)


def merge(world: World, version: str) -> float:
    """Make `version` production on the origin's main, as merging its promotion PR does; returns when."""
    from registry import api

    reg = api.open(world.workspace)
    stages = (world.workspace / "models" / MODEL / "stages.yaml").read_text()
    if f"production: {version}" in stages:
        return time.monotonic()
    reg.promote(MODEL, version, "production", "conformance", no_branch=True)
    git(world.workspace, "push", "--quiet", "origin", "main")
    return time.monotonic()


# --- targets ---------------------------------------------------------------------------------


class Target(Protocol):
    name: str
    follows_folder: bool  # True: the server watches DIR itself; False: the pull drives it (--server)

    @staticmethod
    def missing() -> str | None: ...  # why the target cannot run on this machine

    def start(self, world: World, serve_dir: Path) -> None: ...

    def servers(self) -> list[str]: ...  # --server specs for the pull client

    def ask(self, conn: http.client.HTTPConnection) -> tuple[bool, str | None, str]: ...  # ok, version, detail

    def address(self) -> tuple[str, int]: ...

    def stop(self) -> None: ...


def _version_of(answer: Any) -> str | None:
    """1.1 -> '1.1.0': the number predict.py answered, back to a version."""
    try:
        number = float(answer)
    except (TypeError, ValueError):
        return None
    for version in (*GOOD, BROKEN):
        if abs(version_number(version) - number) < 1e-9:
            return version
    return None


V2_REQUEST = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [0.5]}]})


def _v2_ask(conn: http.client.HTTPConnection, path: str) -> tuple[bool, str | None, str]:
    conn.request("POST", path, body=V2_REQUEST, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        return False, None, f"HTTP {response.status}: {body[:200]!r}"
    data = json.loads(body)
    answered = _version_of(data["outputs"][0]["data"][0])
    header = response.getheader("X-Model-Version")
    if header is not None and header != answered:
        return False, answered, f"X-Model-Version {header} but the model answered {answered}"
    return answered is not None, answered, ""


class _V2Process:
    """A server process answering the V2 protocol on 127.0.0.1:port (the built-in server, MLServer)."""

    port: int
    process: subprocess.Popen[bytes] | None
    log: Any

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def ask(self, conn: http.client.HTTPConnection) -> tuple[bool, str | None, str]:
        return _v2_ask(conn, f"/v2/models/{MODEL}/infer")

    def stop(self) -> None:
        _stop(self.process)
        if hasattr(self, "log"):
            self.log.close()


class Builtin(_V2Process):
    """`registry serve DIR` as a separate process: it follows DIR by itself."""

    name = "builtin"
    follows_folder = True

    @staticmethod
    def missing() -> str | None:
        """Why this target cannot run here (None: it can)."""
        import importlib.util

        if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
            return "registry serve needs the [serve] extra (fastapi, uvicorn)"
        return None

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, world: World, serve_dir: Path) -> None:
        self.port = free_port()
        self.log = open(world.base / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "registry"), "serve", str(serve_dir), "--port", str(self.port),
             "--poll", "0.2"], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(self.address(), "/v2/health/ready", self.process, world.base / "serve.log")

    def servers(self) -> list[str]:
        return []



def _wait_ready(address: tuple[str, int], path: str, process: subprocess.Popen[bytes] | None, log: Path,
                timeout: float = 120.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        conn = http.client.HTTPConnection(*address, timeout=2)
        try:
            conn.request("GET", path, headers=headers or {})
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError(f"the server at {address} was not ready after {timeout:.0f} s:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()


class V2(_V2Process):
    """MLServer (the Open Inference Protocol's model-repository API), driven by the pull's `v2` adapter."""

    name = "v2"
    follows_folder = False

    @staticmethod
    def binary() -> Path:
        return Path(os.environ.get("REGISTRY_MLSERVER") or ROOT / ".ci-venvs/mlserver/bin/mlserver")

    @staticmethod
    def missing() -> str | None:
        if not V2.binary().is_file():
            return (f"MLServer is not installed at {V2.binary()} (.ci/run installs it in .ci-venvs/mlserver; "
                    "or set REGISTRY_MLSERVER)")
        return None

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.repository = Path()

    def start(self, world: World, serve_dir: Path) -> None:
        self.repository = world.base / "mlserver-models"
        self.repository.mkdir(exist_ok=True)
        self.port = free_port()
        (self.repository / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.port, "grpc_port": free_port(), "metrics_endpoint": None,
            "parallel_workers": 1, "load_models_at_startup": False, "debug": False}))
        self.log = open(world.base / "mlserver.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([str(self.binary()), "start", str(self.repository)], cwd=world.base,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_ready(self.address(), "/v2/health/ready", self.process, world.base / "mlserver.log")

    def servers(self) -> list[str]:
        return [f"v2=http://127.0.0.1:{self.port},repository={self.repository}"]



class TorchServe:
    """TorchServe 0.12 (model API on, token authorization on), driven by `--server torchserve=...`."""

    name = "torchserve"
    follows_folder = False

    @staticmethod
    def missing() -> str | None:
        import importlib.util
        import shutil

        if shutil.which("java") is None:
            return "TorchServe needs Java 17 (java is not on PATH)"
        if TorchServe._command() is None or importlib.util.find_spec("model_archiver") is None:
            return "torchserve / torch-model-archiver are not installed (.ci/run installs torchserve==0.12.0)"
        return None

    @staticmethod
    def _command() -> str | None:
        import shutil

        found = Path(sys.executable).parent / "torchserve"
        return str(found) if found.exists() else shutil.which("torchserve")

    def __init__(self) -> None:
        # The pull client is made (with servers()) before start(): the ports and the key file's place come first.
        self.home = Path(tempfile.mkdtemp(prefix="conformance-torchserve-"))
        self.inference, self.management, metrics, grpc_i, grpc_m, workers = (free_port() for _ in range(6))
        temp = self.home / "tmp"
        temp.mkdir()
        (self.home / "config.properties").write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.inference}",
            f"management_address=http://127.0.0.1:{self.management}",
            f"metrics_address=http://127.0.0.1:{metrics}",
            "grpc_inference_address=127.0.0.1", f"grpc_inference_port={grpc_i}",
            "grpc_management_address=127.0.0.1", f"grpc_management_port={grpc_m}",
            f"initial_worker_port={workers}", "enable_model_api=true", "load_models=",
            "default_workers_per_model=1", "number_of_netty_threads=4", "job_queue_size=100",
            "disable_system_metrics=true", f"vmargs=-Xmx512m -XX:+UseSerialGC -Djava.io.tmpdir={temp}", "",
        ]))
        self.process: subprocess.Popen[bytes] | None = None
        self.key = ""

    def servers(self) -> list[str]:
        return [f"torchserve=http://127.0.0.1:{self.management},inference=http://127.0.0.1:{self.inference},"
                f"key-file={self.home / 'key_file.json'}"]

    def start(self, world: World, serve_dir: Path) -> None:
        (self.home / "store").mkdir()
        env = {key: value for key, value in os.environ.items() if not key.startswith("COVERAGE_")}
        env.update(TMPDIR=str(self.home / "tmp"), TEMP=str(self.home / "tmp"),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
        self.log = open(world.base / "torchserve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(self._command()), "--start", "--foreground", "--ncs", "--model-store", str(self.home / "store"),
             "--ts-config", str(self.home / "config.properties")],
            cwd=self.home, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while not (self.home / "key_file.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"TorchServe did not start:\n{(world.base / 'torchserve.log').read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(0.5)  # the key file is written, then the listeners open
        self.key = json.loads((self.home / "key_file.json").read_text())["inference"]["key"]
        _wait_ready(self.address(), "/ping", self.process, world.base / "torchserve.log", timeout=180,
                    headers={"Authorization": f"Bearer {self.key}"})

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.inference

    def ask(self, conn: http.client.HTTPConnection) -> tuple[bool, str | None, str]:
        conn.request("POST", f"/predictions/{MODEL}", body="[[0.5]]",
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return False, None, f"HTTP {response.status}: {body[:200]!r}"
        answered = _version_of(json.loads(body)[0])
        return answered is not None, answered, ""

    def stop(self) -> None:
        import shutil

        _stop(self.process)
        if self.process is not None:
            self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


TARGETS: dict[str, type[Any]] = {"builtin": Builtin, "torchserve": TorchServe, "v2": V2}


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Sample:
    start: float
    seconds: float
    ok: bool
    version: str | None
    detail: str


class Load:
    """`clients` threads, each sending `rate` requests a second over one keep-alive connection."""

    def __init__(self, target: Any, clients: int, rate: float) -> None:
        self.target, self.clients, self.rate = target, clients, rate
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        period = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                if conn is None:
                    conn = http.client.HTTPConnection(*self.target.address(), timeout=30)
                start = time.monotonic()
                try:
                    ok, version, detail = self.target.ask(conn)
                except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as exc:
                    ok, version, detail = False, None, f"{type(exc).__name__}: {exc}"
                    conn.close()
                    conn = None
                with self.lock:
                    self.samples.append(Sample(start, time.monotonic() - start, ok, version, detail))
                next_at += period
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            if conn is not None:
                conn.close()

    def first_answer(self, version: str, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for sample in reversed(self.samples):
                    if sample.start < after:
                        break
                    if sample.ok and sample.version == version:
                        return sample.start + sample.seconds
            time.sleep(0.05)
        return None


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    target: str
    swaps: int
    requests: int
    failed: int
    failures: list[str] = field(default_factory=list)
    merge_to_answer_s: list[float] = field(default_factory=list)
    p99_ms_steady: float = 0.0
    p99_ms_swapping: float = 0.0
    broken_refused: bool = False
    serving_after_broken: str | None = None


def p99(values: list[float]) -> float:
    from registry.runner.run import percentile

    return percentile(values, 99) * 1000 if values else 0.0


def run(target_name: str, base: Path, swaps: int = 10, clients: int = 4, rate: float = 20.0,
        interval: float = 0.2, answer_timeout: float = 120.0) -> Report:
    from registry.serving.puller import Puller

    target = TARGETS[target_name]()
    world = build(base)
    serve_dir = base / "serve"
    events: list[dict[str, Any]] = []
    if not target.follows_folder:  # a server the pull drives: up before the first pull loads 1.0.0 into it
        target.start(world, serve_dir)
    puller = Puller(serve_dir, stage="production", source=str(world.origin), trusted_keys=world.trusted,
                    on_event=events.append, servers=target.servers())
    try:
        puller.poll()
        if target.follows_folder:  # `registry serve` needs a folder a pull made
            target.start(world, serve_dir)
    except BaseException:
        target.stop()
        raise
    watcher = threading.Thread(target=puller.watch, args=(interval,), daemon=True)
    watcher.start()
    windows: list[tuple[float, float]] = []
    report = Report(target_name, swaps, 0, 0)
    try:
        # Warm up: the first answers from 1.0.0 before anything moves.
        with Load(target, clients, rate) as load:
            if load.first_answer(GOOD[0], 0.0, answer_timeout) is None:
                raise RuntimeError(f"{target_name} never answered from {GOOD[0]}")
            time.sleep(1.0)
            for i in range(swaps):
                version = GOOD[(i + 1) % 2]
                merged = merge(world, version)
                answered = load.first_answer(version, merged, answer_timeout)
                if answered is None:
                    raise RuntimeError(f"{target_name}: {version} did not answer within {answer_timeout:.0f} s "
                                       f"of its merge (swap {i + 1}); pull events: {events[-3:]}")
                report.merge_to_answer_s.append(round(answered - merged, 3))
                windows.append((merged, answered + 1.0))
                time.sleep(1.5)
            before = GOOD[swaps % 2]
            merged = merge(world, BROKEN)
            refused = _wait_for_refusal(events, merged, answer_timeout)
            time.sleep(2.0)
            with load.lock:
                late = [s for s in load.samples if s.start > merged + 0.5]
            report.broken_refused = refused and bool(late) and all(s.version == before for s in late if s.ok)
            report.serving_after_broken = late[-1].version if late else None
        samples = load.samples
    finally:
        puller.stop.set()
        watcher.join(timeout=60)
        target.stop()
    report.requests = len(samples)
    failed = [s for s in samples if not s.ok]
    report.failed = len(failed)
    report.failures = sorted({s.detail for s in failed})[:10]

    def swapping(s: Sample) -> bool:
        return any(a <= s.start <= b for a, b in windows)

    report.p99_ms_swapping = round(p99([s.seconds for s in samples if s.ok and swapping(s)]), 2)
    report.p99_ms_steady = round(p99([s.seconds for s in samples if s.ok and not swapping(s)]), 2)
    return report


def _wait_for_refusal(events: list[dict[str, Any]], after: float, timeout: float) -> bool:
    """True once the pull (an adapter refused the version) or the server (`registry serve` keeps the old one) refused it."""
    deadline = time.monotonic() + timeout
    seen = len(events)
    while time.monotonic() < deadline:
        for event in events[seen:]:
            if event.get("event") in ("rolled_back", "failed"):
                return True
            if event.get("event") == "switched" and event.get("version") == BROKEN:
                return True  # the folder moved; the built-in server must refuse to switch to it
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="builtin")
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per client")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        report = run(args.target, Path(tmp), args.swaps, args.clients, args.rate)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        times = report.merge_to_answer_s
        print(f"{report.target}: {report.swaps} swaps, {report.requests} requests, {report.failed} failed")
        if times:
            print(f"  merge -> new version answering: median {statistics.median(times):.2f} s, max {max(times):.2f} s")
        print(f"  P99 latency: steady {report.p99_ms_steady:.1f} ms, during swaps {report.p99_ms_swapping:.1f} ms")
        print(f"  broken version refused, previous kept answering: {report.broken_refused}")
        for failure in report.failures:
            print(f"  failure: {failure}")
    return 0 if report.failed == 0 and report.broken_refused else 1


if __name__ == "__main__":
    sys.exit(main())

