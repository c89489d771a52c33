"""`registry pull`: the serving client against a real bare origin, a real DVC remote and real keys."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from registry import api
from registry.errors import UsageError
from registry.serving import puller as serving
from registry.serving.remote import CHUNK
from registry.signing.bundle import sign_folder, verify_folder
from registry.signing.keys import generate_keypair, key_id, load_public_keys, read_private_key
from tests.conftest import CARD, Result, git, isolate

BIG = 48 << 20  # 50 MB: a download takes a while, and the test stays quick


@dataclass(frozen=True)
class World:
    """A registry's history, tagged by state, its DVC remote and two key pairs."""

    origin: Path
    remote: Path
    inputs: Path
    trusted: Path  # release.pub: signed every version except m@1.2.0 (unsigned) and m@1.3.0
    rogue: Path  # rogue.pub: signed m@1.3.0

    def commit(self, tag: str) -> str:
        return git(self.origin, "rev-parse", f"{tag}^{{commit}}").strip()


def _register(reg: api.Registry, inputs: Path, name: str, version: str, files: dict[str, bytes],
              key: Path | None) -> None:
    folder = inputs / f"{name}-{version}"
    folder.mkdir()
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    (folder / "card.yaml").write_text(CARD)
    reg.register(name, version, folder / "card.yaml", [folder / f for f in files], no_branch=True)
    if key is not None:
        version_dir = reg.version_dir(name, version)
        sign_folder(version_dir, name, version, read_private_key(key))
        git(reg.root, "add", str(version_dir / "signature.json"))
        git(reg.root, "commit", "--quiet", "-m", f"Sign {name}@{version}")


def _promote(reg: api.Registry, name: str, version: str, *stages: str, tag: str, traffic: float | None = None) -> None:
    for stage in stages:
        reg.promote(name, version, stage, "test", no_branch=True, traffic=traffic if stage == "canary" else None)
    git(reg.root, "tag", tag)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, base)
        origin = base / "origin.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        # As GitHub does: partial clones are allowed, so the mirror really is blob-less.
        git(origin, "config", "uploadpack.allowFilter", "true")
        reg = api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
        generate_keypair(base / "release")
        generate_keypair(base / "rogue")
        release, rogue = base / "release.key", base / "rogue.key"
        inputs = base / "inputs"
        inputs.mkdir()
        rng = np.random.default_rng(0)
        for version, key in (("1.0.0", release), ("1.1.0", release), ("1.2.0", None), ("1.3.0", rogue)):
            weights = rng.random(4096).astype(np.float32).tobytes()
            _register(reg, inputs, "m", version, {"weights.bin": weights, "config.json": f'{{"v": "{version}"}}\n'.encode()}, key)
        _promote(reg, "m", "1.0.0", "staging", "production", tag="v1")
        _promote(reg, "m", "1.1.0", "staging", "canary", tag="canary", traffic=0.1)
        _promote(reg, "m", "1.1.0", "production", tag="v2")
        _promote(reg, "m", "1.2.0", "staging", "production", tag="unsigned")
        _promote(reg, "m", "1.3.0", "staging", "production", tag="rogue")
        for version in ("1.0.0", "1.1.0"):
            _register(reg, inputs, "big", version, {"weights.bin": os.urandom(BIG)}, release)
        _promote(reg, "big", "1.0.0", "staging", "production", tag="big1")
        _promote(reg, "big", "1.1.0", "staging", "production", tag="big2")
        git(reg.root, "remote", "add", "origin", str(origin))
        git(reg.root, "push", "--quiet", "origin", "main", "--tags")
        shutil.rmtree(reg.root)  # serving sees only the origin and the DVC remote
        yield World(origin, base / "dvc-remote", inputs, base / "release.pub", base / "rogue.pub")


@pytest.fixture
def origin(world: World, tmp_path: Path) -> Path:
    """This test's copy of the origin, its main at the first state (m@1.0.0 in production)."""
    copy = tmp_path / "origin.git"
    shutil.copytree(world.origin, copy)
    git(copy, "update-ref", "refs/heads/main", world.commit("v1"))
    return copy


