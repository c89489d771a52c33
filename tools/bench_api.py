"""Benchmark `registry api`: GET /api/v1/manifest on a 1000-model registry, over one keep-alive connection.

Serves the synthetic registry of tools/synth.py (1000 models x 10 versions, ~25,000
commits; built once with `git fast-import` and cached under .bench/, shared with
tools/bench) through the real command, `registry api --origin <registry>`, on
127.0.0.1 only, then sends --requests sequential GETs on one HTTP/1.1 keep-alive
connection and prints p50/p99 of the full round trip (request, ~400 KB JSON body
read to the end). Baselines from the same run, on the same server and connection:
GET /healthz (the server's per-request floor: routing, ETag, metrics, tiny body) and
the manifest again with If-None-Match (a 304: what a polling client mostly pays).

    .venv/bin/python tools/bench_api.py [--models 1000] [--versions 10] [--requests 500]

Target (from the issue): manifest p99 <= 50 ms. Exit code 0 when it is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
PROJECT = TOOLS.parent
sys.path.insert(0, str(TOOLS))

import synth  # noqa: E402  (a sibling module, importable once tools/ is on the path)

HOST = "127.0.0.1"  # loopback only: the benchmark never listens on another interface
TARGET_P99_MS = 50.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def start_server(registry: Path, cache: Path, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """The real command in its own process; returns it and the seconds until it answered."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_API_TOKENS", "GITHUB_TOKEN")}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry", "api", "--origin", str(registry), "--host", HOST,
         "--port", str(port), "--cache", str(cache), "--refresh", "3600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    deadline = started + 300
    while True:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return proc, time.perf_counter() - started
        except OSError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"the server exited with {proc.returncode}:\n{err}")
        if time.perf_counter() > deadline:
            proc.kill()
            raise SystemExit("the server did not answer within 300 s")
        time.sleep(0.2)


def timed_gets(connection: http.client.HTTPConnection, path: str, count: int,
               headers: dict[str, str] | None = None, expect: int = 200) -> tuple[list[float], bytes]:
    times = []
    body = b""
    for _ in range(count):
        start = time.perf_counter()
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
        times.append(time.perf_counter() - start)
        if response.status != expect:
            raise SystemExit(f"GET {path}: {response.status}, expected {expect}: {body[:200]!r}")
        if response.getheader("Connection", "").lower() == "close":
            raise SystemExit("the server closed the connection: not a keep-alive measurement")
    return times, body


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summary(times: list[float]) -> tuple[float, float, float]:
    return (statistics.median(times) * 1000, percentile(times, 0.99) * 1000, max(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--rebuild", action="store_true", help="Build the synthetic registry again.")
    args = parser.parse_args(argv)

    built = synth.ensure_registry(PROJECT / ".bench", args.models, args.versions, rebuild=args.rebuild)
    how = "reused" if built.reused else f"built in {built.build_seconds:.1f} s"
    print(f"registry: {built.models} models x {built.versions} versions, {built.commits} commits ({how})")
    with tempfile.TemporaryDirectory(prefix="bench-api-") as cache:
        port = free_port()
        proc, startup = start_server(built.path, Path(cache), port)
        try:
            print(f"server: registry api on http://{HOST}:{port}, answering after {startup:.1f} s "
                  "(fetch, checkout, index)")
            connection = http.client.HTTPConnection(HOST, port, timeout=30)
            _, body = timed_gets(connection, "/api/v1/manifest", 20)  # warm-up, untimed
            manifest = json.loads(body)
            if len(manifest["models"]) != built.with_production:
                raise SystemExit(f"the manifest has {len(manifest['models'])} models, "
                                 f"expected {built.with_production}")
            etag = f'"{manifest["registry_commit"]}"'
            healthz, _ = timed_gets(connection, "/healthz", args.requests)
            full, _ = timed_gets(connection, "/api/v1/manifest", args.requests)
            cached, _ = timed_gets(connection, "/api/v1/manifest", args.requests,
                                   headers={"If-None-Match": etag}, expect=304)
            connection.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    floor = summary(healthz)
    rows = [
        ("GET /healthz (baseline)", floor),
        (f"GET /api/v1/manifest ({len(body) / 1000:.0f} KB)", summary(full)),
        ("GET /api/v1/manifest, If-None-Match (304)", summary(cached)),
    ]
    print(f"\n{args.requests} sequential GETs each, one keep-alive connection, loopback:")
    print(f"{'request':<44} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 / baseline p99':>19}")
    for label, (p50, p99, worst) in rows:
        print(f"{label:<44} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f} {p99 / floor[1]:>19.1f}")
    p99 = summary(full)[1]
    met = p99 <= TARGET_P99_MS
    print(f"\ntarget: manifest p99 <= {TARGET_P99_MS:.0f} ms: {p99:.2f} ms, {'pass' if met else 'FAIL'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
