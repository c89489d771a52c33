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
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from registry.errors import RegistryError, UsageError
from registry.files.names import (
    ALL_STAGES,
    MODEL_NAME_RE,
    SEMVER_RE,
    check_model_name,
    check_version,
    parse_ref,
)
from registry.files.safetext import CONTROL_CLASS, first_control, printable
from registry.integrations.restapi.index import (
    ReadIndex,
    Snapshot,
    Source,
    Stale,
    check_date,
    manifest_bytes,
    to_json,
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
from registry.version import __version__

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
SERVABLE = ("production", "canary", "staging")

Stage = Literal["development", "staging", "canary", "production", "deprecated", "archived"]
ServableStage = Literal["production", "canary", "staging"]
assert set(Stage.__args__) == set(ALL_STAGES)  # type: ignore[attr-defined]


# -- Parameters: documented with the patterns and choices the CLI accepts; checked by the
# CLI's own functions, so that a malformed one is a 400 with the CLI's message.

_NAME = f"^{MODEL_NAME_RE.pattern}$"
_SEMVER = SEMVER_RE.pattern.replace(r"\d", "[0-9]")  # JSON Schema's \d is not ASCII-only
_DATE = {"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}
_DATE_TIME = {"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})$",
              "format": "date-time"}

NameParam = Annotated[str, PathParam(description="A model name.", json_schema_extra={"pattern": _NAME})]
VersionParam = Annotated[str, PathParam(description="A semantic version.",
                                        json_schema_extra={"pattern": f"^{_SEMVER}$"})]
IfNoneMatch = Annotated[str | None, Header(description="An ETag from an earlier answer: 304 if still current.")]
StageQuery = Annotated[str | None, Query(description="Only models with a version in this stage.",
                                         json_schema_extra={"enum": list(ALL_STAGES)})]
TagQuery = Annotated[str | None, Query(description="KEY=VALUE: only models whose model.yaml tags (or, for keys it does not set, its latest version's card tags) match.",
                                       json_schema_extra={"pattern": "^[^=]+=.*$"})]
ManifestStage = Annotated[str, Query(description="The stage served.", json_schema_extra={"enum": list(SERVABLE)})]
ModelQuery = Annotated[str | None, Query(description="NAME or NAME@VERSION.",
                                         json_schema_extra={"pattern": f"^{MODEL_NAME_RE.pattern}(@{_SEMVER})?$"})]
SinceQuery = Annotated[str | None, Query(description="Changes on or after this date.", json_schema_extra=_DATE)]
UntilQuery = Annotated[str | None, Query(description="Changes on or before this date.", json_schema_extra=_DATE)]


# -- Response and request schemas (documentation of the CLI's --json shapes) --------------


class Error(BaseModel):
    error: str = Field(description="What is wrong and what to do, in one message.")


class Canary(BaseModel):
    version: str
    traffic: float


class Deprecation(BaseModel):
    sunset: str | None = None
    reason: str | None = None


class Stages(BaseModel):
    """models/NAME/stages.yaml: only the stages that are held appear."""

    production: str | None = None
    canary: Canary | None = None
    staging: list[str] | None = None
    deprecated: dict[str, Deprecation] | None = None
    archived: list[str] | None = None


class ModelSummary(BaseModel):
    """One entry of `registry ls --json`."""

    name: str
    latest: str | None
    stages: Stages


class VersionBrief(BaseModel):
    version: str
    stage: Stage
    created: str | None
    metrics: dict[str, float]


class ModelDetail(BaseModel):
    """`registry show NAME --json`: model.yaml, stages and versions."""

    name: str
    description: str
    owners: list[str]
    task: str | None
    tags: dict[str, Any]
    stages: Stages
    versions: list[VersionBrief]


class Artifact(BaseModel):
    path: str
    size: int
    sha256: str
    storage: Literal["dvc", "git"]


class AuditEntry(BaseModel):
    """One entry of `registry log --json`."""

    timestamp: str
    action: str
    model: str
    version: str
    from_stage: str | None
    to_stage: str | None
    performed_by: str
    approved_by: str | None
    reason: str | None
    commit: str
    pr: int | None = None
    url: str | None = None
    approval_source: Literal["review", "merge", "none"] = Field(
        default="none", description="review: the forge's review records (git notes); merge: who merged; none")
    self_approved: bool = False
    detail: str | None = Field(default=None, description="policy events: what changed in registry.yaml, in words")


class SigningStatus(BaseModel):
    """Whether the version folder holds a signature.json, and what checking it said."""

    present: bool
    path: str | None
    status: str | None = None


class VersionDetail(BaseModel):
    """`registry show NAME@VERSION --json`: the card's fields (any of the card schema's
    optional fields may appear too, `signature` being the model's I/O schema), its stage,
    the signature file's status and the last changes."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str
    description: str
    created: str
    framework: str
    task: str
    metrics: dict[str, float]
    artifacts: list[Artifact]
    stage: Stage
    sunset: str | None = None
    traffic: float | None = None
    signing: SigningStatus | None = None
    history: list[AuditEntry]


class ManifestArtifact(Artifact):
    url: str | None = Field(description="Where the DVC remote keeps it (null for files kept in git).")


class ManifestModel(BaseModel):
    version: str
    traffic: float | None = Field(default=None, description="Canary manifests only.")
    path: str
    artifacts: list[ManifestArtifact]
    signature: str | None


class Manifest(BaseModel):
    """`registry manifest --json`: what serving needs for one stage."""

    registry_commit: str
    stage: ServableStage
    generated_at: str
    models: dict[str, ManifestModel]


class Health(BaseModel):
    status: Literal["ok"]
    registry_commit: str
    ref: str


class TransitionRequest(BaseModel):
    # traffic only with to=canary, said in the schema too, so that clients can check before sending.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"to": {"const": "canary"}}},
        "else": {"properties": {"traffic": {"type": "null"}}},
    })

    to: Stage = Field(description="The target stage.")
    reason: str = Field(min_length=1, max_length=4000,
                        description="Why: the commit's Reason: trailer. Plain text: no control characters "
                                    "(but tab and newline) and no bidirectional overrides.",
                        json_schema_extra={"pattern": f"^[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}\\s][^{CONTROL_CLASS}]*$"})
    traffic: float | None = Field(default=None, gt=0, lt=1, description="Canary traffic share (to=canary only).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.reason.strip():
            raise ValueError("reason is empty: say why, for the audit log")
        where = first_control(self.reason)
        if where is not None:
            raise ValueError(f"reason has {printable(self.reason[where])} at character {where + 1}: control "
                             "characters (terminal escape sequences among them) and bidirectional overrides "
                             "are not allowed; give plain text")
        if self.traffic is not None and self.to != "canary":
            raise ValueError("traffic applies only to a transition to canary")
        return self


class TransitionResult(BaseModel):
    branch: str = Field(description="The pushed branch; merging it is the promotion.")
    commit: str
    pull_request_url: str | None = Field(description="Set when GITHUB_TOKEN and GITHUB_REPOSITORY are configured.")
    name: str
    version: str
    from_stage: Stage
    to_stage: Stage
    replaced: str | None = Field(description="The production version moved aside, if any.")


# -- The application ------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers) if headers else None)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "A malformed path segment or query parameter.",
        401: "No bearer token, or an unknown one.",
        403: "The user's roles do not allow this change.",
        404: "No such model or version at the served commit.",
        409: "The change conflicts with the registry's state.",
        413: f"The request body is over {MAX_BODY} bytes.",
        422: "A malformed request body.",
        500: "The registry at the served commit is invalid.",
        502: "Pushing the branch or opening the pull request failed.",
        503: "The index moved to a new commit several times while answering: try again.",
    }
    return {code: {"model": Error, "description": what[code]} for code in codes}


_ETAG_HEADERS = {"ETag": {"description": "The registry commit the answer was read from.",
                          "schema": {"type": "string"}}}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: If-None-Match names the served commit.", "headers": _ETAG_HEADERS}}


def _read(model: type[BaseModel] | Any, *errors: int) -> dict[str, Any]:
    return {"response_model": model, "responses": {
        200: {"headers": _ETAG_HEADERS}, **_NOT_MODIFIED, **_errors(*errors, 500, 503)}}


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


def _usage(func: Callable[..., Any], *args: Any) -> Any:
    try:
        return func(*args)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None


class _Metrics:
    def __init__(self, index: ReadIndex) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("registry_api_requests", "HTTP requests answered.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("registry_api_request_duration_seconds", "Time to answer a request.",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(_RegistryCollector(index))


class _RegistryCollector(Collector):
    """The served commit's age and the models per stage, computed when scraped."""

    def __init__(self, index: ReadIndex) -> None:
        self.index = index

    def collect(self) -> list[Metric]:
        snap = self.index.current()
        metrics: list[Metric] = [
            GaugeMetricFamily("registry_commit_age_seconds", "Seconds since the served commit was made.",
                              value=max(0.0, time.time() - snap.committed_at)),
            GaugeMetricFamily("registry_commit_timestamp_seconds", "Commit time of the served commit.",
                              value=snap.committed_at),
            CounterMetricFamily("registry_api_fetch_failures", "Refreshes of --ref that failed.",
                                value=self.index.fetch_failures),
        ]
        if self.index.last_fetch is not None:
            metrics.append(GaugeMetricFamily("registry_api_last_fetch_timestamp_seconds",
                                             "When --ref was last fetched.", value=self.index.last_fetch))
        try:
            counts = snap.inventory().stage_counts()
        except (RegistryError, Stale):
            return metrics
        models = GaugeMetricFamily("registry_models", "Models with at least one version in the stage.",
                                   labels=["stage"])
        for stage, count in counts.items():
            models.add_metric([stage], count)
        metrics.append(models)
        return metrics


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Observe:
    """ASGI middleware: count and time every request by route template; start due refreshes."""

    def __init__(self, app: ASGIApp, metrics: _Metrics, index: ReadIndex) -> None:
        self.app = app
        self.metrics = metrics
        self.index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.index.maybe_refresh()
        started = time.perf_counter()
        status = [500]

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()


MAX_BODY = 64 * 1024  # a transition request is a small JSON object
USER_KEY = "registry.user"  # the scope key where _Guard leaves the authenticated User


def authenticate(tokens: Tokens, authorization: str | None) -> User:
    """The user of an Authorization header, or the 401 to answer (ApiError)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise ApiError(401, "this needs a bearer token (Authorization: Bearer TOKEN) "
                            "from REGISTRY_API_TOKENS", {"WWW-Authenticate": "Bearer"})
    user = tokens.user(credentials)
    if user is None:
        raise ApiError(401, "unknown bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return user


class _Guard:
    """ASGI middleware in front of the application: a request to a write route is
    authenticated before a byte of its body is read (401), and no request body may exceed
    MAX_BODY bytes (413), whether it declares its length or comes chunked (counted as the
    application reads it). Refusals close the connection, so the rest of the body is
    never read either."""

    def __init__(self, app: ASGIApp, tokens: Tokens, writes: Callable[[Scope], bool],
                 limit: int = MAX_BODY) -> None:
        self.app = app
        self.tokens = tokens
        self.writes = writes
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.writes(scope):
            try:
                scope[USER_KEY] = authenticate(self.tokens, headers.get("authorization"))
            except ApiError as exc:
                await _refuse(send, exc)
                return
        try:
            declared = int(headers.get("content-length", "0"))
        except ValueError:
            declared = 0  # the server refuses a malformed Content-Length itself
        if declared > self.limit:
            await _refuse(send, self._too_large())
            return
        received = 0
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not refused:
                    refused = True
                    if not started:
                        await _refuse(send, self._too_large())
            if refused:
                return {"type": "http.disconnect"}  # the application stops reading
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # answered already: what the application says after is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted, guarded)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is over {self.limit} bytes: "
                             "a transition request is a small JSON object")


async def _refuse(send: Send, exc: ApiError) -> None:
    body = json.dumps({"error": exc.message}).encode()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
    metrics = _Metrics(index)
    bearer = HTTPBearer(auto_error=False, description="A token from REGISTRY_API_TOKENS (token=user pairs).")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {error.get('msg', 'invalid').removeprefix('Value error, ')}")
        return _error(422, "; ".join(parts) or "invalid request body")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RegistryError)
    async def registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        # Inputs were checked before: a usage error left is a bad parameter; anything else is
        # the served registry's content (a located ValidationError) or its git.
        from registry.queries.manifest import NothingServed

        status = 404 if isinstance(exc, NothingServed) else 400 if isinstance(exc, UsageError) else 500
        return _error(status, str(exc))

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
             **_read(list[ModelSummary], 400))
    def list_models(stage: StageQuery = None, tag: TagQuery = None, if_none_match: IfNoneMatch = None) -> Response:
        if stage is not None and stage not in ALL_STAGES:
            raise ApiError(400, f"stage {stage!r}: use one of {', '.join(ALL_STAGES)}")
        from registry.queries.inventory import holds_stage, model_tags, parse_tag, tag_matches

        wanted_tag = _usage(parse_tag, tag) if tag is not None else None

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
        _usage(check_model_name, name)
        if version is not None:
            _usage(check_version, version)
        inventory = snap.inventory()
        if name not in inventory.known:
            raise ApiError(404, f"no model named {name!r} in this registry; see GET /api/v1/models")
        if version is not None and version not in inventory.versions[name]:
            raise ApiError(404, f"{name}@{version} is not registered; see GET /api/v1/models/{name} for its versions")

    @app.get("/api/v1/models/{name}", tags=["read"], summary="A model: model.yaml, stages, versions "
             "(registry show NAME --json)", **_read(ModelDetail, 400, 404))
    def show_model(name: NameParam, if_none_match: IfNoneMatch = None) -> Response:
        from registry.queries import inventory

        def produce(snap: Snapshot) -> Callable[[], bytes]:
            existing(snap, name)
            return lambda: snap.get(("model", name), lambda reg: to_json(inventory.show_model(reg, name)))

        return answer(if_none_match, produce)

    @app.get("/api/v1/models/{name}/versions/{version}", tags=["read"],
             summary="A version: card, stage, signature, history (registry show NAME@VERSION --json)",
             **_read(VersionDetail, 400, 404))
    def show_version(name: NameParam, version: VersionParam, if_none_match: IfNoneMatch = None) -> Response:
        from registry.queries import inventory

        def produce(snap: Snapshot) -> Callable[[], bytes]:
            existing(snap, name, version)
            return lambda: snap.get(("version", name, version),
                                    lambda reg: to_json(inventory.show_version(reg, name, version)))

        return answer(if_none_match, produce)

    @app.get("/api/v1/manifest", tags=["read"], summary="What serving needs for a stage (registry manifest --json)",
             **_read(Manifest, 400, 404))
    def manifest(stage: ManifestStage = "production", if_none_match: IfNoneMatch = None,
                 as_of: Annotated[str | None, Query(description=(
                     "What was served then (an RFC 3339 date-time, e.g. 2026-11-01T12:00:00Z): the manifest "
                     "of the last first-parent commit at or before it; 404 before the registry's history"),
                     json_schema_extra=_DATE_TIME)] = None) -> Response:
        if stage not in SERVABLE:
            raise ApiError(400, f"stage {stage!r}: a manifest is made for {', '.join(SERVABLE)} only")
        if as_of is not None:
            from registry.queries.manifest import parse_time

            if not re.fullmatch(_DATE_TIME["pattern"], as_of):
                raise ApiError(400, f"as_of {as_of!r}: use an RFC 3339 date-time, e.g. 2026-11-01T12:00:00Z")
            parse_time(as_of, "as_of")
        return answer(if_none_match, lambda snap: lambda: manifest_bytes(snap, stage, as_of))

    from registry.queries import audit

    actions = tuple(getattr(audit, "ACTIONS", ()))
    ActionQuery = Annotated[str | None, Query(description="Only entries of this action.",
                                              json_schema_extra={"enum": list(actions)})]

    @app.get("/api/v1/audit", tags=["read"], summary="The audit log, oldest first (registry log --json)",
             **_read(list[AuditEntry], 400))
    def audit_log(model: ModelQuery = None, since: SinceQuery = None, until: UntilQuery = None,
                  action: ActionQuery = None, if_none_match: IfNoneMatch = None) -> Response:
        name, version = _usage(parse_ref, model) if model is not None else (None, None)
        if since is not None:
            _usage(check_date, "since", since)
        if until is not None:
            _usage(check_date, "until", until)
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

    @app.get("/healthz", tags=["operations"], summary="Liveness and the served commit", **_read(Health))
    def healthz(if_none_match: IfNoneMatch = None) -> Response:
        ref = index.source.ref
        return answer(if_none_match, lambda snap: lambda: to_json(
            {"status": "ok", "registry_commit": snap.commit, "ref": ref}))

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format: requests, latencies, commit age, "
                                             "models per stage. Not cached: no ETag."}})
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=PROMETHEUS,
                        headers={"Cache-Control": "no-store"})

    def user_of(request: Request,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
        # _Guard authenticated the request before its body was read; `bearer` only documents it.
        user = request.scope.get(USER_KEY)
        if not isinstance(user, User):
            return authenticate(tokens, request.headers.get("authorization"))
        return user

    @app.post("/api/v1/models/{name}/versions/{version}/transitions", tags=["write"], status_code=201,
              summary="Propose a stage change: a pushed branch (and a pull request), never --ref",
              response_model=TransitionResult, responses=_errors(400, 401, 403, 404, 409, 413, 422, 500, 502))
    def transition(name: NameParam, version: VersionParam, body: TransitionRequest,
                   user: Annotated[User, Depends(user_of)]) -> TransitionResult:
        _usage(check_model_name, name)
        _usage(check_version, version)
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

    app.add_middleware(_Guard, tokens=tokens, writes=is_write)
    app.add_middleware(_Observe, metrics=metrics, index=index)  # outermost: refusals are counted too
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
