"""`registry api`: every endpoint against the CLI's --json on the same registry, ETags,
refreshes, tokens and roles, proposals pushed as branches (never to main), errors as JSON,
and a bounded property-based run of the OpenAPI document (schemathesis)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from registry.errors import GitError, UsageError
from registry.integrations.restapi import app as restapi
from registry.integrations.restapi.index import ReadIndex
from registry.integrations.restapi.write import GitHub, parse_tokens
from tests.conftest import CARD, Result, git, isolate, merge, new_weights

TOKENS = "t-ada=ada,t-dana=dana,t-olga=olga,t-vic=vic"
ADMIN = {"Authorization": "Bearer t-ada"}          # registry.yaml roles.admin
SCIENTIST = {"Authorization": "Bearer t-dana"}     # roles.data-scientist
OWNER = {"Authorization": "Bearer t-olga"}         # owner of credit-approval, no role
VIEWER = {"Authorization": "Bearer t-vic"}         # roles.viewer
TRANSITIONS = "/api/v1/models/{}/versions/{}/transitions"


@dataclass
class Served:
    repo: Path      # the registry clone the CLI runs in (main == origin's main)
    origin: Path    # the bare origin the server clones and pushes to
    index: ReadIndex
    client: TestClient
    app: Any


def _commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)


def _edit_yaml(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(path.read_text()) or {}
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _server(origin: Path | None, cache: Path, *, start: Path | None = None, refresh: float = 3600) -> tuple[ReadIndex, Any]:
    index, proposer, tokens = restapi.build(str(origin) if origin else None, "main", refresh, cache, start=start)
    return index, restapi.create_app(index, proposer, tokens)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per module (registering runs DVC, about a second a version), copied for each test.

    credit-approval: 1.0.0 production, 1.1.0 staging (registered through merged pull
    requests), owner @olga, tag team=risk; fraud-detector: 1.0.0 in development, tag
    team=payments; roles admin @ada, data-scientist @dana, viewer @vic; pushed to a bare origin.
    """
    from safetensors.numpy import save_file

    from registry import api

    root = tmp_path_factory.mktemp("restapi-template")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, root / "home")
        origin = root / "origin.git"
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        reg = api.init(root / "reg", dvc_remote=str(root / "dvc-remote"))
        git(reg.root, "remote", "add", "origin", str(origin))
        inputs = root / "inputs"
        inputs.mkdir()
        (inputs / "card.yaml").write_text(CARD)
        (inputs / "config.json").write_text('{"threshold": 0.5}\n')
        rng = np.random.default_rng(0)
        save_file({"weight": rng.random((8, 2), dtype=np.float32)}, str(inputs / "model.safetensors"))
        reg.register("credit-approval", "1.0.0", inputs / "card.yaml",
                     [inputs / "model.safetensors", inputs / "config.json"])
        merge(reg.root, "register/credit-approval/1.0.0", monkeypatch, pr=1)
        new_weights(inputs, seed=1)
        reg.register("credit-approval", "1.1.0", inputs / "card.yaml", [inputs / "model.safetensors"])
        merge(reg.root, "register/credit-approval/1.1.0", monkeypatch, pr=2)
        for version, stage in [("1.0.0", "staging"), ("1.0.0", "production"), ("1.1.0", "staging")]:
            reg.promote("credit-approval", version, stage, f"to {stage}", no_branch=True)
        reg.register("fraud-detector", "1.0.0", inputs / "card.yaml", [inputs / "config.json"], no_branch=True)

        def roles(data: dict[str, Any]) -> None:
            data["roles"] = {"admin": ["@ada"], "data-scientist": ["@dana", "@org/scientists"],
                             "developer": [], "viewer": ["@vic"]}

        _edit_yaml(reg.root / "registry.yaml", roles)
        _edit_yaml(reg.root / "models/credit-approval/model.yaml",
                   lambda d: d.update(owners=["@olga"], tags={"team": "risk"}))
        _edit_yaml(reg.root / "models/fraud-detector/model.yaml", lambda d: d.update(tags={"team": "payments"}))
        _commit_all(reg.root, "Roles, owners and tags")
        git(reg.root, "push", "--quiet", "-u", "origin", "main")
    return root


