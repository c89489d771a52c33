"""The REST API's parameters, request body and response documentation.

The answers' schemas are registry.queries.shapes' dataclasses (the CLI's --json objects):
FastAPI documents them from the classes, nothing here describes a shape again. What is
left is the REST side's own: path and query parameters (with the patterns and choices the
CLI accepts), the transition request, and the errors each operation may answer with.
"""

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Self

from fastapi import Header, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.errors import UsageError
from registry.files.names import ALL_STAGES, MODEL_NAME_RE, SEMVER_RE
from registry.files.safetext import CONTROL_CLASS, first_control, printable
from registry.queries.shapes import SERVABLE, Error, Stage

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
MAX_BODY = 64 * 1024  # a transition request is a small JSON object


# -- Parameters: documented with the patterns and choices the CLI accepts; checked by the
# CLI's own functions, so that a malformed one is a 400 with the CLI's message.

_NAME = f"^{MODEL_NAME_RE.pattern}$"
_SEMVER = SEMVER_RE.pattern.replace(r"\d", "[0-9]")  # JSON Schema's \d is not ASCII-only
_DATE = {"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"}
DATE_TIME = {"pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})$",
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


# -- The transition request (a write's body) --------------------------------------------------


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


# -- Errors and the documentation of answers ----------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers) if headers else None)


def errors_doc(*codes: int) -> dict[int | str, dict[str, Any]]:
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


def read_doc(model: Any, *errors: int) -> dict[str, Any]:
    return {"response_model": model, "responses": {
        200: {"headers": _ETAG_HEADERS}, **_NOT_MODIFIED, **errors_doc(*errors, 500, 503)}}


def usage(func: Callable[..., Any], *args: Any) -> Any:
    try:
        return func(*args)
    except UsageError as exc:
        raise ApiError(400, str(exc)) from None
