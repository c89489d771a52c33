"""The JSON answers of `--json`, the REST API and the MCP tools: one frozen dataclass each, one schema.

Each answer is a dataclass whose fields are its JSON keys in order; `as_json()` makes the
object the CLI prints, the REST API and the MCP tools send. The REST API's OpenAPI schemas
and the MCP tools' output schemas are made from these classes by pydantic (attribute
docstrings become descriptions), so there is no second description of a shape to keep in
step. pydantic is not needed to use them: it is an extra of the API and MCP servers.

Fields whose metadata says OMIT_NONE leave their key out when they are None (the manifest's
canary `traffic`); stages are written by `Stages.as_dict()` (only the stages held). A shape
whose object is not its fields in order (VersionDetail: the card's own fields come first)
writes its own as_json() and says so in its schema (_adjust_schema).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from registry.errors import Problem
from registry.files.cards import Artifact
from registry.files.names import ALL_STAGES
from registry.files.stages import Stages

Stage = Literal["development", "staging", "canary", "production", "deprecated", "archived"]
ServableStage = Literal["production", "canary", "staging"]
ApprovalSource = Literal["review", "merge", "none"]
SERVABLE: tuple[str, ...] = ServableStage.__args__  # type: ignore[attr-defined]
assert set(Stage.__args__) == set(ALL_STAGES)  # type: ignore[attr-defined]

OMIT_NONE = {"omit_none": True}
# pydantic reads this from a plain dataclass: attribute docstrings become schema descriptions.
_DOCUMENTED = {"use_attribute_docstrings": True}


_PLAIN = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    """The JSON value of an answer, a Stages, a card Artifact, or containers of them."""
    # The common cases first, by exact type: a manifest of a thousand models is mostly these.
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {k: jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [jsonable(v) for v in value]
    if isinstance(value, Shape):
        return value.as_json()
    if isinstance(value, Stages | Artifact):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _fields_json(value: Any) -> dict[str, Any]:
    kind = type(value)
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple((f.name, bool(f.metadata.get("omit_none"))) for f in fields(value))
    out: dict[str, Any] = {}
    for name, omit_none in names:
        item = getattr(value, name)
        if item is None and omit_none:
            continue
        out[name] = jsonable(item)
    return out


class Shape:
    """A JSON answer: its dataclass fields, in order, are the object's keys."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _DOCUMENTED

    def as_json(self) -> dict[str, Any]:
        return _fields_json(self)

    @classmethod
    def __get_pydantic_json_schema__(cls, core: Any, handler: Any) -> Any:
        """pydantic's schema of the dataclass, where a key left out when None is not required."""
        ref = handler(core)
        schema = handler.resolve_ref_schema(ref)
        optional = {f.name for f in fields(cls) if f.metadata.get("omit_none")}  # type: ignore[arg-type]
        if optional:
            schema["required"] = [name for name in schema.get("required", ()) if name not in optional]
        cls._adjust_schema(schema, handler)
        return ref

    @classmethod
    def _adjust_schema(cls, schema: dict[str, Any], handler: Any) -> None:
        """Where as_json() is not the fields in order, the schema says what it is instead."""


# -- ls, show --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSummary(Shape):
    """One entry of `registry ls --json`."""

    name: str
    latest: str | None
    stages: Stages
    """models/NAME/stages.yaml: only the stages that are held appear."""


@dataclass(frozen=True)
class ModelList(Shape):
    """`registry ls --json` under "models" (MCP's list_models)."""

    models: tuple[ModelSummary, ...]


@dataclass(frozen=True)
class VersionBrief(Shape):
    version: str
    stage: Stage
    created: str | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class ModelDetail(Shape):
    """`registry show NAME --json`: model.yaml, stages and versions."""

    name: str
    description: str
    owners: tuple[str, ...]
    task: str | None
    tags: dict[str, Any]
    stages: Stages
    versions: tuple[VersionBrief, ...]
    past_sunset: tuple[tuple[str, str], ...]
    """Deprecated versions whose sunset date has passed: [version, sunset] pairs."""


@dataclass(frozen=True)
class SigningStatus(Shape):
    """Whether the version folder holds a signature.json, and what checking it said."""

    present: bool
    path: str | None
    status: str | None = None
    """verified by KEY, invalid: why, unverified: why, or unsigned."""
    key_id: str | None = None
    trusted_key: str | None = None
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditEntry(Shape):
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
    pr: int | None
    url: str | None = None
    approval_source: ApprovalSource = "none"
    """review: the forge's review records (git notes); merge: who merged; none."""
    self_approved: bool = False
    detail: str | None = None
    """policy events: what changed in registry.yaml, in words."""


@dataclass(frozen=True)
class AuditLog(Shape):
    """`registry log --json` (oldest first) under "entries" (MCP's get_audit_log)."""

    entries: tuple[AuditEntry, ...]


