"""The demo's serving host: `registry serve` over the pulled folder, asked over HTTP as a client would.

`registry demo` starts the built-in server on the folder `registry pull` keeps, sends
Open Inference Protocol V2 requests to it, counts which version answered a canary split,
and keeps a steady load running while a promotion and a rollback are pulled, to show that
no request fails during a hot swap.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import RegistryError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def v2_request(rows: Sequence[Sequence[float]]) -> bytes:
    flat = [float(v) for row in rows for v in row]
    return json.dumps({"inputs": [{"name": "pixels", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                                   "data": flat}]}).encode()


@dataclass
class Answer:
    status: int
    version: str | None
    outputs: list[object]


class Client:
    """One keep-alive connection to the server's V2 endpoint for a model."""

    def __init__(self, port: int, model: str) -> None:
        self.port, self.model = port, model
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def infer(self, body: bytes) -> Answer:
        try:
            self.conn.request("POST", f"/v2/models/{self.model}/infer", body=body,
                              headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return Answer(0, None, [])
        outputs = json.loads(data).get("outputs", []) if response.status == 200 else []
        return Answer(response.status, response.getheader("X-Model-Version"),
                      list(outputs[0]["data"]) if outputs else [])

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`registry serve` in the background until the block ends; waits until it is ready."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RegistryError(f"registry serve exited with {process.returncode}: "
                                        f"{log.read_text(errors='replace')[-2000:]}")
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    conn.request("GET", "/v2/health/ready")
                    if conn.getresponse().status == 200:
                        break
                except (OSError, http.client.HTTPException):
                    pass
                finally:
                    conn.close()
                if time.monotonic() > deadline:
                    raise RegistryError(f"registry serve was not ready after 60 s: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.1)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def split(port: int, model: str, body: bytes, count: int) -> Counter[str]:
    """Which version answered each of `count` requests (every one must succeed)."""
    client = Client(port, model)
    answered: Counter[str] = Counter()
    try:
        for _ in range(count):
            answer = client.infer(body)
            if answer.status != 200 or answer.version is None:
                raise RegistryError(f"a request failed during the canary split (HTTP {answer.status})")
            answered[answer.version] += 1
    finally:
        client.close()
    return answered


def binomial_range(share: float, count: int, z: float = 3.0) -> tuple[float, float]:
    """The range a share observed over `count` requests falls in, z standard deviations wide."""
    spread = z * math.sqrt(share * (1 - share) / count)
    return max(0.0, share - spread), min(1.0, share + spread)


@dataclass
class Load:
    """Clients sending requests in the background; counts answers per version and failures."""

    port: int
    model: str
    body: bytes
    clients: int = 4
    answered: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _client(self) -> None:
        client = Client(self.port, self.model)
        try:
            while not self._stop.is_set():
                answer = client.infer(self.body)
                with self._lock:
                    if answer.status == 200 and answer.version is not None:
                        self.answered[answer.version] += 1
                    else:
                        self.failed += 1
                self._stop.wait(0.005)
        finally:
            client.close()

    def wait_for(self, version: str, timeout: float = 60.0) -> None:
        """Until `version` has answered a few requests (the server swapped to it)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            start = self.answered[version]
        while time.monotonic() < deadline:
            with self._lock:
                if self.answered[version] >= start + 20:
                    return
            time.sleep(0.05)
        raise RegistryError(f"the server did not answer from {version} within {timeout:.0f} s")

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.answered.values()) + self.failed
