"""`registry api`: the registry over HTTP (FastAPI), for dashboards, serving systems and bots.

Reads answer with the same JSON objects as the CLI's --json, from an in-memory index of
one commit of --ref (registry.restapi_index); every read carries that commit as its ETag
and answers If-None-Match with 304. The one write proposes a stage change as a pushed
branch (registry.restapi_write); nothing here ever writes to --ref.

Status codes: 400 a malformed path segment or query parameter (the CLI's usage error,
same message); 401 no or an unknown bearer token; 403 the user's roles do not allow the
change; 404 no such model or version; 409 the change conflicts with the registry's state
(lifecycle, an already proposed branch); 413 a request body over 64 KiB; 422 a malformed
request body; 500 the registry at --ref is invalid (the message names file, line and
field); 502 pushing or opening the pull request failed. Every error body is
``{"error": message}``. A write is authenticated before its body is read.
"""

import json
import logging
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from registry.errors import RegistryError, UsageError
from registry.files.names import ALL_STAGES, check_model_name, check_version, parse_ref
from registry.integrations.restapi.guard import USER_KEY, Guard, authenticate
from registry.integrations.restapi.index import (
    ReadIndex,
    Snapshot,
    Source,
    Stale,
    check_date,
    manifest_bytes,
    to_json,
)
from registry.integrations.restapi.metrics import Metrics, Observe, Scope
from registry.integrations.restapi.schemas import (
    DATE_TIME,
    JSON,
    PROMETHEUS,
    ApiError,
    IfNoneMatch,
    ManifestStage,
    ModelQuery,
    NameParam,
    SinceQuery,
    StageQuery,
    TagQuery,
    TransitionRequest,
    UntilQuery,
    VersionParam,
    error_response,
    errors_doc,
    read_doc,
    usage,
)
from registry.integrations.restapi.write import (
    Conflict,
    Forbidden,
    GitHub,
    NotFound,
    Proposer,
    Tokens,
    UpstreamError,
    User,
)
from registry.queries.shapes import (
    SERVABLE,
    AuditEntry,
    Health,
    Manifest,
    ModelDetail,
    ModelSummary,
    TransitionResult,
    VersionDetail,
)
from registry.version import __version__


def _matches(if_none_match: str | None, commit: str) -> bool:
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == commit:
            return True
    return False