@pytest.fixture
def served(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Served:
    """A copy of the template registry and its origin, served from the origin, as deployed."""
    root = tmp_path / "t"
    shutil.copytree(template, root, symlinks=True, ignore=shutil.ignore_patterns("home"))
    repo, origin = root / "reg", root / "origin.git"
    git(repo, "remote", "set-url", "origin", str(origin))
    monkeypatch.setenv("REGISTRY_API_TOKENS", TOKENS)
    index, app = _server(origin, tmp_path / "cache")
    return Served(repo, origin, index, TestClient(app), app)


def _cli_json(cli: Callable[..., Result], repo: Path, *args: str) -> Any:
    result = cli(*args, "--json", cwd=repo)
    assert result.code == 0, result.err
    return json.loads(result.out)


def _get(served: Served, url: str, status: int = 200, **headers: str) -> Any:
    response = served.client.get(url, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# -- Reads: the CLI's JSON ---------------------------------------------------------------------


def test_models_list_is_ls_json(served: Served, cli: Callable[..., Result]) -> None:
    assert _get(served, "/api/v1/models") == _cli_json(cli, served.repo, "ls")
    for query, args in [("stage=production", ("--stage", "production")), ("stage=staging", ("--stage", "staging")),
                        ("stage=development", ("--stage", "development")), ("tag=team=risk", ("--tag", "team=risk")),
                        ("stage=canary", ("--stage", "canary")),
                        ("stage=staging&tag=team=payments", ("--stage", "staging", "--tag", "team=payments"))]:
        assert _get(served, f"/api/v1/models?{query}") == _cli_json(cli, served.repo, "ls", *args), query
    # The filters do filter: one model each, or none.
    assert [m["name"] for m in _get(served, "/api/v1/models?stage=development")] == ["fraud-detector"]
    assert [m["name"] for m in _get(served, "/api/v1/models?tag=team=risk")] == ["credit-approval"]
    assert _get(served, "/api/v1/models?stage=canary") == []


def test_model_and_version_are_show_json(served: Served, cli: Callable[..., Result]) -> None:
    model = _get(served, "/api/v1/models/credit-approval")
    assert model == _cli_json(cli, served.repo, "show", "credit-approval")
    assert model["owners"] == ["@olga"] and [v["version"] for v in model["versions"]] == ["1.0.0", "1.1.0"]
    for version in ("1.0.0", "1.1.0"):
        shown = _get(served, f"/api/v1/models/credit-approval/versions/{version}")
        assert shown == _cli_json(cli, served.repo, "show", f"credit-approval@{version}")
    assert shown["stage"] == "staging" and shown["history"][-1]["to_stage"] == "staging"
    assert _get(served, "/api/v1/models/fraud-detector/versions/1.0.0")["stage"] == "development"


def test_manifest_is_manifest_json(served: Served, cli: Callable[..., Result]) -> None:
    for stage in ("production", "staging", "canary"):
        query = "" if stage == "production" else f"?stage={stage}"
        ours, theirs = _get(served, f"/api/v1/manifest{query}"), _cli_json(cli, served.repo, "manifest", "--stage", stage)
        assert ours.pop("generated_at") and theirs.pop("generated_at")
        assert ours == theirs
    assert ours["registry_commit"] == git(served.origin, "rev-parse", "main").strip()
    production = _get(served, "/api/v1/manifest")
    assert production["models"]["credit-approval"]["version"] == "1.0.0"


def test_audit_is_log_json(served: Served, cli: Callable[..., Result]) -> None:
    everything = _get(served, "/api/v1/audit")
    assert everything == _cli_json(cli, served.repo, "log")
    assert {e["model"] for e in everything if e["action"] != "policy"} == {"credit-approval", "fraud-detector"}
    assert _get(served, "/api/v1/audit?model=credit-approval") == _cli_json(cli, served.repo, "log", "credit-approval")
    assert (_get(served, "/api/v1/audit?model=credit-approval@1.0.0&since=2000-01-01")
            == _cli_json(cli, served.repo, "log", "credit-approval@1.0.0", "--since", "2000-01-01"))
    assert _get(served, "/api/v1/audit?since=2999-01-01") == [] == _cli_json(cli, served.repo, "log", "--since", "2999-01-01")
    promoted = _get(served, "/api/v1/audit?action=promoted")
    assert promoted == [e for e in everything if e["action"] == "promoted"] and len(promoted) == 3
    assert _get(served, "/api/v1/audit?model=no-such-model") == []  # as `registry log no-such-model`


def test_healthz_and_metrics(served: Served) -> None:
    head = git(served.origin, "rev-parse", "main").strip()
    assert _get(served, "/healthz") == {"status": "ok", "registry_commit": head, "ref": "main"}
    _get(served, "/api/v1/models/credit-approval")
    _get(served, "/api/v1/models/credit-approval")
    _get(served, "/api/v1/models/nope", 404)
    response = served.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "etag" not in response.headers  # counters change at the same commit: never a 304
    text = response.text
    assert 'registry_api_requests_total{method="GET",route="/api/v1/models/{name}",status="200"} 2.0' in text
    assert 'registry_api_requests_total{method="GET",route="/api/v1/models/{name}",status="404"} 1.0' in text
    assert 'registry_api_request_duration_seconds_count{method="GET",route="/api/v1/models/{name}"} 3.0' in text
    assert 'registry_models{stage="production"} 1.0' in text
    assert 'registry_models{stage="staging"} 1.0' in text
    assert 'registry_models{stage="development"} 1.0' in text
    assert 'registry_models{stage="canary"} 0.0' in text
    age = next(line for line in text.splitlines() if line.startswith("registry_commit_age_seconds "))
    assert 0 <= float(age.split()[1]) < 3600
    assert "registry_api_fetch_failures_total 0.0" in text


# -- ETags and refreshes ------------------------------------------------------------------------

READ_URLS = ["/api/v1/models", "/api/v1/models?stage=staging", "/api/v1/models/credit-approval",
             "/api/v1/models/credit-approval/versions/1.1.0", "/api/v1/manifest", "/api/v1/manifest?stage=staging",
             "/api/v1/audit", "/api/v1/audit?model=fraud-detector", "/healthz"]


def test_every_read_has_the_commit_as_etag_and_answers_304(served: Served) -> None:
    head = git(served.origin, "rev-parse", "main").strip()
    for url in READ_URLS:
        first = served.client.get(url)
        assert first.status_code == 200 and first.headers["etag"] == f'"{head}"', url
        for sent in (f'"{head}"', f'W/"{head}"', f'"0000", "{head}"', "*"):
            again = served.client.get(url, headers={"If-None-Match": sent})
            assert again.status_code == 304 and again.content == b"", (url, sent)
            assert again.headers["etag"] == f'"{head}"'
        other = served.client.get(url, headers={"If-None-Match": '"0000"'})
        assert other.status_code == 200 and other.json() == first.json()
    # A 304 is not given for what does not exist.
    assert served.client.get("/api/v1/models/nope", headers={"If-None-Match": "*"}).status_code == 404


def test_new_commit_on_origin_is_served_after_refresh(served: Served, cli: Callable[..., Result]) -> None:
    old = git(served.origin, "rev-parse", "main").strip()
    assert cli("promote", "fraud-detector", "1.0.0", "--to", "staging", "--reason", "ok", "--no-branch",
               cwd=served.repo).code == 0
    git(served.repo, "push", "--quiet", "origin", "main")
    new = git(served.origin, "rev-parse", "main").strip()
    assert served.client.get("/healthz").json()["registry_commit"] == old  # not fetched yet (--refresh 3600)
    assert served.index.refresh() is True
    assert served.index.refresh() is False  # nothing new: the index is not rebuilt
    response = served.client.get("/api/v1/models?stage=staging", headers={"If-None-Match": f'"{old}"'})
    assert response.status_code == 200 and response.headers["etag"] == f'"{new}"'
    assert response.json() == _cli_json(cli, served.repo, "ls", "--stage", "staging")
    assert [m["name"] for m in response.json()] == ["credit-approval", "fraud-detector"]
    assert _get(served, "/api/v1/audit") == _cli_json(cli, served.repo, "log")


def test_refresh_happens_on_demand_in_the_background(served: Served, tmp_path: Path,
                                                     cli: Callable[..., Result]) -> None:
    _, app = _server(served.origin, tmp_path / "cache-2", refresh=0)
    client = TestClient(app)
    assert cli("promote", "fraud-detector", "1.0.0", "--to", "staging", "--reason", "ok", "--no-branch",
               cwd=served.repo).code == 0
    git(served.repo, "push", "--quiet", "origin", "main")
    new = git(served.origin, "rev-parse", "main").strip()
    deadline = time.monotonic() + 20
    while client.get("/healthz").json()["registry_commit"] != new:
        assert time.monotonic() < deadline, "the new commit was never served"
        time.sleep(0.05)
    assert client.get("/api/v1/manifest?stage=staging").json()["registry_commit"] == new


def test_failed_fetch_keeps_serving_the_last_commit(served: Served, tmp_path: Path) -> None:
    head = git(served.origin, "rev-parse", "main").strip()
    served.origin.rename(tmp_path / "moved.git")
    with pytest.raises(GitError, match="cannot fetch --ref main"):
        served.index.refresh()
    assert _get(served, "/healthz")["registry_commit"] == head
    assert _get(served, "/api/v1/manifest")["models"]["credit-approval"]["version"] == "1.0.0"
    assert "registry_api_fetch_failures_total 1.0" in served.client.get("/metrics").text


def test_serving_a_local_registry_reads_committed_files_only(served: Served, tmp_path: Path,
                                                             cli: Callable[..., Result]) -> None:
    index, app = _server(None, tmp_path / "cache-local", start=served.repo / "models")
    client = TestClient(app)
    stages_file = served.repo / "models/credit-approval/stages.yaml"
    committed = stages_file.read_text()
    stages_file.write_text(committed.replace("production: 1.0.0\n", ""))  # uncommitted edit
    assert client.get("/api/v1/manifest").json()["models"]["credit-approval"]["version"] == "1.0.0"
    assert client.get("/api/v1/models?stage=production").json() != []
    assert _cli_json(cli, served.repo, "ls", "--stage", "production") == []  # the CLI reads the work tree
    _commit_all(served.repo, "Take credit-approval out of production")
    assert index.refresh() is True
    assert client.get("/api/v1/manifest").json()["models"] == {}
    assert client.get("/api/v1/audit").json() == _cli_json(cli, served.repo, "log")


# -- Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "status", "message"), [
    ("/api/v1/models/nope", 404, "no model named 'nope'"),
    ("/api/v1/models/credit-approval/versions/9.9.9", 404, "credit-approval@9.9.9 is not registered"),
    ("/api/v1/models/Credit", 400, "invalid model name 'Credit'"),
    ("/api/v1/models/credit-approval/versions/v1", 400, "v1"),
    ("/api/v1/models?stage=prod", 400, "stage 'prod': use one of"),
    ("/api/v1/models?tag=team", 400, "use KEY=VALUE"),
    ("/api/v1/manifest?stage=archived", 400, "a manifest is made for production, canary, staging only"),
    ("/api/v1/audit?since=2025-13-01", 400, "use an ISO date, YYYY-MM-DD"),
    ("/api/v1/audit?since=20250101", 400, "use an ISO date, YYYY-MM-DD"),
    ("/api/v1/audit?action=moved", 400, "action 'moved': use one of"),
    ("/api/v1/audit?model=Bad@1.0.0", 400, "invalid model name 'Bad'"),
    ("/api/v1/audit?model=", 400, "invalid model name ''"),
    ("/api/v1/models?tag=", 400, "use KEY=VALUE"),
    ("/api/v1/nothing-here", 404, "Not Found"),
])
def test_read_errors_are_json(served: Served, url: str, status: int, message: str) -> None:
    body = _get(served, url, status)
    assert list(body) == ["error"] and message in body["error"]


