"""One JSON shape per answer: the CLI's --json, the REST API, the MCP tools and the Python API
give the same objects on one registry, and their schemas are the shapes' (registry.queries.shapes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from registry.queries import shapes
from tests.conftest import Result, merge

MODEL = "credit-approval"


@pytest.fixture
def staged(registered: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Path:
    """credit-approval 1.0.0 in production, 1.1.0 a 25% canary, all merged into main."""
    for version, stage, extra in (("1.0.0", "staging", ()), ("1.0.0", "production", ()),
                                  ("1.1.0", "staging", ()), ("1.1.0", "canary", ("--traffic", "0.25"))):
        result = cli("promote", MODEL, version, "--to", stage, "--reason", f"to {stage}", *extra, cwd=registered)
        assert result.code == 0, result.err
        merge(registered, f"promote/{MODEL}/{version}-to-{stage}", monkeypatch)
    return registered


def cli_json(cli: Callable[..., Result], registry: Path, *args: str) -> Any:
    result = cli(*args, "--json", cwd=registry)
    assert result.code == 0, result.err
    return json.loads(result.out)


def rest_json(registry: Path, cache: Path, *paths: str) -> list[Any]:
    from fastapi.testclient import TestClient

    from registry.integrations.restapi import app as restapi

    index, proposer, tokens = restapi.build(None, "main", 3600, cache, start=registry)
    client = TestClient(restapi.create_app(index, proposer, tokens))
    answers = []
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def mcp_json(registry: Path, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    pytest.importorskip("mcp", reason="the MCP SDK is an extra: pip install 'gitops-registry[mcp]'")
    import anyio
    from mcp import Client

    from registry.integrations import mcp

    async def session() -> list[Any]:
        out = []
        async with Client(mcp.build_server(registry)) as client:
            for tool, arguments in calls:
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content
                text = result.content[0]
                assert text.type == "text" and json.loads(text.text) == result.structured_content
                out.append(result.structured_content)
        return out

    answers: list[Any] = anyio.run(session)
    return answers


def without_time(manifest: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(manifest.pop("generated_at"), str)
    return manifest


def test_ls_show_and_manifest_are_one_shape_everywhere(staged: Path, cli: Callable[..., Result],
                                                         tmp_path: Path) -> None:
    import registry

    ls = cli_json(cli, staged, "ls")
    show = cli_json(cli, staged, "show", MODEL)
    card = cli_json(cli, staged, "show", f"{MODEL}@1.1.0")
    manifests = {stage: without_time(cli_json(cli, staged, "manifest", "--stage", stage))
                 for stage in ("production", "canary")}
    assert ls == [{"name": MODEL, "latest": "1.1.0",
                   "stages": {"production": "1.0.0", "canary": {"version": "1.1.0", "traffic": 0.25}}}]
    assert manifests["canary"]["models"][MODEL]["traffic"] == 0.25
    assert "traffic" not in manifests["production"]["models"][MODEL]  # canary manifests only
    assert card["stage"] == "canary" and card["traffic"] == 0.25

    rest_ls, rest_show, rest_card, rest_production, rest_canary = rest_json(
        staged, tmp_path / "cache", "/api/v1/models", f"/api/v1/models/{MODEL}",
        f"/api/v1/models/{MODEL}/versions/1.1.0", "/api/v1/manifest", "/api/v1/manifest?stage=canary")
    assert rest_ls == ls
    assert rest_show == show
    assert rest_card == card
    assert without_time(rest_production) == manifests["production"]
    assert without_time(rest_canary) == manifests["canary"]

    mcp_ls, mcp_show, mcp_card = mcp_json(staged, ("list_models", {}), ("get_model_info", {"name": MODEL}),
                                          ("get_model_info", {"name": MODEL, "version": "1.1.0"}))
    assert mcp_ls == {"models": ls}
    assert mcp_show == show
    assert mcp_card == card

    api = registry.open(staged)
    assert [s.as_json() for s in api.models()] == ls
    assert without_time(api.manifest("canary")) == manifests["canary"]  # MCP has no manifest tool


def test_rest_and_mcp_schemas_are_the_shapes() -> None:
    pytest.importorskip("mcp", reason="the MCP SDK is an extra")
    from pydantic import TypeAdapter

    from registry.integrations import mcp
    from registry.integrations.restapi import app as restapi
    from registry.integrations.restapi import schemas

    shape_names = {name for name, value in vars(shapes).items()
                   if isinstance(value, type) and issubclass(value, shapes.Shape) and value is not shapes.Shape}
    for module in (schemas, restapi, mcp):  # a name of a shape there is the shape, not a retyped copy
        for name in shape_names & set(vars(module)):
            assert vars(module)[name] is getattr(shapes, name), (module.__name__, name)
    for shape in (shapes.Manifest, shapes.VersionDetail, shapes.ModelDetail, shapes.ModelList, shapes.AuditLog):
        schema = TypeAdapter(shape).json_schema(mode="serialization")
        assert schema["type"] == "object", shape
    manifest_model = TypeAdapter(shapes.Manifest).json_schema()["$defs"]["ManifestModel"]
    assert "traffic" in manifest_model["properties"] and "traffic" not in manifest_model["required"]
    either = mcp.one_of(shapes.ModelDetail, shapes.VersionDetail).model_json_schema()  # get_model_info's
    assert either["type"] == "object" and either["anyOf"] == [{"$ref": "#/$defs/ModelDetail"},
                                                              {"$ref": "#/$defs/VersionDetail"}]
    detail = TypeAdapter(shapes.VersionDetail).json_schema()
    assert {"card", "deprecation"}.isdisjoint(detail["properties"])
    assert {"name", "version", "metrics", "artifacts", "stage", "sunset", "traffic", "signing",
            "history"} <= set(detail["properties"])