def merge_to(origin: Path, world: World, tag: str) -> None:
    """What merging a promotion's pull request does to the origin's main (or a force-push, backwards)."""
    git(origin, "update-ref", "refs/heads/main", world.commit(tag))


def pull(to: Path, origin: Path, world: World, **options: object) -> serving.PullResult:
    settings: dict[str, object] = {"stage": "production", "source": str(origin), "trusted_keys": world.trusted}
    settings.update(options)
    return serving.pull(to, **settings)  # type: ignore[arg-type]


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "registry", "pull", *map(str, args)]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(serve: Path) -> list[str]:
    return sorted(str(p.relative_to(serve)) for p in serve.rglob(".tmp-*"))


def snapshot(serve: Path, mirror: bool = True) -> dict[str, tuple[int, int]]:
    """Every path outside the mirror with its mtime and size (and the mirror's pack count)."""
    found = {}
    for path in sorted(serve.rglob("*")):
        if ".registry-cache" in path.parts:
            continue
        info = path.lstat()
        found[str(path.relative_to(serve))] = (info.st_mtime_ns, info.st_size)
    if mirror:
        found["<mirror objects>"] = (len(list((serve / ".registry-cache").rglob("*.pack"))), 0)
    return found


# --- a pull, and a poll with nothing new ------------------------------------------------------