def test_wrong_method_is_json(served: Served) -> None:
    response = served.client.delete("/api/v1/models")
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}


def test_invalid_registry_content_is_a_located_500(served: Served, tmp_path: Path) -> None:
    stages_file = served.repo / "models/credit-approval/stages.yaml"
    stages_file.write_text(stages_file.read_text().replace("production: 1.0.0", "production: 7.0.0"))
    _commit_all(served.repo, "A stage naming an unregistered version")
    git(served.repo, "push", "--quiet", "origin", "main")
    served.index.refresh()
    body = _get(served, "/api/v1/manifest", 500)
    assert body["error"].startswith("models/credit-approval/stages.yaml") and "7.0.0" in body["error"]
    assert _get(served, "/healthz")["status"] == "ok"


# -- Writes: proposals ----------------------------------------------------------------------------


def _propose(served: Served, name: str, version: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return served.client.post(TRANSITIONS.format(name, version), json=body, headers=headers)


def _refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split() for line in out.splitlines())


def test_proposal_pushes_only_a_branch_authored_by_the_token_user(served: Served) -> None:
    before = _refs(served.origin)
    main = before["refs/heads/main"]
    response = _propose(served, "credit-approval", "1.1.0",
                        {"to": "production", "reason": "soak passed"}, ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    branch = "promote/credit-approval/1.1.0-to-production"
    assert body == {"branch": branch, "commit": body["commit"], "pull_request_url": None,
                    "name": "credit-approval", "version": "1.1.0", "from_stage": "staging",
                    "to_stage": "production", "replaced": "1.0.0"}
    after = _refs(served.origin)
    assert after == {**before, f"refs/heads/{branch}": body["commit"]}  # main untouched, one new branch
    assert git(served.origin, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%P", branch).strip() == (
        f"ada <ada@users.noreply.github.com>|ada <ada@users.noreply.github.com>|{main}")
    assert git(served.origin, "diff", "--name-only", main, branch).split() == ["models/credit-approval/stages.yaml"]
    message = git(served.origin, "log", "-1", "--format=%B", branch)
    assert message.startswith("Promote credit-approval@1.1.0 to production") and "Reason: soak passed" in message
    assert git(served.repo, "rev-parse", "main").strip() == main
    # Reads still answer from main: the proposal is not a promotion until merged.
    assert _get(served, "/api/v1/manifest")["models"]["credit-approval"]["version"] == "1.0.0"
    # The same proposal again: it is open already.
    again = _propose(served, "credit-approval", "1.1.0", {"to": "production", "reason": "again"}, ADMIN)
    assert again.status_code == 409 and "already exists" in again.json()["error"]
    assert _refs(served.origin) == after


def test_who_may_propose_what(served: Served) -> None:
    cases = [
        (SCIENTIST, "credit-approval", "1.1.0", {"to": "production", "reason": "r"}, 403, "@dana (roles: data-scientist)"),
        (VIEWER, "fraud-detector", "1.0.0", {"to": "staging", "reason": "r"}, 403, "@vic (roles: viewer)"),
        (OWNER, "fraud-detector", "1.0.0", {"to": "staging", "reason": "r"}, 403, "@olga (no role in registry.yaml)"),
        (SCIENTIST, "fraud-detector", "1.0.0", {"to": "staging", "reason": "ready"}, 201, None),
        (OWNER, "credit-approval", "1.1.0", {"to": "canary", "reason": "canary", "traffic": 0.2}, 201, None),
    ]
    for headers, name, version, body, status, message in cases:
        response = _propose(served, name, version, body, headers)
        assert response.status_code == status, (headers, body, response.text)
        if message:
            assert message in response.json()["error"]
            assert "needs the role" in response.json()["error"]
    log = git(served.origin, "log", "-1", "--format=%an|%B", "promote/credit-approval/1.1.0-to-canary")
    assert log.startswith("olga|Promote credit-approval@1.1.0 to canary (20% traffic)")
    author = git(served.origin, "log", "-1", "--format=%ae", "promote/fraud-detector/1.0.0-to-staging").strip()
    assert author == "dana@users.noreply.github.com"
    branches = git(served.origin, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == ["main", "promote/credit-approval/1.1.0-to-canary",
                                "promote/fraud-detector/1.0.0-to-staging"]


def test_configured_email_domain(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_API_EMAIL_DOMAIN", "acme.example")
    _, app = _server(served.origin, tmp_path / "cache-domain")
    response = TestClient(app).post(TRANSITIONS.format("fraud-detector", "1.0.0"),
                                    json={"to": "staging", "reason": "r"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    assert git(served.origin, "log", "-1", "--format=%an <%ae>", response.json()["branch"]).strip() == "ada <ada@acme.example>"


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "this needs a bearer token"),
    ({"Authorization": "Bearer nope"}, "unknown bearer token"),
    ({"Authorization": "Basic dC1hZGE6"}, "this needs a bearer token"),
    ({"Authorization": "Bearer t-ada2"}, "unknown bearer token"),
])
def test_proposals_need_a_known_token(served: Served, headers: dict[str, str], message: str) -> None:
    before = _refs(served.origin)
    for body in ({"to": "staging", "reason": "r"}, {"to": "nowhere"}):  # 401 comes before body checks
        response = _propose(served, "fraud-detector", "1.0.0", body, headers)
        assert response.status_code == 401 and message in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert _refs(served.origin) == before


@pytest.mark.parametrize(("name", "version", "body", "status", "message"), [
    ("credit-approval", "1.1.0", {"reason": "r"}, 422, "to: Field required"),
    ("credit-approval", "1.1.0", {"to": "prod", "reason": "r"}, 422, "to: Input should be"),
    ("credit-approval", "1.1.0", {"to": "production"}, 422, "reason: Field required"),
    ("credit-approval", "1.1.0", {"to": "production", "reason": "   "}, 422, "body: reason is empty"),
    ("credit-approval", "1.1.0", {"to": "production", "reason": "r", "traffic": 0.5}, 422, "body: traffic applies only to a transition to canary"),
    ("credit-approval", "1.1.0", {"to": "staging", "reason": "ok\x1b[2J"}, 422, "body: reason has \\x1b at character 3: control characters"),
    ("credit-approval", "1.1.0", {"to": "staging", "reason": "ok\u202eko"}, 422, "body: reason has \\u202e at character 3"),
    ("credit-approval", "1.1.0", {"to": "staging", "reason": "ok\rApproved-by: @ada"}, 422, "body: reason has \\x0d"),
    ("credit-approval", "1.1.0", {"to": "canary", "reason": "r", "traffic": 1.5}, 422, "traffic: Input should be less than 1"),
    ("credit-approval", "1.1.0", {"to": "canary", "reason": "r", "extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ("Credit", "1.1.0", {"to": "staging", "reason": "r"}, 400, "invalid model name 'Credit'"),
    ("credit-approval", "latest", {"to": "staging", "reason": "r"}, 400, "latest"),
    ("nope", "1.0.0", {"to": "staging", "reason": "r"}, 404, "no model named 'nope' at main"),
    ("credit-approval", "9.0.0", {"to": "staging", "reason": "r"}, 404, "credit-approval@9.0.0 is not registered at main"),
    ("fraud-detector", "1.0.0", {"to": "production", "reason": "r"}, 409, "development → production is not allowed"),
    ("credit-approval", "1.0.0", {"to": "production", "reason": "r"}, 409, "already in production"),
])
def test_proposal_errors(served: Served, name: str, version: str, body: dict[str, Any], status: int,
                         message: str) -> None:
    before = _refs(served.origin)
    response = _propose(served, name, version, body, ADMIN)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"] and message in response.json()["error"]
    assert _refs(served.origin) == before


def test_non_json_body_is_422(served: Served) -> None:
    response = served.client.post(TRANSITIONS.format("fraud-detector", "1.0.0"), content=b"to=staging",
                                  headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == 422 and "JSON decode error" in response.json()["error"]


def test_tokens_and_github_settings() -> None:
    assert parse_tokens(" a=ada , b=bob-2,") == {"a": "ada", "b": "bob-2"}
    for bad, message in [("abc", "entry 1 is not token=user"), ("a=ada,=bob", "entry 2 is not token=user"),
                         ("a=two words", "not a GitHub-style user name"), ("a=ada,a=bob", "repeats a token")]:
        with pytest.raises(UsageError, match=message):
            parse_tokens(bad)
    assert GitHub.from_env({"GITHUB_TOKEN": "x"}) is None
    assert GitHub.from_env({"GITHUB_REPOSITORY": "org/reg"}) is None
    with pytest.raises(UsageError, match="use OWNER/NAME"):
        GitHub.from_env({"GITHUB_TOKEN": "x", "GITHUB_REPOSITORY": "org"})
    github = GitHub.from_env({"GITHUB_TOKEN": "ghs_x", "GITHUB_REPOSITORY": "org/reg"})
    assert github is not None
    request = github.request("promote/m/1.0.0-to-staging", "main", "Promote m@1.0.0 to staging", "Reason: r\n")
    assert (request.full_url, request.get_method()) == ("https://api.github.com/repos/org/reg/pulls", "POST")
    assert request.get_header("Authorization") == "Bearer ghs_x"
    assert request.get_header("Accept") == "application/vnd.github+json"
    assert isinstance(request.data, bytes)
    assert json.loads(request.data) == {"title": "Promote m@1.0.0 to staging", "head": "promote/m/1.0.0-to-staging",
                                        "base": "main", "body": "Reason: r\n"}
    enterprise = GitHub.from_env({"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "o/r",
                                  "GITHUB_API_URL": "https://ghe.example/api/v3/"})
    assert enterprise is not None and enterprise.request("h", "main", "t", "b").full_url == (
        "https://ghe.example/api/v3/repos/o/r/pulls")


# -- The OpenAPI document -------------------------------------------------------------------------


def test_openapi_describes_every_endpoint(served: Served) -> None:
    document = _get(served, "/openapi.json")
    paths = document["paths"]
    assert set(paths) == {"/api/v1/models", "/api/v1/models/{name}", "/api/v1/models/{name}/versions/{version}",
                          "/api/v1/manifest", "/api/v1/audit", "/healthz", "/metrics",
                          "/api/v1/models/{name}/versions/{version}/transitions"}
    schemas = document["components"]["schemas"]
    assert {"ModelSummary", "ModelDetail", "VersionDetail", "Manifest", "AuditEntry", "Health", "Error",
            "TransitionRequest", "TransitionResult"} <= set(schemas)
    for path, operations in paths.items():
        for method, operation in operations.items():
            ok = operation["responses"]["201" if method == "post" else "200"]
            assert ok["content"], (path, method)
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    post = paths["/api/v1/models/{name}/versions/{version}/transitions"]["post"]
    assert post["security"] == [{"HTTPBearer": []}]
    assert set(post["responses"]) >= {"201", "400", "401", "403", "404", "409", "422"}
    assert "304" in paths["/api/v1/manifest"]["get"]["responses"]


def test_schemathesis_finds_no_server_error_and_no_nonconforming_response(served: Served) -> None:
    """Property-based: generated requests, valid (positive) and invalid (negative) by the document,
    with schemathesis' default checks: no 5xx, documented status codes, content types, headers and
    response schemas, valid data accepted, invalid data rejected. Bounded: about 10 s."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", served.app)
    before = _refs(served.origin)
    operations = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    assert len(operations) == 8
    strategies = []
    for label, operation in operations.items():
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE))
        if operation.path not in ("/healthz", "/metrics"):  # nothing to get wrong there
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
        if label.startswith("GET /api/v1/models/{name}"):  # real models: their 200 answers conform too
            real = {"name": "credit-approval"} | ({"version": "1.1.0"} if "{version}" in label else {})
            strategies.append(operation.as_strategy(path_parameters=real))
    statuses: set[int] = set()
    for strategy in strategies:
        @given(case=strategy)
        @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            statuses.add(case.call_and_validate(headers=ADMIN).status_code)

        run()
    assert {200, 400, 404, 422} <= statuses
    assert _refs(served.origin) == before  # random names and versions never reach a real one


# -- The command ------------------------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    health: dict[str, Any]  # the first /healthz answer, with its ETag
    err: str = ""  # the server's stderr, once it stopped


@contextlib.contextmanager
def _running(served: Served, tmp_path: Path) -> Iterator[Running]:
    """`registry api` as deployed: a uvicorn server on 127.0.0.1, in its own process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "registry", "api", "--origin", str(served.origin),
                             "--port", str(port), "--cache", str(tmp_path / "cache-cli")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    server = Running(proc, port, {})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    server.health = {"etag": response.headers["ETag"], **json.load(response)}
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1].decode()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        server.err = (proc.communicate(timeout=30)[1] or b"").decode()


def test_api_command_serves_over_http(served: Served, tmp_path: Path) -> None:
    with _running(served, tmp_path) as server:
        head = git(served.origin, "rev-parse", "main").strip()
        assert server.health["etag"] == f'"{head}"' and server.health["registry_commit"] == head
    assert f"Serving main at {head[:12]} on http://127.0.0.1:{server.port}/api/v1" in server.err


# -- Request bodies over a real server: authenticated first, capped --------------------------------


def _rss(pid: int) -> int:
    """The process's resident memory in bytes (/proc/PID/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _post_head(port: int, headers: dict[str, str], ref: tuple[str, str] = ("fraud-detector", "1.0.0")) -> bytes:
    lines = [f"POST {TRANSITIONS.format(*ref)} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the server's answer; a reset after it (the rest of a refused body
    unread) does not lose it. The socket timeout only guards against a server that never answers."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            break
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), body


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value)
    return 0


def _chunked(data: bytes, size: int = 4096) -> bytes:
    pieces = [data[i:i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


def test_a_write_without_a_token_is_refused_before_its_body_is_read(served: Served, tmp_path: Path) -> None:
    declared = 300_000_000
    with _running(served, tmp_path) as server:
        # Answered at once, while nearly all of the declared body is still to come.
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(_post_head(server.port, {"Content-Length": str(declared)}) + b'{"to": "staging", ')
            status, body = _answer(sock)
        assert status == 401 and b"this needs a bearer token" in body
        # Sending it all anyway: the server closes the connection instead of reading (and
        # keeping) the body. Before the fix it read all 300 MB and grew by more than that.
        before = _rss(server.proc.pid)
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(_post_head(server.port, {"Content-Length": str(declared), "Authorization": "Bearer nope"}))
            chunk = b" " * (1 << 20)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < declared and not select.select([sock], [], [], 0)[0]:
                    sock.sendall(chunk)
                    sent += len(chunk)
            status, body = _answer(sock)
        grown = _rss(server.proc.pid) - before
        assert status == 401 and b"unknown bearer token" in body
        assert sent < declared / 10, f"the server read {sent} bytes of a refused body"
        assert grown < 64 << 20, f"the server grew by {grown >> 20} MiB"
        assert server.proc.poll() is None


def test_an_oversized_body_is_413_declared_or_chunked(served: Served, tmp_path: Path) -> None:
    before = _refs(served.origin)
    big = json.dumps({"to": "staging", "reason": "x" * 100_000}).encode()
    with _running(served, tmp_path) as server:
        # A declared length over the cap: refused before the body is read.
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(_post_head(server.port, {"Content-Length": str(len(big)), **ADMIN}) + big[:1000])
            status, body = _answer(sock)
        assert status == 413 and json.loads(body) == {
            "error": "the request body is over 65536 bytes: a transition request is a small JSON object"}
        # Chunked, no length given: counted as it is read, refused at the cap.
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            head = _post_head(server.port, {"Transfer-Encoding": "chunked", **ADMIN})
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head + _chunked(big) + b"0\r\n\r\n")
            status, body = _answer(sock)
        assert status == 413 and b"over 65536 bytes" in body
        # Small bodies, with a length or chunked, are proposals as before.
        for ref, body_json, framing in [
                (("fraud-detector", "1.0.0"), {"to": "staging", "reason": "ready"}, "length"),
                (("credit-approval", "1.1.0"), {"to": "canary", "reason": "soak", "traffic": 0.1}, "chunked")]:
            data = json.dumps(body_json).encode()
            headers = {**ADMIN, "Connection": "close"} | (
                {"Content-Length": str(len(data))} if framing == "length" else {"Transfer-Encoding": "chunked"})
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
                sock.sendall(_post_head(server.port, headers, ref)
                             + (data if framing == "length" else _chunked(data, 7) + b"0\r\n\r\n"))
                status, body = _answer(sock)
            assert status == 201, body
    after = _refs(served.origin)
    assert set(after) - set(before) == {"refs/heads/promote/fraud-detector/1.0.0-to-staging",
                                        "refs/heads/promote/credit-approval/1.1.0-to-canary"}


def test_api_command_errors(served: Served, tmp_path: Path, cli: Callable[..., Result],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    missing = cli("api", "--origin", str(tmp_path / "no-such.git"), "--cache", str(tmp_path / "c1"))
    assert missing.code == 1 and "cannot fetch --ref main from" in missing.err
    no_ref = cli("api", "--origin", str(served.origin), "--ref", "nope", "--cache", str(tmp_path / "c2"))
    assert no_ref.code == 1 and "cannot fetch --ref nope" in no_ref.err
    outside = cli("api", "--cache", str(tmp_path / "c3"), cwd=tmp_path)
    assert outside.code == 1 and "not a registry" in outside.err
    monkeypatch.setenv("REGISTRY_API_TOKENS", "secret")
    bad_tokens = cli("api", "--origin", str(served.origin), "--cache", str(tmp_path / "c4"))
    assert bad_tokens.code == 2 and "REGISTRY_API_TOKENS: entry 1 is not token=user" in bad_tokens.err
    assert not (tmp_path / "c4").exists()  # refused before anything was cloned


def test_manifest_as_of(served: Served, cli: Callable[..., Result]) -> None:
    now = _get(served, "/api/v1/manifest?stage=production")
    later = _get(served, "/api/v1/manifest?stage=production&as_of=2999-01-01T00:00Z")
    assert later["registry_commit"] == now["registry_commit"] and later["models"] == now["models"]
    assert later == {**_cli_json(cli, served.repo, "manifest", "--as-of", "2999-01-01T00:00Z"),
                     "generated_at": later["generated_at"]}
    assert "starts later" in _get(served, "/api/v1/manifest?as_of=2000-01-01T00:00:00Z", 404)["error"]
    assert "starts later" in _get(served, "/api/v1/manifest?as_of=0001-01-01T00:00:00Z", 404)["error"]
    assert "RFC 3339" in _get(served, "/api/v1/manifest?as_of=yesterday", 400)["error"]
    assert "RFC 3339" in _get(served, "/api/v1/manifest?as_of=2030-01-01", 400)["error"]
    assert "ISO 8601" in _get(served, "/api/v1/manifest?as_of=2030-02-30T00:00:00Z", 400)["error"]
