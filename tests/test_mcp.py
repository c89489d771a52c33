"""`registry mcp`: the SDK's own client talks to `python -m registry mcp` over stdio.

Every test spawns the real server on a real registry (git, DVC, a bare origin) and
checks what an agent would see: tool schemas, the CLI's JSON shapes, tool errors
carrying the registry's message, and that promote_model only pushes a branch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from registry.files.names import ALL_STAGES
from tests.conftest import Result, git, merge

NO_SDK = "the MCP SDK is an extra: pip install 'gitops-registry[mcp]'"
if importlib.util.find_spec("mcp") is not None:
    import anyio  # installed with the SDK
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.types import CallToolResult

TOOLS = {"list_models", "get_model_info", "get_serving_version", "get_audit_log", "promote_model"}
MODEL = "credit-approval"
PROPOSAL_MESSAGE = "opened for human review; nothing reaches main without a reviewer's merge"


@pytest.fixture
def served(registered: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Path:
    """credit-approval 1.0.0 in production (merged), 1.1.0 in development; main pushed to origin."""
    pytest.importorskip("mcp", reason=NO_SDK)
    for stage, pr in (("staging", 3), ("production", 4)):
        result = cli("promote", MODEL, "1.0.0", "--to", stage, "--reason", f"ready for {stage}", cwd=registered)
        assert result.code == 0, result.err
        merge(registered, f"promote/{MODEL}/1.0.0-to-{stage}", monkeypatch, pr=pr)
    git(registered, "push", "--quiet", "origin", "main")
    return registered


@asynccontextmanager
async def connect(registry: Path, log: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "registry", "mcp", "--registry", str(registry)],
        env=dict(os.environ), cwd=str(registry.parent),  # the server must use --registry, not its cwd
    )
    with log.open("a") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield client


def with_server(registry: Path, log: Path, session: Callable[[Client], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with connect(registry, log) as client:
            return await session(client)

    result = anyio.run(main)
    # Errors reach the agent as tool results; the server never crashes on them.
    assert "Traceback" not in log.read_text()
    return result


def call(registry: Path, log: Path, tool: str, **arguments: Any) -> CallToolResult:
    async def session(client: Client) -> CallToolResult:
        return await client.call_tool(tool, arguments)

    result: CallToolResult = with_server(registry, log, session)
    return result


def data(result: CallToolResult) -> Any:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    # The text content carries the same JSON, for clients that do not read structured content.
    text = result.content[0]
    assert text.type == "text" and json.loads(text.text) == result.structured_content
    return result.structured_content


def error(result: CallToolResult) -> str:
    assert result.is_error
    text = result.content[0]
    assert text.type == "text"
    assert "Traceback" not in text.text
    return text.text


def cli_json(cli: Callable[..., Result], registry: Path, *args: str) -> Any:
    result = cli(*args, "--json", cwd=registry)
    assert result.code == 0, result.err
    return json.loads(result.out)


def rev(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref).strip()


def origin_branches(origin: Path) -> list[str]:
    return git(origin, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """The server's stderr; every test that talks to the server uses it, so it also skips without the SDK."""
    pytest.importorskip("mcp", reason=NO_SDK)
    path = tmp_path / "server.log"
    path.touch()
    return path


def test_tools_have_typed_schemas_and_descriptions(served: Path, log: Path) -> None:
    async def session(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in with_server(served, log, session)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and len(tool.description) > 60, tool.name
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", tool.name
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name}"

    promote = tools["promote_model"]
    assert set(promote.input_schema["required"]) == {"name", "version", "stage", "reason"}
    props = promote.input_schema["properties"]
    assert props["name"]["type"] == props["version"]["type"] == props["reason"]["type"] == "string"
    assert set(props["stage"]["enum"]) == set(ALL_STAGES)
    assert "review" in (promote.description or "") and "NOT" in (promote.description or "")
    assert promote.annotations is not None and promote.annotations.read_only_hint is False
    assert set(promote.output_schema["required"]) >= {"branch", "commit", "message"}  # type: ignore[index]

    serving = tools["get_serving_version"].input_schema
    assert serving["required"] == ["name"]
    assert serving["properties"]["stage"]["default"] == "production"
    assert set(serving["properties"]["stage"]["enum"]) == {"production", "canary", "staging"}

    assert "required" not in tools["list_models"].input_schema
    assert set(tools["list_models"].input_schema["properties"]) == {"stage", "tag"}
    assert tools["get_model_info"].input_schema["required"] == ["name"]
    assert "required" not in tools["get_audit_log"].input_schema
    assert set(tools["get_audit_log"].input_schema["properties"]) == {"name", "since"}
    for name in TOOLS - {"promote_model"}:
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True, name