def create_app(index: ReadIndex, proposer: Proposer | None, tokens: Tokens) -> FastAPI:
    """The application over an index that has been refreshed once (see serve())."""
    app = FastAPI(
        title="registry",
        version=__version__,
        description=__doc__,
        openapi_tags=[{"name": "read", "description": "The CLI's --json answers at the served commit."},
                      {"name": "write", "description": "Proposals: pushed branches, never --ref."},
                      {"name": "operations"}],
    )
    app.router.redirect_slashes = False  # /api/v1/models/ is not a model: 404, not a redirect
    metrics = Metrics(index)
    bearer = HTTPBearer(auto_error=False, description="A token from REGISTRY_API_TOKENS (token=user pairs).")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {error.get('msg', 'invalid').removeprefix('Value error, ')}")
        return error_response(422, "; ".join(parts) or "invalid request body")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        # Inputs were checked before: a usage error left is a bad parameter; anything else is
        # the served registry's content (a located ValidationError) or its git.
        from registry.queries.manifest import NothingServed

        status = 404 if isinstance(exc, NothingServed) else 400 if isinstance(exc, UsageError) else 500
        return error_response(status, str(exc))

    def answer(if_none_match: str | None, produce: Callable[[Snapshot], Callable[[], bytes]]) -> Response:
        """produce(snapshot) checks the request and returns how to make the body; 304 skips making it."""
        for _ in range(5):
            snap = index.current()
            try:
                make = produce(snap)
                headers = {"ETag": f'"{snap.commit}"'}
                if _matches(if_none_match, snap.commit):
                    return Response(status_code=304, headers=headers)
                return Response(make(), media_type=JSON, headers=headers)
            except Stale:
                continue  # the index moved on while we read: answer from the new commit
        raise ApiError(503, "the registry is being refreshed; try again")

    @app.get("/api/v1/models", tags=["read"], summary="List models (registry ls --json)",
             **read_doc(list[ModelSummary], 400))
    def list_models(stage: StageQuery = None, tag: TagQuery = None, if_none_match: IfNoneMatch = None) -> Response:
        if stage is not None and stage not in ALL_STAGES:
            raise ApiError(400, f"stage {stage!r}: use one of {', '.join(ALL_STAGES)}")
        from registry.queries.inventory import holds_stage, model_tags, parse_tag, tag_matches

        wanted_tag = usage(parse_tag, tag) if tag is not None else None

        def produce(snap: Snapshot) -> Callable[[], bytes]:
            inventory = snap.inventory()
            if stage is None and wanted_tag is None:
                return lambda: snap.get(("models",), lambda reg: to_json([s.as_json() for s in inventory.summaries]))

            def make() -> bytes:
                out = []
                for summary in inventory.summaries:
                    if not holds_stage(summary.stages, partial(inventory.versions.__getitem__, summary.name), stage):
                        continue
                    if wanted_tag is not None:
                        tags = snap.get(("tags", summary.name), partial(model_tags, name=summary.name))
                        if not tag_matches(tags, wanted_tag):
                            continue
                    out.append(summary.as_json())
                return to_json(out)

            return make

        return answer(if_none_match, produce)

    def existing(snap: Snapshot, name: str, version: str | None = None) -> None:
        usage(check_model_name, name)
        if version is not None:
            usage(check_version, version)
        inventory = snap.inventory()
        if name not in inventory.known:
            raise ApiError(404, f"no model named {name!r} in this registry; see GET /api/v1/models")
        if version is not None and version not in inventory.versions[name]:
            raise ApiError(404, f"{name}@{version} is not registered; see GET /api/v1/models/{name} for its versions")

    @app.get("/api/v1/models/{name}", tags=["read"], summary="A model: model.yaml, stages, versions "
             "(registry show NAME --json)", **read_doc(ModelDetail, 400, 404))
    def show_model(name: NameParam, if_none_match: IfNoneMatch = None) -> Response:
        from registry.queries import inventory

        def produce(snap: Snapshot) -> Callable[[], bytes]:
            existing(snap, name)
            return lambda: snap.get(("model", name), lambda reg: to_json(inventory.show_model(reg, name).as_json()))

        return answer(if_none_match, produce)

    @app.get("/api/v1/models/{name}/versions/{version}", tags=["read"],
             summary="A version: card, stage, signature, history (registry show NAME@VERSION --json)",
             **read_doc(VersionDetail, 400, 404))
    def show_version(name: NameParam, version: VersionParam, if_none_match: IfNoneMatch = None) -> Response:
        from registry.queries import inventory

        def produce(snap: Snapshot) -> Callable[[], bytes]:
            existing(snap, name, version)
            return lambda: snap.get(("version", name, version),
                                    lambda reg: to_json(inventory.show_version(reg, name, version).as_json()))

        return answer(if_none_match, produce)

    @app.get("/api/v1/manifest", tags=["read"], summary="What serving needs for a stage (registry manifest --json)",
             **read_doc(Manifest, 400, 404))
    def manifest(stage: ManifestStage = "production", if_none_match: IfNoneMatch = None,
                 as_of: Annotated[str | None, Query(description=(
                     "What was served then (an RFC 3339 date-time, e.g. 2026-11-01T12:00:00Z): the manifest "
                     "of the last first-parent commit at or before it; 404 before the registry's history"),
                     json_schema_extra=DATE_TIME)] = None) -> Response:
        if stage not in SERVABLE:
            raise ApiError(400, f"stage {stage!r}: a manifest is made for {', '.join(SERVABLE)} only")
        if as_of is not None:
            from registry.queries.manifest import parse_time

            if not re.fullmatch(DATE_TIME["pattern"], as_of):
                raise ApiError(400, f"as_of {as_of!r}: use an RFC 3339 date-time, e.g. 2026-11-01T12:00:00Z")
            parse_time(as_of, "as_of")
        return answer(if_none_match, lambda snap: lambda: manifest_bytes(snap, stage, as_of))

    from registry.queries import audit

    actions = tuple(getattr(audit, "ACTIONS", ()))
    ActionQuery = Annotated[str | None, Query(description="Only entries of this action.",
                                              json_schema_extra={"enum": list(actions)})]

    @app.get("/api/v1/audit", tags=["read"], summary="The audit log, oldest first (registry log --json)",
             **read_doc(list[AuditEntry], 400))
    def audit_log(model: ModelQuery = None, since: SinceQuery = None, until: UntilQuery = None,
                  action: ActionQuery = None, if_none_match: IfNoneMatch = None) -> Response:
        name, version = usage(parse_ref, model) if model is not None else (None, None)
        if since is not None:
            usage(check_date, "since", since)
        if until is not None:
            usage(check_date, "until", until)
        if action is not None and action not in actions:
            raise ApiError(400, f"action {action!r}: use one of {', '.join(actions)}")

        def produce(snap: Snapshot) -> Callable[[], bytes]:
            def make() -> bytes:
                entries = snap.get(("audit",), lambda reg: [e.as_json() for e in audit.log(reg)])
                return to_json([e for e in entries
                                if (name is None or e["model"] == name)
                                and (version is None or e["version"] == version)
                                and (since is None or e["timestamp"][:10] >= since)
                                and (until is None or e["timestamp"][:10] <= until)
                                and (action is None or e["action"] == action)])

            return make

        return answer(if_none_match, produce)

    @app.get("/healthz", tags=["operations"], summary="Liveness and the served commit", **read_doc(Health))
    def healthz(if_none_match: IfNoneMatch = None) -> Response:
        ref = index.source.ref
        return answer(if_none_match, lambda snap: lambda: to_json(Health("ok", snap.commit, ref).as_json()))

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format: requests, latencies, commit age, "
                                             "models per stage. Not cached: no ETag."}})
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=PROMETHEUS,
                        headers={"Cache-Control": "no-store"})

    def user_of(request: Request,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
        # Guard authenticated the request before its body was read; `bearer` only documents it.
        user = request.scope.get(USER_KEY)
        if not isinstance(user, User):
            return authenticate(tokens, request.headers.get("authorization"))
        return user

    @app.post("/api/v1/models/{name}/versions/{version}/transitions", tags=["write"], status_code=201,
              summary="Propose a stage change: a pushed branch (and a pull request), never --ref",
              response_model=TransitionResult, responses=errors_doc(400, 401, 403, 404, 409, 413, 422, 500, 502))
    def transition(name: NameParam, version: VersionParam, body: TransitionRequest,
                   user: Annotated[User, Depends(user_of)]) -> TransitionResult:
        usage(check_model_name, name)
        usage(check_version, version)
        if proposer is None:
            raise ApiError(403, "this server takes no proposals")
        try:
            done = proposer.propose(user, name, version, body.to, body.reason, body.traffic)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except Forbidden as exc:
            raise ApiError(403, str(exc)) from None
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        except UpstreamError as exc:
            raise ApiError(502, str(exc)) from None
        promoted = done.promoted
        assert promoted.branch is not None
        return TransitionResult(branch=promoted.branch, commit=promoted.commit,
                                pull_request_url=done.pull_request_url, name=promoted.name,
                                version=promoted.version, from_stage=promoted.from_stage,  # type: ignore[arg-type]
                                to_stage=promoted.to_stage, replaced=promoted.replaced)  # type: ignore[arg-type]

    writes = [route for route in app.routes
              if isinstance(route, APIRoute) and (route.methods or set()) - {"GET", "HEAD"}]

    def is_write(scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in writes)

    app.add_middleware(Guard, tokens=tokens, writes=is_write)
    app.add_middleware(Observe, metrics=metrics, index=index)  # outermost: refusals are counted too
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, without the 422 it adds to every operation with parameters: reads
    answer a malformed parameter with 400 (declared), only request bodies get 422."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes, tags=app.openapi_tags)
        for operations in document["paths"].values():
            for method, operation in operations.items():
                if method == "get":
                    operation["responses"].pop("422", None)
        if "HTTPValidationError" not in json.dumps(document["paths"]):
            for unused in ("HTTPValidationError", "ValidationError"):
                document.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = document
    return app.openapi_schema


def build(origin: str | None, ref: str, refresh: float, cache: Path | None,
          start: Path | None = None) -> tuple[ReadIndex, Proposer, Tokens]:
    """The parts of a server: the read index (fetched and indexed once), the proposer, the tokens."""
    tokens = Tokens.from_env()
    github = GitHub.from_env()
    source = Source.remote(origin, ref, cache) if origin else Source.local(start or Path.cwd(), ref, cache)
    index = ReadIndex(source, refresh)
    index.refresh()
    return index, Proposer(source.url, ref, source.cache, github), tokens


def serve(host: str, port: int, origin: str | None, ref: str, refresh: float, cache: Path | None,
          echo: Callable[[str], None]) -> None:
    import uvicorn

    index, proposer, tokens = build(origin, ref, refresh, cache)
    app = create_app(index, proposer, tokens)
    commit = index.current().commit
    echo(f"Serving {ref} at {commit[:12]} on http://{host}:{port}/api/v1 (OpenAPI: /openapi.json)")
    if not len(tokens):
        echo("No tokens in $REGISTRY_API_TOKENS: read-only (POST .../transitions answers 401)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