@dataclass(frozen=True)
class CardFields:
    """The fields every model card has (the card schema allows more); only for VersionDetail's schema."""

    name: str
    version: str
    description: str
    created: str
    framework: str
    task: str
    metrics: dict[str, float]
    artifacts: tuple[Artifact, ...]


@dataclass(frozen=True)
class VersionDetail(Shape):
    """`registry show NAME@VERSION --json`: the card's fields (any of the card schema's
    optional fields may appear too, `signature` being the model's I/O schema), its stage,
    the signature file's status and the last changes."""

    card: Mapping[str, Any]
    """Every field of the card, in the card's order: they are the object's first keys."""
    stage: Stage
    signing: SigningStatus
    history: tuple[AuditEntry, ...]
    deprecation: tuple[str | None, tuple[tuple[str, str], ...]] | None = None
    """Deprecated versions only: the keys sunset and past_sunset."""
    traffic: float | None = None
    """Canary versions only: the share of traffic."""

    def as_json(self) -> dict[str, Any]:
        out = dict(self.card)
        out["stage"] = self.stage
        if self.deprecation is not None:
            out["sunset"], out["past_sunset"] = self.deprecation[0], jsonable(self.deprecation[1])
        if self.traffic is not None:
            out["traffic"] = self.traffic
        out["signing"] = self.signing.as_json()
        out["history"] = jsonable(self.history)
        return out

    @property
    def past_sunset(self) -> tuple[tuple[str, str], ...]:
        return self.deprecation[1] if self.deprecation else ()

    @classmethod
    def _adjust_schema(cls, own: dict[str, Any], handler: Any) -> None:
        """The card's fields, then stage, sunset, past_sunset, traffic, signing, history."""
        from pydantic import TypeAdapter

        card = handler.resolve_ref_schema(handler(TypeAdapter(CardFields).core_schema))
        own_properties = own["properties"]
        sunset = {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "Deprecated versions only."}
        past = {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}],
                                           "minItems": 2, "maxItems": 2},
                "description": "Deprecated versions only: [version, sunset] when the sunset has passed."}
        own["properties"] = {**card["properties"], "stage": own_properties["stage"], "sunset": sunset,
                             "past_sunset": past, **{k: own_properties[k] for k in ("traffic", "signing", "history")}}
        own["required"] = [*card["required"], "stage", "signing", "history"]


# -- manifest ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestArtifact(Shape):
    path: str
    size: int
    sha256: str
    storage: Literal["dvc", "git"]
    url: str | None
    """Where the DVC remote keeps it (null for files kept in git)."""


@dataclass(frozen=True)
class ManifestModel(Shape):
    version: str
    traffic: float | None = field(metadata=OMIT_NONE)
    """Canary manifests only."""
    path: str
    artifacts: tuple[ManifestArtifact, ...]
    signature: str | None


@dataclass(frozen=True)
class Manifest(Shape):
    """`registry manifest --json`: what serving needs for one stage."""

    registry_commit: str
    stage: ServableStage
    generated_at: str
    models: dict[str, ManifestModel]


# -- validate, resolve, health, errors, proposals ------------------------------------------------


@dataclass(frozen=True)
class ProblemEntry(Shape):
    path: str
    line: int | None
    field: str | None
    message: str


@dataclass(frozen=True)
class ValidationReport(Shape):
    """`registry validate --json`."""

    valid: bool
    problems: tuple[ProblemEntry, ...]

    @classmethod
    def of(cls, problems: list[Problem]) -> ValidationReport:
        return cls(not problems, tuple(ProblemEntry(p.path, p.line, p.field, p.message) for p in problems))


@dataclass(frozen=True)
class ServingVersion(Shape):
    """Which version a stage serves (MCP's get_serving_version)."""

    name: str
    stage: ServableStage
    version: str | None
    """None when no version holds the stage."""
    traffic: float | None
    """Canary only: its share of requests (0..1)."""


@dataclass(frozen=True)
class Health(Shape):
    status: Literal["ok"]
    registry_commit: str
    ref: str


@dataclass(frozen=True)
class Error(Shape):
    """Every error answer (`--json` and REST)."""

    error: str
    """What is wrong and what to do, in one message."""


@dataclass(frozen=True)
class Proposal(Shape):
    """A promotion pushed as a branch for review (MCP's promote_model)."""

    name: str
    version: str
    from_stage: str
    to_stage: str
    replaced: str | None
    branch: str
    commit: str
    stages: Stages
    message: str


@dataclass(frozen=True)
class TransitionResult(Shape):
    """A stage change proposed over REST: a pushed branch (and a pull request)."""

    branch: str
    """The pushed branch; merging it is the promotion."""
    commit: str
    pull_request_url: str | None
    """Set when GITHUB_TOKEN and GITHUB_REPOSITORY are configured."""
    name: str
    version: str
    from_stage: Stage
    to_stage: Stage
    replaced: str | None
    """The production version moved aside, if any."""
