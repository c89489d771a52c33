"""`registry pull --server`: real pulls drive a real HTTP server and a real command; refusals roll back;
--per-model, --with-canary, and the watch's back-off against the same bare origin as tests/test_serving.py."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from registry.errors import UsageError
from registry.serving import puller as serving
from registry.serving.adapters import AdapterError, Change, make_adapter
from registry.serving.watch import backoff
from tests.conftest import Result
from tests.test_serving import World, merge_to, origin, pull, world

__all__ = ["origin", "world"]  # the fixtures, shared with tests/test_serving.py

SCRIPT = """\
import json, os, sys
log, fail = sys.argv[1], sys.argv[2]
env = {k: v for k, v in os.environ.items() if k.startswith("REGISTRY_")}
with open(log, "a") as out:
    out.write(json.dumps(env) + "\\n")
blocked = open(fail).read().split() if os.path.exists(fail) else []
if env["REGISTRY_ACTION"] == "switch" and env["REGISTRY_MODEL"] in blocked:
    print("loading", file=sys.stderr)
    print(f"cannot load {env['REGISTRY_MODEL']}: boom", file=sys.stderr)
    sys.exit(3)
"""


@dataclass
class Hook:
    """A local HTTP server that records the events POSTed to it and answers with `status`."""

    url: str
    got: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answers to give first, then 200


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.got.append(json.loads(body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Command:
    spec: str
    log: Path
    fail: Path

    @property
    def label(self) -> str:
        return f"command={sys.executable} …"  # how events name it: the arguments may hold secrets

    def calls(self) -> list[dict[str, str]]:
        # What the adapter set: REGISTRY_* variables of the test's own environment (REGISTRY_RUN_SLOW
        # in CI) are passed through to the command as any others are, and are left out here.
        calls = [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []
        return [{k: v for k, v in call.items() if os.environ.get(k) != v} for call in calls]

    def refuse(self, *models: str) -> None:
        self.fail.write_text(" ".join(models))


@pytest.fixture
def cmd(tmp_path: Path) -> Command:
    script = tmp_path / "reload.py"
    script.write_text(SCRIPT)
    log, fail = tmp_path / "reload.log", tmp_path / "refuse"
    spec = "command=" + shlex.join([sys.executable, str(script), str(log), str(fail)])
    return Command(spec, log, fail)


def both_keys(world: World, tmp_path: Path) -> Path:
    keys = tmp_path / "both.pub"
    keys.write_bytes(world.trusted.read_bytes() + world.rogue.read_bytes())
    return keys


def state_of(serve: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((serve / "state.json").read_text())
    return data


def link(serve: Path, name: str, which: str = "current") -> str | None:
    path = serve / name / which
    return os.readlink(path) if os.path.lexists(path) else None


def events_of(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]


# --- a switch drives the servers -------------------------------------------------------------------


def test_a_switch_drives_the_http_and_command_adapters_with_the_version_folder(
        world: World, origin: Path, tmp_path: Path, hook: Hook, cmd: Command) -> None:
    serve = tmp_path / "serve"
    seen: list[dict[str, Any]] = []
    pull(serve, origin, world, servers=[f"http={hook.url},timeout=5", cmd.spec], on_event=seen.append)
    merge_to(origin, world, "v2")
    seen.clear()
    result = pull(serve, origin, world, servers=[f"http={hook.url}", cmd.spec], on_event=seen.append)
    assert result.switched == ("m",)
    folder = serve / "m" / "versions" / "1.1.0"
    assert hook.got[-1] == {"event": "switch", "model": "m", "version": "1.1.0", "previous": "1.0.0",
                            "folder": str(folder), "stage": "production", "registry_commit": world.commit("v2"),
                            "traffic": None}
    assert hook.got[0]["previous"] is None and hook.got[0]["version"] == "1.0.0"  # the first pull
    call = cmd.calls()[-1]
    assert call == {"REGISTRY_ACTION": "switch", "REGISTRY_MODEL": "m", "REGISTRY_VERSION": "1.1.0",
                    "REGISTRY_PREVIOUS": "1.0.0", "REGISTRY_FOLDER": str(folder), "REGISTRY_STAGE": "production",
                    "REGISTRY_COMMIT": world.commit("v2"), "REGISTRY_TRAFFIC": ""}
    switched = next(e for e in seen if e["event"] == "switched")
    weights = (world.inputs / "m-1.1.0" / "weights.bin").read_bytes()
    assert switched["sha256"]["weights.bin"] == hashlib.sha256(weights).hexdigest()
    assert switched["signed_by"] and switched["verified"] is True and switched["role"] == "current"
    assert switched["servers"] == [f"http={hook.url}", cmd.label]
    assert all("time" in e for e in seen)


def test_a_server_that_refuses_the_new_version_rolls_everything_back(
        world: World, origin: Path, tmp_path: Path, hook: Hook, cmd: Command, cli: Callable[..., Result]) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    before = (serve / "state.json").read_text()
    merge_to(origin, world, "v2")
    hook.statuses = [503]
    args = ("pull", "--stage", "production", "--to", str(serve), "--trusted-keys", str(world.trusted),
            "--server", cmd.spec, "--server", f"http={hook.url}")
    result = cli(*args, "--json")
    assert result.code == 1, result.out + result.err
    assert link(serve, "m") == "versions/1.0.0"  # the previous version still serves
    after = state_of(serve)
    assert after["registry_commit"] == world.commit("v1") and after["models"]["m"]["version"] == "1.0.0"
    # What is served is unchanged; the verified 1.1.0 folder is remembered (not linked) for the retry.
    unchanged = ("models", "registry_commit", "applied_at", "held", "source", "stage")
    assert {k: json.loads(before)[k] for k in unchanged} == {k: after[k] for k in unchanged}
    events = events_of(result)
    back = next(e for e in events if e["event"] == "rolled_back")
    assert back["model"] == "m" and back["version"] == "1.0.0" and back["from_version"] == "1.1.0"
    assert back["role"] == "current" and back["registry_commit"] == world.commit("v2")
    assert "HTTP 503" in back["reason"] and back["servers"] == [cmd.label, f"http={hook.url}"]
    assert back["sha256"]["weights.bin"] and back["signed_by"] and back["verified"] is True
    # A one-shot pull's failure is the command's error, as for every command with --json.
    assert not [e for e in events if e.get("event") == "failed"]
    failed = events[-1]
    assert set(failed) == {"error"} and failed["error"].startswith(f"m@1.1.0: http={hook.url}: answered the switch")
    assert "still serving m@1.0.0" in failed["error"]
    # The command had taken the switch: it was told to revert it.
    assert [c["REGISTRY_ACTION"] for c in cmd.calls()] == ["switch", "revert"]
    assert cmd.calls()[-1]["REGISTRY_FOLDER"] == str(serve / "m" / "versions" / "1.0.0")
    # In words, without --json; then the server is back and the same commit goes through.
    hook.statuses = [500]
    words = cli(*args)
    assert words.code == 1 and "Traceback" not in words.err
    assert words.err.startswith(f"m: rolled back, back on 1.0.0 (1.1.0 refused: m@1.1.0: http={hook.url}")
    assert f"error: m@1.1.0: http={hook.url}: answered the switch event with HTTP 500" in words.err
    assert "error: nothing was changed: still serving m@1.0.0 (registry commit" in words.err
    assert "; m blocks this all-or-nothing pull (--per-model lets the other models switch)" in words.err
    again = cli(*args)
    assert again.code == 0, again.err
    assert link(serve, "m") == "versions/1.1.0" and state_of(serve)["registry_commit"] == world.commit("v2")


def test_all_or_nothing_a_refusal_of_the_second_model_reverts_the_first(
        world: World, origin: Path, tmp_path: Path, cmd: Command) -> None:
    serve, keys = tmp_path / "serve", both_keys(world, tmp_path)
    pull(serve, origin, world, trusted_keys=keys)  # m@1.0.0
    merge_to(origin, world, "big1")  # big@1.0.0 new, m@1.3.0: big switches first, then m
    cmd.refuse("m")
    seen: list[dict[str, Any]] = []
    with pytest.raises(serving.PullError) as failed:
        pull(serve, origin, world, trusted_keys=keys, servers=[cmd.spec], on_event=seen.append)
    assert failed.value.model == "m"
    assert str(failed.value).startswith("m@1.3.0: command ") and "cannot load m: boom" in str(failed.value)
    calls = [(c["REGISTRY_ACTION"], c["REGISTRY_MODEL"], c["REGISTRY_VERSION"]) for c in cmd.calls()]
    assert calls == [("switch", "big", "1.0.0"), ("switch", "m", "1.3.0"), ("revert", "big", "1.0.0")]
    assert link(serve, "m") == "versions/1.0.0" and link(serve, "big") is None
    assert list(state_of(serve)["models"]) == ["m"]
    back = {e["model"]: e for e in seen if e["event"] == "rolled_back"}
    assert back["m"]["version"] == "1.0.0" and back["m"]["from_version"] == "1.3.0"
    assert back["big"]["version"] is None and back["big"]["from_version"] == "1.0.0"
    assert [e["event"] for e in seen][-1] == "failed" and seen[-1]["model"] == "m"


# --- --per-model -----------------------------------------------------------------------------------


def test_per_model_switches_the_healthy_model_and_retries_the_held_one(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)  # m@1.0.0
    merge_to(origin, world, "big1")  # big@1.0.0 (release key), m@1.3.0 (signed by the rogue key)
    base = ("pull", "--stage", "production", "--to", str(serve), "--trusted-keys", str(world.trusted))
    refused = cli(*base)
    assert refused.code == 1
    assert refused.err.startswith("error: m@1.3.0: models/m/1.3.0/signature.json: signed by unknown key")
    assert "nothing was changed: still serving m@1.0.0" in refused.err
    assert "m blocks this all-or-nothing pull (--per-model lets the other models switch)" in refused.err
    assert link(serve, "big") is None

    result = cli(*base, "--per-model")
    assert result.code == 1, result.out + result.err
    assert "big@1.0.0 now serving" in result.out and "1 switched, 1 held (m)" in result.out
    assert "error: m@1.3.0: models/m/1.3.0/signature.json: signed by unknown key" in result.err
    assert link(serve, "big") == "versions/1.0.0" and link(serve, "m") == "versions/1.0.0"
    state = state_of(serve)
    assert state["registry_commit"] == world.commit("big1") and state["models"]["m"]["version"] == "1.0.0"
    assert state["held"]["m"]["version"] == "1.3.0" and state["failures_total"] >= 1
    # The ref did not move, yet the next poll tries m again (with the key that signed it, it goes through).
    again = pull(serve, origin, world, trusted_keys=both_keys(world, tmp_path), per_model=True)
    assert again.switched == ("m",) and again.held == {}
    assert link(serve, "m") == "versions/1.3.0" and state_of(serve)["held"] == {}
    assert pull(serve, origin, world, trusted_keys=both_keys(world, tmp_path)).events[0]["event"] == "unchanged"


def test_per_model_a_server_refusal_holds_only_that_model(
        world: World, origin: Path, tmp_path: Path, cmd: Command) -> None:
    serve, keys = tmp_path / "serve", both_keys(world, tmp_path)
    pull(serve, origin, world, trusted_keys=keys)
    merge_to(origin, world, "big1")
    cmd.refuse("m")
    seen: list[dict[str, Any]] = []
    result = pull(serve, origin, world, trusted_keys=keys, servers=[cmd.spec], per_model=True, on_event=seen.append)
    assert result.switched == ("big",) and list(result.held) == ["m"]
    assert link(serve, "big") == "versions/1.0.0" and link(serve, "m") == "versions/1.0.0"
    assert [e["model"] for e in seen if e["event"] == "rolled_back"] == ["m"]
    assert next(e for e in seen if e["event"] == "failed")["model"] == "m"
    cmd.refuse()
    again = pull(serve, origin, world, trusted_keys=keys, servers=[cmd.spec], per_model=True)
    assert again.switched == ("m",) and link(serve, "m") == "versions/1.3.0"


def test_per_model_a_new_model_a_server_refuses_leaves_nothing_behind(
        world: World, origin: Path, tmp_path: Path, cmd: Command, cli: Callable[..., Result]) -> None:
    serve, keys = tmp_path / "serve", both_keys(world, tmp_path)
    pull(serve, origin, world, trusted_keys=keys)
    merge_to(origin, world, "big1")
    cmd.refuse("big")
    result = cli("pull", "--stage", "production", "--to", str(serve), "--trusted-keys", str(keys),
                 "--server", cmd.spec, "--per-model")
    assert result.code == 1, result.out + result.err
    assert "m@1.3.0 now serving, was 1.0.0" in result.out and "1 switched, 1 held (big)" in result.out
    assert "big: rolled back, not served (1.0.0 refused: big@1.0.0: command " in result.err
    assert "cannot load big: boom" in result.err
    assert "big keeps serving what it served (--per-model); the next pull tries it again" in result.err
    assert not (serve / "big").exists() and link(serve, "m") == "versions/1.3.0"
    assert "big" not in state_of(serve)["models"] and state_of(serve)["held"]["big"]["version"] == "1.0.0"


class Broken:
    """An adapter object given to the Python API, with a bug: it raises something else than AdapterError."""

    kind, url = "test", "in-process"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def apply(self, change: Change) -> None:
        self.calls.append(("apply", change.version))
        raise KeyError("no such model loaded")

    def revert(self, change: Change) -> None:
        self.calls.append(("revert", change.version))


def test_an_adapter_object_that_raises_anything_is_a_refusal_and_rolls_back(
        world: World, origin: Path, tmp_path: Path, hook: Hook) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    broken = Broken()
    with pytest.raises(serving.PullError, match=r"^m@1\.1\.0: test=in-process: KeyError: 'no such model loaded'"):
        pull(serve, origin, world, servers=[f"http={hook.url}", broken])
    assert broken.calls == [("apply", "1.1.0")]  # it restores itself (the interface says so)
    assert [h["event"] for h in hook.got] == ["switch", "revert"]  # the server before it is reverted
    assert hook.got[1]["folder"] == str(serve / "m" / "versions" / "1.0.0") and hook.got[1]["previous"] == "1.0.0"
    assert link(serve, "m") == "versions/1.0.0"


def test_servers_are_named_without_secrets() -> None:
    from registry.serving.drive import label

    assert label(make_adapter("http=https://ops:s3cret@hooks.example/reload?token=abc")) == \
        "http=https://hooks.example/reload?…"
    assert label(make_adapter("command=/usr/bin/reload --token abc")) == "command=/usr/bin/reload …"


def test_the_http_adapter_follows_no_redirect(tmp_path: Path, hook: Hook) -> None:
    hook.statuses = [302]
    change = Change("m", "1.0.0", tmp_path, None, None, {}, "production", "0" * 40)
    with pytest.raises(AdapterError, match="answered the switch event with HTTP 302"):
        make_adapter(f"http={hook.url}").apply(change)
    assert len(hook.got) == 1


# --- a new client gives the servers what is served -------------------------------------------------


def test_the_first_poll_with_servers_applies_every_served_model_once(
        world: World, origin: Path, tmp_path: Path, cmd: Command, hook: Hook) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    hook.statuses = [502]
    puller = serving.Puller(serve, stage="production", trusted_keys=world.trusted, servers=[cmd.spec, f"http={hook.url}"])
    with pytest.raises(serving.PullError, match=r"m@1\.0\.0: http=.*HTTP 502") as failed:
        puller.poll()  # the server is not up yet: the folder is fine, the failure says so
    assert failed.value.model == "m" and link(serve, "m") == "versions/1.0.0"
    result = puller.poll()  # tried again
    assert [e["event"] for e in result.events] == ["unchanged"]
    assert hook.got[-1]["version"] == "1.0.0" and hook.got[-1]["previous"] is None
    calls = len(cmd.calls())
    assert cmd.calls()[-1]["REGISTRY_ACTION"] == "switch" and cmd.calls()[-1]["REGISTRY_VERSION"] == "1.0.0"
    puller.poll()
    assert len(cmd.calls()) == calls  # once is enough


# --- --with-canary -----------------------------------------------------------------------------------


def test_with_canary_serves_the_canary_beside_production_and_drops_it_when_promoted(
        world: World, origin: Path, tmp_path: Path, cmd: Command) -> None:
    serve = tmp_path / "serve"
    merge_to(origin, world, "canary")  # production m@1.0.0, canary m@1.1.0 at 10%
    seen: list[dict[str, Any]] = []
    result = pull(serve, origin, world, with_canary=True, servers=[cmd.spec], on_event=seen.append)
    assert link(serve, "m") == "versions/1.0.0" and link(serve, "m", "canary") == "versions/1.1.0"
    assert (serve / "m" / "canary" / "config.json").read_bytes() == b'{"v": "1.1.0"}\n'
    model = state_of(serve)["models"]["m"]
    assert model["version"] == "1.0.0" and model["canary"] == {"version": "1.1.0", "traffic": 0.1}
    assert result.models["m"].canary is not None and result.models["m"].canary.traffic == 0.1
    roles = {e["role"]: e for e in seen if e["event"] == "switched"}
    assert roles["canary"]["version"] == "1.1.0" and roles["canary"]["traffic"] == 0.1
    applied = next(e for e in seen if e["event"] == "applied")
    assert applied["switched"] == ["m"] and applied["canaries_switched"] == ["m"]
    assert [(c["REGISTRY_VERSION"], c["REGISTRY_TRAFFIC"]) for c in cmd.calls()] == [("1.0.0", ""), ("1.1.0", "0.1")]
    assert pull(serve, origin, world, with_canary=True).events[0]["event"] == "unchanged"

    merge_to(origin, world, "v2")  # the canary went to production
    seen.clear()
    pull(serve, origin, world, with_canary=True, on_event=seen.append)
    assert link(serve, "m") == "versions/1.1.0" and link(serve, "m", "canary") is None
    assert "canary" not in state_of(serve)["models"]["m"]
    assert sorted(os.listdir(serve / "m" / "versions")) == ["1.0.0", "1.1.0"]  # current and previous
    assert any(e["event"] == "removed" and e["role"] == "canary" for e in seen)
    with pytest.raises(UsageError, match="--with-canary goes with --stage production"):
        pull(tmp_path / "other", origin, world, stage="canary", with_canary=True)


# --- watch: back-off, and a fix at the same commit ------------------------------------------------------


class Watch:
    """A Puller watching in a thread, its events collected."""

    def __init__(self, puller: serving.Puller, interval: float) -> None:
        self.puller, self.events = puller, []
        puller.on_event = self.events.append
        self.thread = threading.Thread(target=puller.watch, args=(interval,), daemon=True)
        self.thread.start()

    def wait_for(self, test: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if test(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no such event in {timeout} s: {self.events}")

    def stop(self) -> None:
        self.puller.stop.set()
        self.thread.join(30)


def test_watch_retries_a_refused_download_with_back_off_and_picks_up_the_repair(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    good = (world.inputs / "m-1.1.0" / "weights.bin").read_bytes()
    md5 = hashlib.md5(good, usedforsecurity=False).hexdigest()
    blob = world.remote / "files" / "md5" / md5[:2] / md5[2:]
    mode = blob.stat().st_mode
    blob.chmod(0o644)
    blob.write_bytes(b"x" + good[1:])
    watch = Watch(serving.Puller(serve, stage="production", trusted_keys=world.trusted), 0.05)
    try:
        watch.wait_for(lambda e: e["event"] == "failed" and e["retry_in"] >= 0.2)  # 0.05, 0.1, 0.2: backing off
        failed = [e for e in watch.events if e["event"] == "failed"]
        assert [e["retry_in"] for e in failed[:3]] == [0.05, 0.1, 0.2]
        assert failed[0]["model"] == "m" and failed[0]["error"].startswith("m@1.1.0: weights.bin: sha256 is")
        assert "next_try" in failed[0] and link(serve, "m") == "versions/1.0.0"
        blob.write_bytes(good)  # repaired; the registry's ref did not move
        watch.wait_for(lambda e: e["event"] == "switched" and e["version"] == "1.1.0")
    finally:
        blob.write_bytes(good)
        blob.chmod(mode)
        watch.stop()
    assert link(serve, "m") == "versions/1.1.0" and watch.events[-1]["event"] == "stopped"


def test_watch_picks_up_a_server_that_comes_back(world: World, origin: Path, tmp_path: Path, hook: Hook) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    hook.statuses = [503, 503, 503]
    watch = Watch(serving.Puller(serve, stage="production", trusted_keys=world.trusted,
                                 servers=[f"http={hook.url}"]), 0.05)
    try:
        watch.wait_for(lambda e: e["event"] == "switched" and e["version"] == "1.1.0")
    finally:
        watch.stop()
    kinds = [e["event"] for e in watch.events]
    assert kinds.count("rolled_back") == 3 and kinds.count("failed") == 3
    assert link(serve, "m") == "versions/1.1.0"


def test_watch_keeps_refusing_a_rewind_quietly_until_the_ref_moves(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    pull(serve, origin, world)
    merge_to(origin, world, "v1")  # a force-push back
    watch = Watch(serving.Puller(serve, stage="production", trusted_keys=world.trusted), 0.05)
    try:
        first = watch.wait_for(lambda e: e["event"] == "failed")
        time.sleep(0.5)  # some ten polls
        assert [e for e in watch.events if e["event"] == "failed"] == [first]
        assert first["waiting_for"] == "the ref to move" and "--allow-rewind" in first["error"]
        assert link(serve, "m") == "versions/1.1.0"
        merge_to(origin, world, "v2")
        watch.wait_for(lambda e: e["event"] == "unchanged")
    finally:
        watch.stop()


def test_back_off_doubles_up_to_ten_intervals_or_ten_minutes() -> None:
    assert [backoff(30, n) for n in range(7)] == [30, 30, 60, 120, 240, 300, 300]
    assert backoff(120, 9) == 600 and backoff(900, 5) == 900


# --- the adapters' own refusals ----------------------------------------------------------------------


def test_the_command_adapter_runs_no_shell_and_reports_a_missing_program(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    adapter = make_adapter(f"command=echo hi; touch {marker}")
    change = Change("m", "1.0.0", tmp_path, None, None, {}, "production", "0" * 40)
    adapter.apply(change)  # echo got "hi;", "touch" and the path as arguments
    assert not marker.exists()
    with pytest.raises(AdapterError, match=r"m@1\.0\.0: command /nonexistent/reload: cannot run it"):
        make_adapter("command=/nonexistent/reload").apply(change)


@pytest.mark.parametrize(("spec", "message"), [
    ("http=ftp://example.org/x", "give an http:// or https:// URL"),
    ("http=http://127.0.0.1:1/x,timeout=zero", "timeout=zero: give seconds"),
    ("http=http://127.0.0.1:1/x,retries=3", "unknown setting 'retries'"),
    ("command=", "command needs a command after '='"),
    ("command='unclosed", "cannot split the command"),
    ("nginx=http://x", "give one of torchserve=URL"),
])
def test_a_bad_server_spec_is_a_usage_error_before_anything_is_pulled(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result], spec: str, message: str) -> None:
    serve = tmp_path / "serve"
    result = cli("pull", "--stage", "production", "--to", str(serve), "--from", str(origin),
                 "--trusted-keys", str(world.trusted), "--server", spec)
    assert result.code == 2, result.out + result.err
    assert message in result.err and "Traceback" not in result.err
    assert not serve.exists()