def test_list_models_is_ls_json(served: Path, log: Path, cli: Callable[..., Result]) -> None:
    async def session(client: Client) -> list[CallToolResult]:
        return [await client.call_tool("list_models", {}),
                await client.call_tool("list_models", {"stage": "production"}),
                await client.call_tool("list_models", {"stage": "canary"}),
                await client.call_tool("list_models", {"tag": "team=nobody"}),
                await client.call_tool("list_models", {"tag": "no-equals-sign"}),
                await client.call_tool("list_models", {"stage": "prod"})]

    everything, production, canary, tagged, bad_tag, bad_stage = with_server(served, log, session)
    assert data(everything) == {"models": cli_json(cli, served, "ls")}
    assert data(everything)["models"] == [
        {"name": MODEL, "latest": "1.1.0", "stages": {"production": "1.0.0"}}]
    assert data(production) == data(everything)
    assert data(canary) == {"models": []}
    assert data(tagged) == {"models": []}
    assert "use KEY=VALUE" in error(bad_tag)
    assert "stage" in error(bad_stage)


def test_get_model_info_is_show_json(served: Path, log: Path, cli: Callable[..., Result]) -> None:
    async def session(client: Client) -> list[CallToolResult]:
        return [await client.call_tool("get_model_info", {"name": MODEL}),
                await client.call_tool("get_model_info", {"name": MODEL, "version": "1.0.0"})]

    overview, version = with_server(served, log, session)
    assert data(overview) == cli_json(cli, served, "show", MODEL)
    assert [v["version"] for v in data(overview)["versions"]] == ["1.0.0", "1.1.0"]
    card = data(version)
    assert card == cli_json(cli, served, "show", f"{MODEL}@1.0.0")
    assert card["stage"] == "production" and card["metrics"] == {"accuracy": 0.93, "f1": 0.91}
    assert {a["path"] for a in card["artifacts"]} == {"model.safetensors", "config.json"}


def test_get_serving_version(served: Path, log: Path) -> None:
    async def session(client: Client) -> list[CallToolResult]:
        return [await client.call_tool("get_serving_version", {"name": MODEL}),
                await client.call_tool("get_serving_version", {"name": MODEL, "stage": "staging"}),
                await client.call_tool("get_serving_version", {"name": MODEL, "stage": "archived"})]

    production, staging, archived = with_server(served, log, session)
    assert data(production) == {"name": MODEL, "stage": "production", "version": "1.0.0", "traffic": None}
    assert data(staging) == {"name": MODEL, "stage": "staging", "version": None, "traffic": None}
    assert "stage" in error(archived)  # only the stages serving pulls


