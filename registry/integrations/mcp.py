"""`registry mcp`: the registry as tools for AI agents, over MCP (stdio, the official `mcp` SDK).

Reads answer from the registry's work tree in the same JSON shapes as the CLI's
``--json``. The one write, ``promote_model``, only proposes: it commits the stage
change on a ``promote/...`` branch, pushes that branch to origin and switches the
work tree back, so nothing an agent does reaches main without a reviewer's merge.

Registry errors become MCP tool errors (``isError`` with the registry's one-line
message); the model reads them and can correct itself. Nothing here prints to
stdout: stdout is the protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import pydantic_core
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import (
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    RootModel,
    TypeAdapter,
)
from pydantic_core import core_schema

from registry.changes import promote
from registry.errors import RegistryError, UsageError
from registry.files.names import check_model_name, parse_ref
from registry.queries import audit, inventory
from registry.queries.shapes import (
    AuditLog,
    ModelDetail,
    ModelList,
    Proposal,
    ServableStage,
    ServingVersion,
    Shape,
    Stage,
    VersionDetail,
)
from registry.repo import git
from registry.repo.registry import Registry
from registry.version import __version__

PROPOSAL_MESSAGE = "opened for human review; nothing reaches main without a reviewer's merge"

ModelName = Annotated[str, Field(
    description="Model name: lowercase letters, digits and '-', e.g. credit-approval.", max_length=200)]
VersionText = Annotated[str, Field(
    description="Semantic version of a registered version, e.g. 1.2.0 or 1.3.0-rc.1.", max_length=200)]

INSTRUCTIONS = """\
A GitOps model registry: model cards and stage assignments live in git, and merging a
pull request into main is what promotes a model. Use list_models to see what exists,
get_model_info for a model's versions or one version's card, get_serving_version for
what a stage serves now, get_audit_log for who changed what and why. promote_model does
not promote anything by itself: it pushes a promotion branch for a human to review
and merge; tell the user the branch name it returns."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def answers(shape: type[Shape] | type[RootModel[Any]]) -> Callable[[F], F]:
    """The tool's output schema is the shape's (registry.queries.shapes): the SDK reads it from the
    return annotation, while the tool returns answer(...), the shape's own JSON."""
    def mark(tool: F) -> F:
        tool.__annotations__["return"] = shape
        return tool

    return mark


def one_of(*choices: type[Shape]) -> type[RootModel[Any]]:
    """A JSON object that is one of the shapes: its schema is theirs (anyOf), any object validates."""
    class Either:
        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
            return core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())

        @classmethod
        def __get_pydantic_json_schema__(cls, core: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
            either: Any = Union[choices]  # noqa: UP007
            return {"type": "object", **handler(TypeAdapter(either).core_schema)}

    class OneOf(RootModel[Either]):
        model_config = ConfigDict(title=" or ".join(choice.__name__ for choice in choices))

    return OneOf


def answer(data: Shape) -> CallToolResult:
    """The CLI's --json object as structured content, and the same JSON as text for other clients."""
    content = data.as_json()
    text = pydantic_core.to_json(content, fallback=str, indent=2).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)


