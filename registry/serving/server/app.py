"""`registry serve DIR`: the Open Inference Protocol (V2) over HTTP for every model in a serving folder.

Endpoints (every `/v2/models/...` answer carries `X-Model-Version`: the version that
answered an inference, else the versions live, comma-separated):

- `GET /v2/health/live`, `GET /v2/health/ready` (503 until every model has loaded);
- `GET /v2/models/{m}` and `/v2/models/{m}/versions/{v}`: V2 metadata (inputs and outputs
  from the card's `signature`), plus `serving` (role -> version, canary share) and
  `last_error` (a version that was not switched to, and why);
- `GET /v2/models/{m}/ready`, `/v2/models/{m}/versions/{v}/ready`: 200, or 503;
- `POST /v2/models/{m}/infer` (production, or the canary for its share; an
  `X-Canary-Key` header makes the choice sticky) and `/v2/models/{m}/versions/{v}/infer`
  (that live version); bodies as `registry.serving.server.v2` says. 400 for a body that is
  not a request, 404 for a model or version not served, 500 when the model raised, 503
  when no worker could answer;
- `GET /metrics`: Prometheus text (`registry.serving.server.metrics`).

`create_app(server_or_dir)` gives the FastAPI app (a `Server` already started, or a DIR:
the app starts and stops its `Server` with its lifespan); `serve` runs it with uvicorn.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from registry.serving.server import v2
from registry.serving.server.metrics import CONTENT_TYPE_LATEST
from registry.serving.server.models import NotFound, ServeError, Server
from registry.serving.server.pool import Timeouts
from registry.serving.server.routing import CANARY_KEY_HEADER
from registry.version import __version__

__all__ = ["VERSION_HEADER", "create_app", "serve"]

VERSION_HEADER = "X-Model-Version"


def _error(status: int, message: str, version: str = "") -> JSONResponse:
    headers = {VERSION_HEADER: version} if version else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(source: Server | Path) -> FastAPI:
    """The V2 app over a started `Server`, or over DIR (a Server started and stopped with the app)."""
    owned = not isinstance(source, Server)
    server = source if isinstance(source, Server) else Server(Path(source))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await run_in_threadpool(server.start)
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(server.stop)

    app = FastAPI(title="registry serve", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.server = server

    def live_header(name: str) -> dict[str, str]:
        return {VERSION_HEADER: ",".join(server.versions(name))}

    @app.get("/v2")
    def server_metadata() -> dict[str, Any]:
        return {"name": "registry", "version": __version__, "extensions": []}

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> JSONResponse:
        ok = server.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    def metadata(name: str, version: str | None = None) -> JSONResponse:
        try:
            body = server.describe(name, version)
        except NotFound as exc:
            return _error(404, str(exc))
        return JSONResponse(body, headers=live_header(name))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    def model_ready(name: str, version: str | None = None) -> JSONResponse:
        if name not in server.names():
            return _error(404, f"model {name!r} is not served here")
        ok = server.ready(name, version)
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503,
                            headers=live_header(name))

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> JSONResponse:
        started = time.perf_counter()
        known = name in server.names()

        def answer(response: JSONResponse, code: int, served: str) -> JSONResponse:
            if known:
                server.metrics.request(name, served, code, time.perf_counter() - started)
            return response

        try:
            body = await request.json()
            inputs = v2.model_inputs(body)
        except ValueError as exc:  # not JSON, or v2.BadRequest
            message = str(exc) if isinstance(exc, v2.BadRequest) else f"the body is not JSON: {exc}"
            return answer(_error(400, message), 400, version or "")
        try:
            served, output = await run_in_threadpool(server.infer, name, inputs, version,
                                                     request.headers.get(CANARY_KEY_HEADER))
        except ServeError as exc:
            return answer(_error(exc.status, str(exc), exc.version), exc.status, exc.version or version or "")
        reply: dict[str, Any] = {"model_name": name, "model_version": served, "outputs": v2.outputs(output)}
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            reply["id"] = body["id"]
        try:
            response = JSONResponse(reply, headers={VERSION_HEADER: served})
        except ValueError as exc:  # NaN or infinity in the output: not JSON
            return answer(_error(500, f"the model's output is not JSON: {exc}", served), 500, served)
        return answer(response, 200, served)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(server.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    return app


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=2048)
    # Accepted connections inherit it (Linux). asyncio sets TCP_NODELAY only on sockets it makes
    # itself: without it, a response's header and body writes met the client's delayed ACK, 40 ms each.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


class _Stopped(BaseException):  # not caught as a failed version on its way out
    """SIGTERM before the server listens: stop loading."""


def serve(root: Path, host: str, port: int, poll_s: float, workers: int, timeout_s: float,
          echo: Callable[[str], None]) -> None:
    """Load DIR's models, listen, watch DIR until SIGTERM or Ctrl-C; then kill every worker."""
    import uvicorn

    timeouts = Timeouts(load_s=max(300.0, 5 * timeout_s), request_s=timeout_s, drain_s=timeout_s + 30)
    server = Server(root, poll_s=poll_s, workers=workers, timeouts=timeouts, echo=echo)
    web: list[uvicorn.Server] = []

    def on_sigterm(signum: int, frame: object) -> None:
        # While loading: stop at once. Once uvicorn runs, it handles SIGTERM itself (a graceful
        # shutdown) and sends it here again after; in between, ask it to shut down.
        if not web:
            raise _Stopped
        web[0].should_exit = True

    try:
        sock = _listen(host, port)
    except OSError as exc:
        from registry.errors import UsageError

        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        server.start()
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if family_is_v6(sock) else bound[0]
        config = uvicorn.Config(create_app(server), log_level="warning", access_log=False,
                                timeout_graceful_shutdown=10)
        web.append(uvicorn.Server(config))
        echo(f"serving {root} on http://{shown}:{bound[1]}/v2 (models: {', '.join(server.names()) or 'none'})")
        web[0].run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        server.stop()
        sock.close()
        signal.signal(signal.SIGTERM, previous)
    echo("stopped")


def family_is_v6(sock: socket.socket) -> bool:
    return sock.family == socket.AF_INET6