def test_get_serving_version_of_a_canary(served: Path, log: Path, cli: Callable[..., Result],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for stage, args, pr in (("staging", (), 5), ("canary", ("--traffic", "0.25"), 6)):
        result = cli("promote", MODEL, "1.1.0", "--to", stage, "--reason", "try it", *args, cwd=served)
        assert result.code == 0, result.err
        merge(served, f"promote/{MODEL}/1.1.0-to-{stage}", monkeypatch, pr=pr)
    result = call(served, log, "get_serving_version", name=MODEL, stage="canary")
    assert data(result) == {"name": MODEL, "stage": "canary", "version": "1.1.0", "traffic": 0.25}


def test_get_audit_log_is_log_json(served: Path, log: Path, cli: Callable[..., Result]) -> None:
    async def session(client: Client) -> list[CallToolResult]:
        return [await client.call_tool("get_audit_log", {}),
                await client.call_tool("get_audit_log", {"name": f"{MODEL}@1.0.0"}),
                await client.call_tool("get_audit_log", {"since": "2999-01-01"}),
                await client.call_tool("get_audit_log", {"since": "last week"})]

    everything, one_version, future, bad_since = with_server(served, log, session)
    entries = data(everything)["entries"]
    assert entries == cli_json(cli, served, "log")
    assert [(e["action"], e["version"], e["to_stage"]) for e in entries] == [
        ("registered", "1.0.0", "development"), ("registered", "1.1.0", "development"),
        ("promoted", "1.0.0", "staging"), ("promoted", "1.0.0", "production")]
    assert entries[-1]["reason"] == "ready for production"
    assert entries[-1]["approved_by"] == "Rita Reviewer <rita@example.com>"
    assert entries[-1]["pr"] == 4
    assert data(one_version)["entries"] == cli_json(cli, served, "log", f"{MODEL}@1.0.0")
    assert [e["version"] for e in data(one_version)["entries"]] == ["1.0.0"] * 3
    assert data(future) == {"entries": []}
    assert "use an ISO date, YYYY-MM-DD" in error(bad_since)


def test_unknown_model_is_a_tool_error(served: Path, log: Path) -> None:
    async def session(client: Client) -> list[CallToolResult]:
        return [await client.call_tool("get_model_info", {"name": "fraud-detector"}),
                await client.call_tool("get_model_info", {"name": MODEL, "version": "9.9.9"}),
                await client.call_tool("get_serving_version", {"name": "fraud-detector"}),
                await client.call_tool("get_audit_log", {"name": "fraud-detector"}),
                await client.call_tool("promote_model", {"name": "fraud-detector", "version": "1.0.0",
                                                         "stage": "staging", "reason": "try"})]

    info, version, serving, audit, promote = with_server(served, log, session)
    assert "no model named 'fraud-detector' in this registry; see `registry ls`" in error(info)
    assert f"{MODEL}@9.9.9 is not registered" in error(version)
    assert "no model named 'fraud-detector'" in error(serving)
    assert data(audit) == {"entries": []}  # a log filter, like `registry log fraud-detector`
    assert "no model named 'fraud-detector'" in error(promote)


@pytest.mark.parametrize(("tool", "arguments", "expected"), [
    ("get_model_info", {"name": "../../etc"}, "invalid model name '../../etc'"),
    ("get_model_info", {"name": "Credit Approval"}, "invalid model name 'Credit Approval'"),
    ("get_model_info", {"name": "credit‐approval"}, "U+2010, not an ASCII character"),
    ("get_model_info", {"name": MODEL, "version": "1.0"}, "invalid version '1.0'"),
    ("get_audit_log", {"name": f"{MODEL}@latest"}, "invalid version 'latest'"),
    ("get_serving_version", {"name": "a/b"}, "invalid model name 'a/b'"),
    ("promote_model", {"name": MODEL, "version": "../1.0.0", "stage": "staging", "reason": "x"},
     "invalid version '../1.0.0'"),
    ("promote_model", {"name": MODEL, "version": "1.1.0", "stage": "staging", "reason": "   "},
     "--reason is required"),
    ("promote_model", {"name": MODEL, "version": "1.1.0", "stage": "prod", "reason": "x"}, "stage"),
    ("promote_model", {"name": MODEL, "version": "1.1.0", "stage": "staging"}, "reason"),
])
def test_bad_arguments_are_tool_errors(served: Path, log: Path, tool: str, arguments: dict[str, Any],
                                       expected: str) -> None:
    before = rev(served, "main")
    assert expected in error(call(served, log, tool, **arguments))
    assert rev(served, "main") == before
    assert origin_branches(served.parent / "origin.git") == ["main"]


def test_invalid_transition_is_refused_and_nothing_moves(served: Path, log: Path) -> None:
    origin = served.parent / "origin.git"
    before = (rev(served, "main"), rev(origin, "main"), git(served, "branch", "--list"))
    result = call(served, log, "promote_model", name=MODEL, version="1.1.0", stage="production",
                  reason="skip the queue")
    assert ("credit-approval@1.1.0 is in development; development → production is not allowed by "
            "registry.yaml (lifecycle.transitions: from development to staging, archived)") in error(result)
    assert (rev(served, "main"), rev(origin, "main"), git(served, "branch", "--list")) == before
    assert origin_branches(origin) == ["main"]


def test_promote_model_pushes_a_branch_and_leaves_main_alone(served: Path, log: Path) -> None:
    origin = served.parent / "origin.git"
    stages_file = served / "models" / MODEL / "stages.yaml"
    main_before, origin_before, stages_before = rev(served, "main"), rev(origin, "main"), stages_file.read_text()

    async def session(client: Client) -> list[CallToolResult]:
        proposal = await client.call_tool("promote_model", {
            "name": MODEL, "version": "1.1.0", "stage": "staging", "reason": "accuracy 0.95 on hold-out"})
        # The server keeps answering from main: the proposal is not served.
        serving = await client.call_tool("get_serving_version", {"name": MODEL, "stage": "staging"})
        again = await client.call_tool("promote_model", {
            "name": MODEL, "version": "1.1.0", "stage": "staging", "reason": "once more"})
        return [proposal, serving, again]

    proposal, serving, again = with_server(served, log, session)
    out = data(proposal)
    branch = f"promote/{MODEL}/1.1.0-to-staging"
    assert out["branch"] == branch
    assert out["message"] == PROPOSAL_MESSAGE
    assert (out["from_stage"], out["to_stage"], out["replaced"]) == ("development", "staging", None)
    assert out["stages"] == {"production": "1.0.0", "staging": ["1.1.0"]}
    assert data(serving)["version"] is None
    assert f"branch {branch} already exists" in error(again)

    assert rev(served, "main") == main_before
    assert rev(origin, "main") == origin_before
    assert rev(origin, branch) == out["commit"]
    assert rev(origin, f"{branch}~1") == main_before  # one commit on top of main, nothing else
    assert git(origin, "diff", "--name-only", "main", branch).split() == [f"models/{MODEL}/stages.yaml"]
    assert "Reason: accuracy 0.95 on hold-out" in git(origin, "log", "-1", "--format=%B", branch)
    # The work tree is back where it was: on main, clean, stages unchanged.
    assert git(served, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(served, "status", "--porcelain", "--untracked-files=no") == ""
    assert stages_file.read_text() == stages_before


def test_promote_model_refuses_a_dirty_work_tree(served: Path, log: Path) -> None:
    origin = served.parent / "origin.git"
    model_file = served / "models" / MODEL / "model.yaml"
    model_file.write_text(model_file.read_text() + "# local edit\n")
    before = (rev(served, "main"), rev(origin, "main"), git(served, "branch", "--list"), model_file.read_text())
    result = call(served, log, "promote_model", name=MODEL, version="1.1.0", stage="staging", reason="ok")
    assert f"has uncommitted changes (models/{MODEL}/model.yaml); commit or stash them first" in error(result)
    assert (rev(served, "main"), rev(origin, "main"), git(served, "branch", "--list"),
            model_file.read_text()) == before
    assert origin_branches(origin) == ["main"]


@pytest.mark.parametrize(("setup", "expected"), [
    (lambda reg: git(reg, "switch", "--quiet", "-c", "experiment"),
     "is on branch experiment, not main; proposals start from main: run `git switch main` there first"),
    (lambda reg: git(reg, "switch", "--quiet", "--detach"), "is on a detached HEAD, not main"),
    (lambda reg: git(reg, "commit", "--quiet", "--allow-empty", "-m", "local only"),
     "main has 1 commit(s) not on origin/main"),
    (lambda reg: git(reg, "remote", "remove", "origin"), "has no origin remote"),
])
def test_promote_model_refuses_an_unclean_base(served: Path, log: Path, setup: Callable[[Path], object],
                                               expected: str) -> None:
    origin = served.parent / "origin.git"
    setup(served)
    before = (rev(served, "HEAD"), rev(origin, "main"), git(served, "branch", "--list"))
    result = call(served, log, "promote_model", name=MODEL, version="1.1.0", stage="staging", reason="ok")
    assert expected in error(result)
    assert (rev(served, "HEAD"), rev(origin, "main"), git(served, "branch", "--list")) == before
    assert origin_branches(origin) == ["main"]


def test_promote_model_refuses_a_main_behind_origin(served: Path, log: Path, tmp_path: Path) -> None:
    origin = served.parent / "origin.git"
    other = tmp_path / "other"
    git(tmp_path, "clone", "--quiet", str(origin), str(other))
    git(other, "commit", "--quiet", "--allow-empty", "-m", "merged elsewhere")
    git(other, "push", "--quiet", "origin", "main")
    result = call(served, log, "promote_model", name=MODEL, version="1.1.0", stage="staging", reason="ok")
    assert "main is 1 commit(s) behind origin/main; update it with `git pull --ff-only`" in error(result)
    assert origin_branches(origin) == ["main"]


def test_server_refuses_a_folder_that_is_not_a_registry(tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason=NO_SDK)
    proc = subprocess.run([sys.executable, "-m", "registry", "mcp", "--registry", str(tmp_path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"error: {tmp_path}: not a registry" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_the_sdk_the_command_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys\nsys.modules['mcp'] = None  # as if the extra were not installed\n"
            "from registry.cli.main import main\nmain(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", code, "mcp", "--registry", str(tmp_path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == ("error: `registry mcp` needs the MCP SDK (mcp is not installed): "
                           "pip install 'gitops-registry[mcp]'\n")