def build_server(root: Path) -> MCPServer:
    """An MCP server whose tools work on the registry at root (any folder inside its work tree)."""
    Registry.find(root)  # refuse a wrong path now, with the CLI's message, not at the first call
    server = MCPServer(name="registry", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    # The SDK runs sync tools in worker threads; one at a time keeps a promotion's branch
    # switch from being seen by a concurrent read.
    lock = threading.Lock()

    def call(work: Callable[[Registry], T]) -> T:
        with lock:
            try:
                return work(Registry.find(root))
            except RegistryError as exc:
                raise ToolError(str(exc)) from None

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    @answers(ModelList)
    def list_models(
        stage: Annotated[Stage | None, Field(
            description="Only models with a version in this stage (development = registered, in no stage).")] = None,
        tag: Annotated[str | None, Field(
            description="Only models whose model.yaml tags contain KEY=VALUE, e.g. team=risk.")] = None,
    ) -> CallToolResult:
        """List the registry's models: each model's latest version and which version holds
        which stage (production, canary with its traffic share, staging, deprecated, archived).
        Same objects as `registry ls --json`."""
        def work(reg: Registry) -> ModelList:
            summaries = inventory.list_models(reg, stage=stage, tag=inventory.parse_tag(tag) if tag else None)
            return ModelList(tuple(summaries))

        return answer(call(work))

    @server.tool(annotations=read_only)
    @answers(one_of(ModelDetail, VersionDetail))
    def get_model_info(name: ModelName, version: Annotated[str | None, Field(
            description="A registered version, e.g. 1.2.0; omit for the model's overview.")] = None) -> CallToolResult:
        """Describe a model or one of its versions. Without version: description, owners, task,
        tags, stages and every version with its stage and metrics (`registry show NAME --json`).
        With version: that version's model card (metrics, artifacts with sha256, training,
        intended use, limitations...) plus its stage, signature status and recent history
        (`registry show NAME@VERSION --json`)."""
        def work(reg: Registry) -> ModelDetail | VersionDetail:
            if version is None:
                return inventory.show_model(reg, name)
            return inventory.show_version(reg, name, version)

        return answer(call(work))

    @server.tool(annotations=read_only)
    @answers(ServingVersion)
    def get_serving_version(
        name: ModelName,
        stage: Annotated[ServableStage, Field(description="The stage serving systems pull.")] = "production",
    ) -> CallToolResult:
        """Which version of a model a stage serves right now (the newest one for staging);
        version is null when no version holds the stage. For canary, traffic is its share
        of requests (0..1)."""
        def work(reg: Registry) -> ServingVersion:
            check_model_name(name)
            if not reg.has_model(name):
                raise UsageError(f"no model named {name!r} in this registry; see `registry ls`")
            held = reg.stages(name)
            traffic = held.canary.traffic if stage == "canary" and held.canary else None
            return ServingVersion(name, stage, reg.resolve(name, stage, at=None), traffic)

        return answer(call(work))

    @server.tool(annotations=read_only)
    @answers(AuditLog)
    def get_audit_log(
        name: Annotated[str | None, Field(
            description="Only this model (NAME) or version (NAME@VERSION); omit for every model.")] = None,
        since: Annotated[str | None, Field(
            description="Only changes on or after this date, YYYY-MM-DD.")] = None,
    ) -> CallToolResult:
        """The audit log, oldest first, derived from git history: registrations, promotions,
        rollbacks, deprecations and archivals, each with timestamp, model, version, from/to
        stage, who performed it, who approved it (the merge), the reason, the commit and the
        pull request number. Same objects as `registry log --json`."""
        def work(reg: Registry) -> AuditLog:
            model, version = parse_ref(name) if name else (None, None)
            return AuditLog(tuple(audit.log(reg, name=model, version=version, since=since)))

        return answer(call(work))

    @server.tool(annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True))
    @answers(Proposal)
    def promote_model(
        name: ModelName,
        version: VersionText,
        stage: Annotated[Stage, Field(description="The stage to move the version to.")],
        reason: Annotated[str, Field(
            description="Why, for the reviewer and the audit log, e.g. 'accuracy 0.93 vs 0.91 on hold-out'.",
            min_length=1, max_length=2000)],
        traffic: Annotated[float | None, Field(
            description="Canary only: share of traffic, between 0 and 1 (default 0.1).")] = None,
    ) -> CallToolResult:
        """Propose a stage change for human review; this does NOT change what is served.
        Checks the move against the registry's lifecycle, commits the edited stages.yaml on a
        new branch promote/NAME/VERSION-to-STAGE, pushes it to origin and returns the branch
        and commit. A reviewer merges it (or not); only the merge promotes. Refused when the
        registry's work tree has uncommitted changes or is not on an up-to-date main."""
        def work(reg: Registry) -> Proposal:
            return propose(reg, name, version, stage, reason, traffic=traffic)

        return answer(call(work))

    return server


def serve(root: Path) -> None:
    """Run the server on stdin/stdout until the client disconnects."""
    build_server(root).run("stdio")


def propose(
    reg: Registry, name: str, version: str, stage: str, reason: str, *, traffic: float | None = None
) -> Proposal:
    """promote() on a branch pushed to origin, from a clean, up-to-date base; the work tree ends where it began."""
    promote.plan(reg, name, version, stage, traffic=traffic)  # bad names and transitions, before any git
    base = clean_base(reg)
    try:
        done = promote.promote(reg, name, version, stage, reason, traffic=traffic, push=True)
    finally:
        if git.current_branch(reg.root) != base:
            git.switch(reg.root, base)
    assert done.branch is not None
    return Proposal(done.name, done.version, done.from_stage, done.to_stage, done.replaced, done.branch,
                    done.commit, done.stages, PROPOSAL_MESSAGE)


def clean_base(reg: Registry) -> str:
    """The branch a proposal starts from; refuses unless the work tree is clean, on it, and even with origin."""
    root = reg.root
    if "origin" not in git.remote_names(root):
        raise UsageError(f"{root} has no origin remote: a proposal is a branch pushed there for review; "
                         "add one with `git remote add origin URL`")
    base = _default_branch(reg)
    branch = git.current_branch(root)
    if branch != base:
        where = f"on branch {branch}" if branch else "on a detached HEAD"
        raise UsageError(f"the registry's work tree at {root} is {where}, not {base}; proposals start from {base}: "
                         f"run `git switch {base}` there first")
    dirty = git.dirty_paths(root)
    if dirty:
        raise UsageError(f"the registry's work tree at {root} has uncommitted changes ({', '.join(dirty[:3])}); "
                         "commit or stash them first")
    git.fetch_branch(root, base)
    upstream = git.rev_parse(f"refs/remotes/origin/{base}", root)
    if upstream is None:
        raise UsageError(f"origin has no branch {base}; push it first: `git push -u origin {base}`")
    ahead, behind = git.ahead_behind(root, base, f"refs/remotes/origin/{base}")
    if ahead:
        raise UsageError(f"{base} has {ahead} commit(s) not on origin/{base}; a proposal would carry them into "
                         f"review unseen: push them (`git push origin {base}`) or drop them first")
    if behind:
        raise UsageError(f"{base} is {behind} commit(s) behind origin/{base}; update it with "
                         "`git pull --ff-only` so the change is checked against the current stages")
    return base


def _default_branch(reg: Registry) -> str:
    """origin's HEAD branch where it is known, otherwise main."""
    return git.remote_default_branch(reg.root) or "main"