def test_first_pull_gives_identical_bytes_and_an_unchanged_poll_reads_nothing(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve, metrics = tmp_path / "serve", tmp_path / "metrics" / "registry.prom"
    result = pull(serve, origin, world, metrics_file=metrics)
    assert result.changed and result.switched == ("m",) and result.fetched
    assert result.registry_commit == world.commit("v1")
    assert result.downloaded_files == 1 and result.downloaded_bytes == 4096 * 4
    current = serve / "m" / "current"
    assert os.readlink(current) == "versions/1.0.0"
    got = files_of(current)
    assert sorted(got) == ["card.yaml", "config.json", "signature.json", "weights.bin"]
    assert got["weights.bin"] == (world.inputs / "m-1.0.0" / "weights.bin").read_bytes()
    assert got["config.json"] == b'{"v": "1.0.0"}\n'
    # The served folder is the signed folder: the signature verifies on it as it stands.
    verify_folder(current, "m", "1.0.0", load_public_keys(world.trusted))
    state = json.loads((serve / "state.json").read_text())
    assert state["registry_commit"] == world.commit("v1") and state["stage"] == "production"
    model = state["models"]["m"]
    assert model["version"] == "1.0.0" and model["path"] == "m/versions/1.0.0" and "traffic" not in model
    assert model["sha256"]["weights.bin"] == hashlib.sha256(got["weights.bin"]).hexdigest()
    assert model["signed_by"] == key_id(load_public_keys(world.trusted)[0])
    text = metrics.read_text()
    assert 'registry_serving_version_info{model="m",version="1.0.0",stage="production"} 1' in text
    assert "registry_pull_failures_total 0" in text
    last = float(text.split("\nregistry_last_successful_pull_timestamp_seconds ")[1].split()[0])
    assert abs(last - time.time()) < 60

    before = snapshot(serve)
    again = pull(serve, origin, world)
    assert not again.changed and not again.fetched
    assert (again.downloaded_files, again.downloaded_bytes, again.verified_files) == (0, 0, 0)
    assert [e["event"] for e in again.events] == ["unchanged"]
    assert again.models["m"].version == "1.0.0"
    assert snapshot(serve) == before  # no file written, no pack fetched, the state untouched
    assert leftovers(serve) == []


def test_a_promotion_switches_current_and_keeps_the_previous_version(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    serve = tmp_path / "serve"
    args = ("pull", "--stage", "production", "--to", str(serve), "--from", str(origin),
            "--trusted-keys", str(world.trusted), "--json")
    first = cli(*args)
    assert first.code == 0, first.out + first.err
    merge_to(origin, world, "v2")
    second = cli(*args)
    assert second.code == 0, second.out + second.err
    events = [json.loads(line) for line in second.out.splitlines()]
    switched = [e for e in events if e["event"] == "switched"]
    assert switched == [{**switched[0], "model": "m", "version": "1.1.0", "previous": "1.0.0",
                         "stage": "production", "registry_commit": world.commit("v2")}]
    applied = events[-1]
    assert applied["event"] == "applied" and applied["models"] == {"m": {"version": "1.1.0"}}
    assert applied["previous_commit"] == world.commit("v1") and applied["downloaded_files"] == 1
    assert os.readlink(serve / "m" / "current") == "versions/1.1.0"
    assert files_of(serve / "m" / "current")["config.json"] == b'{"v": "1.1.0"}\n'
    assert sorted(os.listdir(serve / "m" / "versions")) == ["1.0.0", "1.1.0"]  # the previous stays for rollback
    state = json.loads((serve / "state.json").read_text())
    assert state["models"]["m"]["previous"] == "1.0.0" and state["registry_commit"] == world.commit("v2")

    people = cli("pull", "--stage", "production", "--to", str(serve), "--trusted-keys", str(world.trusted))
    assert people.code == 0 and "production is up to date at registry commit" in people.out


def test_canary_comes_with_its_traffic_share_and_leaves_when_promoted(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "canary"
    merge_to(origin, world, "canary")
    seen: list[dict[str, object]] = []
    result = pull(serve, origin, world, stage="canary", on_event=seen.append)
    assert result.models["m"].version == "1.1.0" and result.models["m"].traffic == 0.1
    assert next(e for e in seen if e["event"] == "switched")["traffic"] == 0.1
    state = json.loads((serve / "state.json").read_text())
    assert state["stage"] == "canary" and state["models"]["m"]["traffic"] == 0.1
    merge_to(origin, world, "v2")  # the canary went to production: no canary any more
    result = pull(serve, origin, world, stage="canary")
    assert result.models == {} and [e["event"] for e in result.events] == ["removed", "applied"]
    assert not (serve / "m").exists()
    with pytest.raises(UsageError, match="serves canary"):
        pull(serve, origin, world, stage="production")


def test_a_remote_that_is_not_a_local_folder_is_read_through_dvc(world: World, origin: Path, tmp_path: Path) -> None:
    """An HTTP remote (DVC's own filesystem for it, no local path) serving the same objects."""
    handler = functools.partial(_QuietHandler, directory=str(world.remote))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        work = tmp_path / "work"
        git(tmp_path, "clone", "--quiet", str(origin), str(work))
        config = work / ".dvc" / "config"
        config.write_text(config.read_text().replace(f"url = {world.remote}", f"url = http://127.0.0.1:{server.server_port}"))
        git(work, "commit", "--quiet", "-am", "Serve artifacts over HTTP")
        git(work, "push", "--quiet", "origin", "main")
        result = pull(tmp_path / "serve", origin, world)
    finally:
        server.shutdown()
        server.server_close()
    assert result.downloaded_files == 1
    served = tmp_path / "serve" / "m" / "current"
    assert (served / "weights.bin").read_bytes() == (world.inputs / "m-1.0.0" / "weights.bin").read_bytes()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


# --- never a partial version -------------------------------------------------------------------


def test_a_reader_never_sees_a_partial_version_during_a_large_pull(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    merge_to(origin, world, "big1")
    pull(serve, origin, world, models=["big"])
    complete = {v: {"card.yaml", "signature.json", "weights.bin"} for v in ("1.0.0", "1.1.0")}
    sizes = {v: (world.inputs / f"big-{v}" / "weights.bin").stat().st_size for v in complete}
    merge_to(origin, world, "big2")
    seen: dict[str, int] = {}
    problems: list[str] = []
    done = threading.Event()

    def read_current() -> None:
        current = serve / "big" / "current"
        while not done.is_set():
            folder = Path(os.path.realpath(current))
            version = folder.name
            names = set(os.listdir(folder))
            size = (folder / "weights.bin").stat().st_size
            card = (folder / "card.yaml").read_text()
            if names != complete.get(version) or size != sizes[version] or f"version: {version}" not in card:
                problems.append(f"{folder}: {sorted(names)} {size}")
            seen[version] = seen.get(version, 0) + 1
            time.sleep(0.01)

    reader = threading.Thread(target=read_current)
    reader.start()
    try:
        proc = subprocess.run(command("--stage", "production", "--to", serve, "--model", "big",
                                      "--trusted-keys", world.trusted), capture_output=True, text=True, timeout=60)
        deadline = time.monotonic() + 5
        while "1.1.0" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        reader.join()
    assert proc.returncode == 0, proc.stderr
    assert problems == []
    assert seen.get("1.0.0", 0) >= 1 and seen.get("1.1.0", 0) >= 1, seen
    assert (serve / "big" / "current" / "weights.bin").read_bytes() == (world.inputs / "big-1.1.0" / "weights.bin").read_bytes()


def test_sigkill_mid_download_then_the_next_run_recovers_with_no_leftovers(
        world: World, origin: Path, tmp_path: Path) -> None:
    merge_to(origin, world, "big1")
    serve = tmp_path / "serve"
    for _attempt in range(5):
        proc = subprocess.Popen(command("--stage", "production", "--to", serve, "--from", origin, "--model", "big",
                                        "--trusted-keys", world.trusted), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        partial = False
        while proc.poll() is None and not partial:
            for path in serve.glob(".tmp-big-*/weights.bin") if serve.exists() else []:
                with_data = path.stat().st_size
                partial = 0 < with_data < BIG
        if partial:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if partial:
            break
        shutil.rmtree(serve, ignore_errors=True)
    assert partial, "never caught the pull mid-download"
    assert leftovers(serve) and not (serve / "big" / "current").exists()
    result = pull(serve, origin, world, models=["big"])
    assert result.switched == ("big",)
    assert leftovers(serve) == []
    assert (serve / "big" / "current" / "weights.bin").read_bytes() == (world.inputs / "big-1.0.0" / "weights.bin").read_bytes()
    assert sorted(os.listdir(serve)) == [".lock", ".registry-cache", "big", "receipts.jsonl", "state.json"]


# --- refusals: the last good version keeps serving ---------------------------------------------


def test_a_tampered_blob_in_the_dvc_remote_is_refused_and_the_previous_version_keeps_serving(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    serve, metrics = tmp_path / "serve", tmp_path / "registry.prom"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    good = (world.inputs / "m-1.1.0" / "weights.bin").read_bytes()
    md5 = hashlib.md5(good, usedforsecurity=False).hexdigest()
    blob = world.remote / "files" / "md5" / md5[:2] / md5[2:]
    bad = bytes([good[0] ^ 1]) + good[1:]
    mode = blob.stat().st_mode
    blob.chmod(0o644)
    blob.write_bytes(bad)
    try:
        before = snapshot(serve, mirror=False)
        result = cli("pull", "--stage", "production", "--to", str(serve), "--trusted-keys", str(world.trusted),
                     "--metrics-file", str(metrics))
    finally:
        blob.write_bytes(good)
        blob.chmod(mode)
    assert result.code == 1
    expected, actual = hashlib.sha256(good).hexdigest(), hashlib.sha256(bad).hexdigest()
    assert f"error: m@1.1.0: weights.bin: sha256 is {actual}, expected {expected}" in result.err
    assert str(blob) in result.err
    assert "still serving m@1.0.0" in result.err
    assert "Traceback" not in result.err
    assert os.readlink(serve / "m" / "current") == "versions/1.0.0"
    assert os.listdir(serve / "m" / "versions") == ["1.0.0"] and leftovers(serve) == []
    after = snapshot(serve, mirror=False)
    assert {k: v for k, v in after.items() if k != "state.json"} == {k: v for k, v in before.items() if k != "state.json"}
    state = json.loads((serve / "state.json").read_text())
    assert state["registry_commit"] == world.commit("v1") and state["failures_total"] == 1
    assert "registry_pull_failures_total 1" in metrics.read_text()
    # With the remote repaired, the same promotion goes through.
    assert pull(serve, origin, world).switched == ("m",)


def test_a_disk_error_while_switching_the_second_model_switches_the_first_back(
        world: World, origin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from registry.serving.store import ServingDir

    serve, keys = tmp_path / "serve", tmp_path / "both.pub"
    keys.write_bytes(world.trusted.read_bytes() + world.rogue.read_bytes())
    pull(serve, origin, world, trusted_keys=keys)  # m@1.0.0
    merge_to(origin, world, "big1")  # m@1.3.0, and big@1.0.0 new: two switches in one pull
    real_switch, calls = ServingDir.switch, []

    def full_disk_on_the_second(store: ServingDir, name: str, version: str, link: str = "current") -> None:
        calls.append(name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_switch(store, name, version, link)

    monkeypatch.setattr(ServingDir, "switch", full_disk_on_the_second)
    with pytest.raises(serving.PullError) as failed:
        pull(serve, origin, world, trusted_keys=keys)
    assert sorted(calls[:2]) == ["big", "m"]
    assert "No space left on device" in str(failed.value) and "still serving m@1.0.0" in str(failed.value)
    # What the message says is what is served: the first switch was undone.
    assert os.readlink(serve / "m" / "current") == "versions/1.0.0"
    assert not os.path.lexists(serve / "big" / "current")
    state = json.loads((serve / "state.json").read_text())
    assert state["registry_commit"] == world.commit("v1") and list(state["models"]) == ["m"]
    monkeypatch.undo()
    result = pull(serve, origin, world, trusted_keys=keys)
    assert sorted(result.switched) == ["big", "m"]
    assert os.readlink(serve / "m" / "current") == "versions/1.3.0"
    assert os.readlink(serve / "big" / "current") == "versions/1.0.0"


def test_a_force_pushed_older_state_is_refused_unless_rewind_is_allowed(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    pull(serve, origin, world)
    merge_to(origin, world, "v1")  # a force-push back to an older state
    args = ["pull", "--stage", "production", "--to", str(serve), "--trusted-keys", str(world.trusted)]
    refused = cli(*args)
    assert refused.code == 1
    assert (f"error: registry commit {world.commit('v1')[:12]} (main at {origin}) does not descend from "
            f"{world.commit('v2')[:12]}") in refused.err
    assert "--allow-rewind" in refused.err and "still serving m@1.1.0" in refused.err
    assert os.readlink(serve / "m" / "current") == "versions/1.1.0"
    accepted = cli(*args, "--allow-rewind", "--json")
    assert accepted.code == 0, accepted.err
    applied = json.loads(accepted.out.splitlines()[-1])
    assert applied["rewound"] is True and applied["registry_commit"] == world.commit("v1")
    assert applied["downloaded_files"] == 0  # 1.0.0 was still on disk, verified: no download
    assert os.readlink(serve / "m" / "current") == "versions/1.0.0"


@pytest.mark.parametrize(("tag", "keys", "message"), [
    ("unsigned", "trusted", "m@1.2.0: not signed (models/m/1.2.0/signature.json is missing)"),
    ("rogue", "trusted", "m@1.3.0: models/m/1.3.0/signature.json: signed by unknown key"),
    ("v2", "rogue", "m@1.1.0: models/m/1.1.0/signature.json: signed by unknown key"),
])
def test_unsigned_or_wrongly_signed_versions_are_refused(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result], tag: str, keys: str,
        message: str) -> None:
    serve = tmp_path / "serve"
    key_file = world.trusted if keys == "trusted" else world.rogue
    if keys == "trusted":
        merge_to(origin, world, "v2")
        pull(serve, origin, world)
    merge_to(origin, world, tag)
    result = cli("pull", "--stage", "production", "--to", str(serve), "--from", str(origin),
                 "--trusted-keys", str(key_file))
    assert result.code == 1, result.out
    assert f"error: {message}" in result.err
    if keys == "trusted":
        assert os.readlink(serve / "m" / "current") == "versions/1.1.0"
        assert os.listdir(serve / "m" / "versions") == ["1.1.0"] and leftovers(serve) == []
    else:
        assert "nothing is served" in result.err
        assert not serve.exists()  # a refused first pull leaves nothing behind


def test_insecure_skip_signature_serves_an_unsigned_version_checking_digests(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    merge_to(origin, world, "unsigned")
    result = pull(serve, origin, world, trusted_keys=None, insecure_skip_signature=True)
    assert result.models["m"].version == "1.2.0" and result.models["m"].signed_by is None
    # Keys given later: the version already served is checked again, in place, and refused.
    with pytest.raises(serving.VerificationError, match=r"m@1\.2\.0: not signed"):
        pull(serve, origin, world)
    assert os.readlink(serve / "m" / "current") == "versions/1.2.0"


# --- watching, signals, the lock ------------------------------------------------------------------


def _lines(proc: subprocess.Popen[str], until: Callable[[dict[str, object]], bool], timeout: float) -> list[dict[str, object]]:
    assert proc.stdout is not None
    got: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        got.append(json.loads(line))
        if until(got[-1]):
            return got
    raise AssertionError(f"no such event within {timeout} s: {got}")


def test_watch_picks_up_a_promotion_and_exits_cleanly_on_sigterm(
        world: World, origin: Path, tmp_path: Path) -> None:
    serve, metrics = tmp_path / "serve", tmp_path / "registry.prom"
    proc = subprocess.Popen(command("--stage", "production", "--to", serve, "--from", origin, "--trusted-keys",
                                    world.trusted, "--watch", "--interval", "0.2", "--json", "--metrics-file", metrics),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _lines(proc, lambda e: e["event"] == "applied", 20)
        assert os.readlink(serve / "m" / "current") == "versions/1.0.0"
        merge_to(origin, world, "v2")
        events = _lines(proc, lambda e: e["event"] == "applied", 10)  # a bound on waiting, not an assertion
        assert [e["version"] for e in events if e["event"] == "switched"] == ["1.1.0"]
        assert 'version="1.1.0"' in metrics.read_text()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["event"] == "stopped"
    assert "Traceback" not in err and leftovers(serve) == []
    assert os.readlink(serve / "m" / "current") == "versions/1.1.0"


def _open_fifo_for_writing(fifo: Path, proc: subprocess.Popen[str], timeout: float) -> int:
    """The write end of fifo, once proc has opened it for reading."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the pull never opened {fifo}: {exc}") from None
            time.sleep(0.005)
            continue
        os.set_blocking(fd, True)
        return fd


def _write_all(fd: int, data: bytes) -> None:
    rest = memoryview(data)
    while rest:
        rest = rest[os.write(fd, rest):]


def _wait_until_delivered(proc: subprocess.Popen[str], sig: int, timeout: float) -> None:
    """Until the kernel has delivered sig to proc (its handler ran): nothing pending in /proc/PID/status."""
    status = Path(f"/proc/{proc.pid}/status")
    if not status.exists():
        return
    deadline = time.monotonic() + timeout
    bit = 1 << (sig - 1)
    while time.monotonic() < deadline:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        if not any(int(fields.get(name, "0").strip(), 16) & bit for name in ("SigPnd", "ShdPnd")):
            return
        time.sleep(0.001)
    raise AssertionError(f"signal {sig} still pending for {proc.pid} after {timeout} s")


def test_sigterm_during_a_download_abandons_it_safely(world: World, origin: Path, tmp_path: Path) -> None:
    """The DVC remote's copy of big@1.1.0 is a named pipe this test feeds: the signal arrives with
    the download half done, every time; the rest then arrives too, and is not used."""
    serve = tmp_path / "serve"
    merge_to(origin, world, "big1")
    pull(serve, origin, world, models=["big"])
    merge_to(origin, world, "big2")
    weights = (world.inputs / "big-1.1.0" / "weights.bin").read_bytes()
    md5 = hashlib.md5(weights, usedforsecurity=False).hexdigest()
    blob = world.remote / "files" / "md5" / md5[:2] / md5[2:]
    aside = blob.with_name(f"{blob.name}.aside")
    blob.rename(aside)
    os.mkfifo(blob)
    proc = subprocess.Popen(command("--stage", "production", "--to", serve, "--model", "big", "--trusted-keys",
                                    world.trusted, "--watch", "--interval", "30", "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        fd = _open_fifo_for_writing(blob, proc, 30)
        try:
            first = CHUNK  # what the pull reads at a time: it then waits for the next chunk
            _write_all(fd, weights[:first])
            deadline = time.monotonic() + 30
            while not any(p.stat().st_size == first for p in serve.glob(".tmp-big-*/weights.bin")):
                assert time.monotonic() < deadline and proc.poll() is None, "the first bytes never arrived"
                time.sleep(0.001)
            proc.send_signal(signal.SIGTERM)
            _wait_until_delivered(proc, signal.SIGTERM, 10)
            with contextlib.suppress(BrokenPipeError):  # the pull stops reading, as it should
                _write_all(fd, weights[first:])
        finally:
            os.close(fd)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        blob.unlink()
        aside.rename(blob)
    assert proc.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines()]
    assert events == ["watching", "stopped"], out
    assert os.readlink(serve / "big" / "current") == "versions/1.0.0"
    assert leftovers(serve) == [] and "Traceback" not in err


def test_two_pulls_into_one_folder_are_serialised_by_the_lock(world: World, origin: Path, tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    pull(serve, origin, world)
    merge_to(origin, world, "v2")
    fd = os.open(serve / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen(command("--stage", "production", "--to", serve, "--trusted-keys", world.trusted,
                                        "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = _lines(proc, lambda e: True, 20)[0]
        assert first["event"] == "waiting"
        time.sleep(0.3)
        assert proc.poll() is None and os.readlink(serve / "m" / "current") == "versions/1.0.0"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["event"] == "applied"
    assert os.readlink(serve / "m" / "current") == "versions/1.1.0"


# --- bad arguments: a clear message, nothing created ---------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--stage", "qa", "--to", "{serve}", "--from", "{origin}", "--trusted-keys", "{keys}"],
     "Invalid value for '--stage': 'qa' is not one of 'production', 'canary', 'staging'"),
    (["--stage", "production", "--from", "{origin}", "--trusted-keys", "{keys}"], "Missing option '--to'"),
    (["--stage", "production", "--to", "{serve}", "--from", "{tmp}/nowhere.git", "--trusted-keys", "{keys}"],
     "--from {tmp}/nowhere.git: cannot read the registry at {tmp}/nowhere.git"),
    (["--stage", "production", "--to", "{serve}", "--from", "{origin}"], "--trusted-keys FILE is required"),
    (["--stage", "production", "--to", "{serve}", "--from", "{origin}", "--trusted-keys", "{tmp}/none.pub"],
     "--trusted-keys: {tmp}/none.pub: cannot read key file"),
    (["--stage", "production", "--to", "{serve}", "--trusted-keys", "{keys}"], "--from URL is needed"),
    (["--stage", "production", "--to", "{serve}", "--from", "{origin}", "--ref", "nope", "--trusted-keys", "{keys}"],
     "--ref nope: no such branch or tag"),
    (["--stage", "production", "--to", "{serve}", "--from", "{origin}", "--trusted-keys", "{keys}", "--interval", "1"],
     "--interval goes with --watch"),
    (["--stage", "production", "--to", "{serve}", "--from", "{origin}", "--trusted-keys", "{keys}", "--model", "Bad/Name"],
     "invalid model name 'Bad/Name'"),
])
def test_bad_arguments_get_a_clear_message_and_create_nothing(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result], args: list[str], message: str) -> None:
    serve = tmp_path / "serve"
    values = {"serve": str(serve), "origin": str(origin), "keys": str(world.trusted), "tmp": str(tmp_path)}
    result = cli("pull", *[a.format(**values) for a in args])
    assert result.code == 2, result.out + result.err
    assert message.format(**values) in result.err
    assert "Traceback" not in result.err
    assert not serve.exists()


def test_an_unknown_model_or_a_foreign_folder_is_refused_and_nothing_is_created(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    serve = tmp_path / "serve"
    base = ("pull", "--stage", "production", "--from", str(origin), "--trusted-keys", str(world.trusted))
    result = cli(*base, "--to", str(serve), "--model", "nope")
    assert result.code == 1 and "--model nope: no such model in the registry" in result.err
    assert not serve.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = cli(*base, "--to", str(mine))
    assert result.code == 2 and "not empty (notes.txt) and not a folder that `registry pull` made" in result.err
    assert os.listdir(mine) == ["notes.txt"]


# --- a --to or --metrics-file that cannot be written ------------------------------------------


def _blocker(tmp_path: Path) -> Path:
    """A regular file: nothing can be created under it, not even by root."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    return blocker


def _unwritable(tmp_path: Path, where: str) -> Path:
    if where == "sysfs":
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no sysfs here")
        return Path("/sys/registry-test-serve")  # EPERM, for root too
    if where == "read-only-folder":
        if os.geteuid() == 0:
            pytest.skip("root writes in a folder without write permission")
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder / "serve"
    return _blocker(tmp_path) / ("serve" if where == "under-a-file" else "a/b/serve")


@pytest.mark.parametrize("watch", [False, True])
@pytest.mark.parametrize("where", ["under-a-file", "deep-under-a-file", "sysfs", "read-only-folder"])
def test_a_to_that_cannot_be_written_is_a_clear_error_and_nothing_is_written(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result], where: str, watch: bool) -> None:
    serve = _unwritable(tmp_path, where)
    before = sorted(tmp_path.rglob("*"))
    result = cli("pull", "--stage", "production", "--to", str(serve), "--from", str(origin),
                 "--trusted-keys", str(world.trusted), *(["--watch", "--interval", "1"] if watch else []))
    assert result.code == 1, result.out + result.err
    assert f"error: --to {serve}: cannot create or write this folder (" in result.err
    assert "give a folder that this user can write, on a file system with free space" in result.err
    assert ("watching" in result.err) is watch and "stopped" not in result.err  # the watch ends at once
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert sorted(tmp_path.rglob("*")) == before and not serve.exists()


def test_a_metrics_file_that_cannot_be_written_is_refused_before_anything_is_pulled(
        world: World, origin: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    serve = tmp_path / "serve"
    metrics = _blocker(tmp_path) / "metrics" / "registry.prom"
    result = cli("pull", "--stage", "production", "--to", str(serve), "--from", str(origin),
                 "--trusted-keys", str(world.trusted), "--metrics-file", str(metrics))
    assert result.code == 1, result.out + result.err
    assert result.err.startswith(f"error: --metrics-file {metrics}: cannot create or write this file (")
    assert "internal error" not in result.err and "Traceback" not in result.err
    assert not serve.exists() and (tmp_path / "blocker").read_text() == "a file, not a folder\n"


def _in_own_mounts(script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `sh -c script args` in a mount namespace of its own (mounts vanish with it)."""
    return subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("mount", ["ro,size=1m", "size=256k"])
def test_a_read_only_or_full_file_system_is_a_clear_error_and_leaves_nothing(
        world: World, origin: Path, tmp_path: Path, mount: str) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    if not shutil.which("unshare") or _in_own_mounts(f"mount -t tmpfs -o ro none {point}").returncode:
        pytest.skip("cannot mount a file system in a mount namespace of its own here")
    merge_to(origin, world, "big1")  # 48 MiB: more than the full file system holds
    serve = point / "serve"
    done = _in_own_mounts(f'mount -t tmpfs -o {mount} none {point} && "$@"; code=$?; '
                          f'echo "left: $(ls -A {point})"; exit $code',
                          *command("--stage", "production", "--to", serve, "--from", origin,
                                   "--trusted-keys", world.trusted))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    if mount.startswith("ro"):
        assert done.stderr.startswith(f"error: --to {serve}: cannot create or write this folder "
                                      "(Read-only file system)"), done.stderr
    else:
        assert done.stderr.startswith(f"error: --to {serve}: cannot create or write this folder "
                                      "(No space left on device)"), done.stderr
        assert f"nothing was changed: nothing is served from {serve} yet" in done.stderr
    assert done.stdout.strip().endswith("left:"), done.stdout  # nothing left on the file system


def test_only_errors_in_the_serving_folder_are_blamed_on_to(tmp_path: Path) -> None:
    from registry.serving.store import is_write_error

    root = tmp_path / "serve"
    assert is_write_error(OSError(errno.ENOSPC, "No space left on device"), root)  # a write: no file name
    assert is_write_error(PermissionError(errno.EACCES, "Permission denied", str(root / "m" / "versions")), root)
    assert is_write_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path)), root)
    assert not is_write_error(PermissionError(errno.EACCES, "Permission denied", "/srv/dvc-remote/ab/cd"), root)
    assert not is_write_error(FileNotFoundError(errno.ENOENT, "No such file or directory", str(root / "x")), root)
