"""Receipts (DIR/receipts.jsonl) and `registry served`: what actually served, where and when."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry import api
from registry.errors import RegistryError, UsageError
from registry.serving import puller as serving
from registry.serving.receipts import (
    RECEIPTS_FILE,
    ReceiptError,
    ReceiptLog,
    check_signature,
    parse_time,
    read_receipts,
    served_at,
)
from registry.signing.keys import generate_keypair, key_id, load_public_keys, read_private_key
from tests.conftest import Result, git, isolate
from tests.test_serving import _promote, _register


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two hosts' key pairs and the concatenated public keys a reader trusts."""
    base = tmp_path_factory.mktemp("hostkeys")
    generate_keypair(base / "web-1")
    generate_keypair(base / "web-2")
    generate_keypair(base / "stranger")
    trusted = base / "hosts.pub"
    trusted.write_bytes((base / "web-1.pub").read_bytes() + (base / "web-2.pub").read_bytes())
    return {"web-1": base / "web-1.key", "web-2": base / "web-2.key", "stranger": base / "stranger.key",
            "trusted": trusted}


def switched(model: str, version: str, previous: str | None, time: str, **extra: Any) -> dict[str, Any]:
    """A `switched` event as the pull client emits it (without C2's new fields unless given)."""
    return {"event": "switched", "time": time, "model": model, "version": version, "previous": previous,
            "stage": "production", "registry_commit": "c0ffee" * 6 + "beef", "path": f"/srv/{model}/current",
            **extra}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- writing -----------------------------------------------------------------------------


def test_a_receipt_is_appended_for_each_switch_and_rollback_and_nothing_else(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path, host="web-1")
    log.record({"event": "waiting", "message": "another pull holds the lock"})
    log.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    log.record({"event": "traffic", "time": "2026-12-01T07:01:00+00:00", "model": "m", "version": "1.0.0"})
    log.record({"event": "applied", "time": "2026-12-01T07:01:00+00:00", "stage": "production"})
    log.record(switched("m", "1.1.0", "1.0.0", "2026-12-01T07:02:00+00:00", role="canary",
                        sha256={"weights.bin": "ab" * 32}, signed_by="k1", verified=True,
                        servers=["torchserve=http://127.0.0.1:8081"]))
    log.record({"event": "rolled_back", "time": "2026-12-01T07:03:00+00:00", "model": "m", "version": "1.0.0",
                "from_version": "1.1.0", "role": "current", "stage": "production", "registry_commit": "abc",
                "reason": "torchserve: input example failed", "sha256": {"weights.bin": "cd" * 32},
                "signed_by": "k1", "verified": True, "servers": ["torchserve=http://127.0.0.1:8081"]})
    first, second, third = lines(tmp_path / RECEIPTS_FILE)
    assert first["host"] == "web-1" and first["action"] == "switch" and first["role"] == "current"
    assert (first["model"], first["version"], first["previous"]) == ("m", "1.0.0", None)
    assert first["time"] == "2026-12-01T07:00:00+00:00" and first["recorded_at"] >= "2026-"
    # An event without C2's new fields and no state.json: the fields are there, empty.
    assert first["artifacts"] == {} and first["signed_by"] is None and first["verified"] is False
    assert first["servers"] == [] and "signature" not in first
    assert second["role"] == "canary" and second["artifacts"] == {"weights.bin": "ab" * 32}
    assert second["signed_by"] == "k1" and second["verified"] is True
    assert second["servers"] == ["torchserve=http://127.0.0.1:8081"]
    assert third["action"] == "rollback" and third["version"] == "1.0.0" and third["previous"] == "1.1.0"
    assert third["reason"] == "torchserve: input example failed" and third["stage"] == "production"
    assert set(first) == {"host", "model", "version", "previous", "role", "action", "stage", "registry_commit",
                          "artifacts", "signed_by", "verified", "servers", "time", "recorded_at"}


def test_the_host_defaults_to_this_machines_name_and_a_bad_host_is_refused(tmp_path: Path) -> None:
    import socket

    assert ReceiptLog(tmp_path).host == socket.gethostname()
    with pytest.raises(UsageError, match="--host"):
        ReceiptLog(tmp_path, host="web 1")


def test_the_signature_verifies_with_the_hosts_key_and_fails_when_a_field_is_altered(
        tmp_path: Path, keys: dict[str, Path]) -> None:
    log = ReceiptLog(tmp_path, host="web-1", key=keys["web-1"])  # a key file, as --host-key gives it
    log.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    receipt = lines(tmp_path / RECEIPTS_FILE)[0]
    public = load_public_keys(keys["web-1"].with_suffix(".pub"))
    assert receipt["signature"]["key_id"] == key_id(public[0])
    assert check_signature(receipt, public) == key_id(public[0])
    for field, value in (("version", "1.3.0"), ("host", "web-2"), ("time", "2026-12-01T06:00:00+00:00"),
                         ("artifacts", {"weights.bin": "00" * 32})):
        with pytest.raises(ValueError, match="bad signature"):
            check_signature({**receipt, field: value}, public)
    with pytest.raises(ValueError, match="not among the trusted keys"):
        check_signature(receipt, load_public_keys(keys["web-2"].with_suffix(".pub")))
    stranger = ReceiptLog(tmp_path, host="web-1", key=read_private_key(keys["stranger"]))  # a key object
    with pytest.raises(ValueError, match="not among the trusted keys"):
        check_signature(stranger.receipt(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00")) or {}, public)
    unsigned = {k: v for k, v in receipt.items() if k != "signature"}
    with pytest.raises(ValueError, match="unsigned"):
        check_signature(unsigned, public)


def test_a_torn_last_line_is_skipped_with_a_warning_and_the_next_receipt_starts_a_line_of_its_own(
        tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path, host="web-1")
    log.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    path = tmp_path / RECEIPTS_FILE
    whole = path.read_bytes()
    # What a writer killed mid-write leaves: part of a line, no newline.
    with path.open("ab") as f:
        f.write(whole[: len(whole) // 2])
    reading = read_receipts([path])
    assert [r["version"] for r in reading.receipts] == ["1.0.0"] and not reading.problems
    assert [(w.line, w.message) for w in reading.warnings] == [(2, "torn last line (a writer was stopped "
                                                                   "mid-write); skipped")]
    log.record(switched("m", "1.1.0", "1.0.0", "2026-12-01T07:05:00+00:00"))
    reading = read_receipts([path])
    assert [r["version"] for r in reading.receipts] == ["1.0.0", "1.1.0"] and not reading.problems
    assert [w.line for w in reading.warnings] == [2]
    assert path.read_bytes().endswith(b"\n")


# --- a real pull -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A bare origin with m@1.0.0 (tag v1) then m@1.1.0 (tag v2) in production, both signed."""
    base = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as env:
        isolate(env, base)
        origin = base / "origin.git"
        git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
        git(origin, "config", "uploadpack.allowFilter", "true")
        reg = api.init(base / "reg", dvc_remote=str(base / "dvc-remote"))
        generate_keypair(base / "release")
        inputs = base / "inputs"
        inputs.mkdir()
        rng = np.random.default_rng(1)
        for version in ("1.0.0", "1.1.0"):
            _register(reg, inputs, "m", version, {"weights.bin": rng.random(256).astype(np.float32).tobytes()},
                      base / "release.key")
        _promote(reg, "m", "1.0.0", "staging", "production", tag="v1")
        _promote(reg, "m", "1.1.0", "staging", "production", tag="v2")
        git(reg.root, "remote", "add", "origin", str(origin))
        git(reg.root, "push", "--quiet", "origin", "main", "--tags")
        shutil.rmtree(reg.root)
        commits = {tag: git(origin, "rev-parse", f"{tag}^{{commit}}").strip() for tag in ("v1", "v2")}
        yield {"origin": origin, "trusted": base / "release.pub", "inputs": inputs, "commits": commits}


def test_a_real_pull_v1_then_v2_leaves_two_signed_receipts_that_served_answers_from(
        small_world: dict[str, Any], tmp_path: Path, keys: dict[str, Path], cli: Callable[..., Result]) -> None:
    origin = tmp_path / "origin.git"
    shutil.copytree(small_world["origin"], origin)
    git(origin, "update-ref", "refs/heads/main", small_world["commits"]["v1"])
    serve = tmp_path / "serve"
    seen: list[str] = []
    puller = serving.Puller(serve, stage="production", source=str(origin), trusted_keys=small_world["trusted"],
                            on_event=lambda event: seen.append(event["event"]),
                            receipts=ReceiptLog(serve, host="web-1", key=keys["web-1"]))
    puller.poll()
    git(origin, "update-ref", "refs/heads/main", small_world["commits"]["v2"])
    puller.poll()
    puller.poll()  # unchanged: no receipt
    assert seen.count("switched") == 2 and "unchanged" in seen
    first, second = lines(serve / RECEIPTS_FILE)
    release = key_id(load_public_keys(small_world["trusted"])[0])
    weights = {v: hashlib.sha256((small_world["inputs"] / f"m-{v}" / "weights.bin").read_bytes()).hexdigest()
               for v in ("1.0.0", "1.1.0")}
    assert (first["version"], first["previous"], first["registry_commit"]) == (
        "1.0.0", None, small_world["commits"]["v1"])
    assert (second["version"], second["previous"], second["registry_commit"]) == (
        "1.1.0", "1.0.0", small_world["commits"]["v2"])
    for receipt, version in ((first, "1.0.0"), (second, "1.1.0")):
        assert receipt["artifacts"]["weights.bin"] == weights[version]  # from the event or state.json
        assert receipt["signed_by"] == release and receipt["verified"] is True
        assert receipt["host"] == "web-1" and receipt["stage"] == "production" and receipt["role"] == "current"
    result = cli("served", "--receipts", str(serve / RECEIPTS_FILE), "--trusted-keys", str(keys["trusted"]),
                 "--json")
    assert result.code == 0, result.out + result.err
    answer = json.loads(result.out)
    assert [(r["host"], r["model"], r["version"], r["receipt_signature"]) for r in answer["served"]] == [
        ("web-1", "m", "1.1.0", "valid")]
    assert answer["served"][0]["receipt"] == f"{serve / RECEIPTS_FILE}:2"


# --- registry served -----------------------------------------------------------------------


@pytest.fixture
def two_hosts(tmp_path: Path, keys: dict[str, Path]) -> tuple[Path, Path]:
    """web-1 went 1.0.0 (07:00) -> 1.1.0 (08:00); web-2 1.0.0 (07:30) -> 1.1.0 (08:30) -> rolled back (08:31)."""
    one, two = tmp_path / "web-1", tmp_path / "web-2"
    one.mkdir()
    two.mkdir()
    a = ReceiptLog(one, host="web-1", key=keys["web-1"])
    a.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    a.record(switched("m", "1.1.0", "1.0.0", "2026-12-01T08:00:00+00:00"))
    a.record(switched("m", "1.2.0", None, "2026-12-01T08:10:00+00:00", role="canary"))
    b = ReceiptLog(two, host="web-2", key=keys["web-2"])
    b.record(switched("m", "1.0.0", None, "2026-12-01T07:30:00Z"))
    b.record(switched("m", "1.1.0", "1.0.0", "2026-12-01T08:30:00+00:00"))
    b.record({"event": "rolled_back", "time": "2026-12-01T08:31:00+00:00", "model": "m", "version": "1.0.0",
              "from_version": "1.1.0", "role": "current", "stage": "production", "registry_commit": "abc",
              "reason": "readiness check failed"})
    b.record(switched("other", "3.0.0", None, "2026-12-01T07:45:00+00:00"))
    return one / RECEIPTS_FILE, two / RECEIPTS_FILE


def _served(cli: Callable[..., Result], files: tuple[Path, Path], *args: str) -> list[tuple[str, str, str, str]]:
    result = cli("served", "--receipts", str(files[0]), "--receipts", str(files[1]), "--json", *args)
    assert result.code == 0, result.out + result.err
    return [(r["host"], r["model"], r["role"], r["version"]) for r in json.loads(result.out)["served"]]


def test_served_at_answers_the_version_before_and_after_a_switch_across_two_hosts(
        two_hosts: tuple[Path, Path], cli: Callable[..., Result]) -> None:
    assert _served(cli, two_hosts, "--at", "2026-12-01T06:59:59Z") == []
    assert _served(cli, two_hosts, "--at", "2026-12-01T07:00:00Z") == [("web-1", "m", "current", "1.0.0")]
    assert _served(cli, two_hosts, "--at", "2026-12-01T07:59:59") == [  # no zone: UTC
        ("web-1", "m", "current", "1.0.0"), ("web-2", "m", "current", "1.0.0"), ("web-2", "other", "current", "3.0.0")]
    assert _served(cli, two_hosts, "--at", "2026-12-01T09:15+01:00", "--model", "m") == [  # 08:15 UTC
        ("web-1", "m", "canary", "1.2.0"), ("web-1", "m", "current", "1.1.0"), ("web-2", "m", "current", "1.0.0")]
    assert _served(cli, two_hosts, "--at", "2026-12-01 08:30:30", "--host", "web-2", "--model", "m") == [
        ("web-2", "m", "current", "1.1.0")]
    assert _served(cli, two_hosts, "--host", "web-2", "--model", "m") == [("web-2", "m", "current", "1.0.0")]  # now
    assert _served(cli, two_hosts, "--at", "2026-12-01") == []  # a date: its start
    assert len(_served(cli, two_hosts, "--at", "2026-12-02")) == 4

    people = cli("served", "--receipts", str(two_hosts[0]), "--receipts", str(two_hosts[1]),
                 "--at", "2026-12-01T08:45:00Z", "--model", "m")
    assert people.code == 0, people.err
    rows = people.out.splitlines()
    assert rows[0].startswith("served at 2026-12-01T08:45:00+00:00") and "give --trusted-keys" in rows[0]
    assert rows[1].split() == ["HOST", "MODEL", "ROLE", "VERSION", "SINCE", "STAGE", "RECEIPT"]
    assert "web-2" in rows[4] and "1.0.0 (rolled back from 1.1.0)" in rows[4] and "2026-12-01T08:31:00" in rows[4]
    nothing = cli("served", "--receipts", str(two_hosts[0]), "--at", "2020-01-01")
    assert nothing.code == 0 and "nothing served at 2020-01-01T00:00:00+00:00" in nothing.out


def test_served_json_has_the_documented_shape(two_hosts: tuple[Path, Path], keys: dict[str, Path],
                                              cli: Callable[..., Result]) -> None:
    result = cli("served", "--receipts", str(two_hosts[1]), "--at", "2026-12-01T08:31:00Z", "--model", "m",
                 "--trusted-keys", str(keys["trusted"]), "--json")
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    assert set(answer) == {"at", "served", "problems", "warnings"} and answer["at"] == "2026-12-01T08:31:00+00:00"
    (row,) = answer["served"]
    assert row == {
        "host": "web-2", "model": "m", "role": "current", "version": "1.0.0", "since": "2026-12-01T08:31:00+00:00",
        "action": "rollback", "previous": "1.1.0", "stage": "production", "registry_commit": "abc",
        "signed_by": None, "verified": False, "servers": [], "receipt": f"{two_hosts[1]}:3",
        "receipt_signature": "valid",
        "receipt_key_id": key_id(load_public_keys(keys["web-2"].with_suffix(".pub"))[0]),
    }
    assert answer["problems"] == [] and answer["warnings"] == []


def test_with_trusted_keys_unsigned_and_altered_receipts_are_refused_with_file_and_line(
        two_hosts: tuple[Path, Path], keys: dict[str, Path], tmp_path: Path, cli: Callable[..., Result]) -> None:
    one, two = two_hosts
    # An attacker on web-1 rewrites history: web-1 "served" 1.1.0 from 07:00.
    receipts = lines(one)
    receipts[0]["version"] = "1.1.0"
    one.write_text("".join(json.dumps(r) + "\n" for r in receipts))
    unsigned_dir = tmp_path / "web-3"
    unsigned_dir.mkdir()
    ReceiptLog(unsigned_dir, host="web-3").record(switched("m", "0.9.0", None, "2026-12-01T06:00:00+00:00"))
    three = unsigned_dir / RECEIPTS_FILE
    args = ("served", "--receipts", str(one), "--receipts", str(two), "--receipts", str(three),
            "--at", "2026-12-01T07:45:00Z", "--model", "m")
    result = cli(*args, "--trusted-keys", str(keys["trusted"]))
    assert result.code == 1
    assert f"error: {one}:1: refused: bad signature" in result.err
    assert f"error: {three}:1: refused: unsigned receipt" in result.err
    assert "Traceback" not in result.err
    rows = result.out.splitlines()[2:]
    assert [r.split()[:4] for r in rows] == [["web-2", "m", "current", "1.0.0"]]  # neither altered nor unsigned
    as_json = cli(*args, "--trusted-keys", str(keys["trusted"]), "--json")
    assert as_json.code == 1
    problems = json.loads(as_json.out)["problems"]
    assert [(p["file"], p["line"]) for p in problems] == [(str(one), 1), (str(three), 1)]
    # Without --trusted-keys nothing is checked, and the table says so.
    unchecked = cli(*args)
    assert unchecked.code == 0 and "give --trusted-keys" in unchecked.out
    assert any(r.split()[:4] == ["web-3", "m", "current", "0.9.0"] and r.endswith("unsigned")
               for r in unchecked.out.splitlines())


@pytest.mark.parametrize("at", ["yesterday", "2026-13-01", "07:00 tomorrow", ""])
def test_a_bad_time_is_a_usage_error(two_hosts: tuple[Path, Path], cli: Callable[..., Result], at: str) -> None:
    result = cli("served", "--receipts", str(two_hosts[0]), "--at", at)
    assert result.code == 2
    assert f"error: --at {at!r}: not a time; give ISO 8601" in result.err and "Traceback" not in result.err


def test_bad_files_and_malformed_lines_get_file_and_line_messages(
        two_hosts: tuple[Path, Path], tmp_path: Path, keys: dict[str, Path], cli: Callable[..., Result]) -> None:
    missing = cli("served", "--receipts", str(tmp_path / "nope.jsonl"))
    assert missing.code == 1 and f"error: {tmp_path / 'nope.jsonl'}: no such receipts file" in missing.err
    folder = cli("served", "--receipts", str(tmp_path))
    assert folder.code == 1 and f"error: {tmp_path}: is a folder" in folder.err
    no_keys = cli("served", "--receipts", str(two_hosts[0]), "--trusted-keys", str(tmp_path / "none.pub"))
    assert no_keys.code == 2 and "--trusted-keys" in no_keys.err
    not_keys = cli("served", "--receipts", str(two_hosts[0]), "--trusted-keys", str(two_hosts[0]))
    assert not_keys.code == 1 and "no PEM public key found" in not_keys.err
    bad = tmp_path / "bad.jsonl"
    good = two_hosts[0].read_text().splitlines(keepends=True)
    bad.write_text(good[0] + "this is not json\n" + '{"host": "web-9"}\n' + "[1, 2]\n"
                   + json.dumps({**json.loads(good[1]), "time": "teatime"}) + "\n" + good[1])
    result = cli("served", "--receipts", str(bad), "--at", "2026-12-01T09:00:00Z")
    assert result.code == 1 and "Traceback" not in result.err
    assert f"error: {bad}:2: not JSON" in result.err
    assert f'error: {bad}:3: not a receipt: "model" missing or not a string' in result.err
    assert f"error: {bad}:4: not a receipt: not a JSON object" in result.err
    assert f"error: {bad}:5: not a receipt: \"time\" 'teatime' is not ISO 8601" in result.err
    assert [r.split()[:4] for r in result.out.splitlines()[2:]] == [["web-1", "m", "current", "1.1.0"]]


def test_line_separators_inside_a_value_do_not_split_a_receipt(tmp_path: Path, keys: dict[str, Path]) -> None:
    log = ReceiptLog(tmp_path, host="h\u00e9", key=keys["web-1"])
    log.record({"event": "rolled_back", "time": "2026-12-01T07:00:00+00:00", "model": "m", "version": "1.0.0",
                "from_version": "1.1.0", "stage": "production", "reason": "server said: a\u2028b\x85c\x1cd"})
    path = tmp_path / RECEIPTS_FILE
    # Someone else's tool rewrote it with raw UTF-8: still one receipt, still verifying.
    path.write_text(json.dumps(json.loads(path.read_text()), ensure_ascii=False) + "\n", encoding="utf-8")
    reading = read_receipts([path], load_public_keys(keys["trusted"]))
    assert not reading.problems and not reading.warnings
    (receipt,) = reading.receipts
    assert receipt["reason"] == "server said: a\u2028b\x85c\x1cd" and receipt.signature == "valid"


def test_served_at_keeps_the_file_order_for_receipts_of_the_same_second(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path, host="h")
    log.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    log.record({"event": "rolled_back", "time": "2026-12-01T07:00:00+00:00", "model": "m", "version": "0.9.0",
                "from_version": "1.0.0", "stage": "production"})
    reading = read_receipts([tmp_path / RECEIPTS_FILE])
    (row,) = served_at(reading.receipts, parse_time("2026-12-01T07:00:00Z"))
    assert row["version"] == "0.9.0" and row["action"] == "rollback"


def test_an_append_is_one_write_of_a_whole_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    ReceiptLog(tmp_path, host="h").record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    assert len(writes) == 1 and writes[0].endswith(b"\n") and writes[0].count(b"\n") == 1
    assert (tmp_path / RECEIPTS_FILE).read_bytes() == writes[0]


def test_appends_from_two_processes_at_once_never_mix_lines(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from registry.serving.receipts import ReceiptLog\n"
        "log = ReceiptLog(sys.argv[1], host=sys.argv[2])\n"
        "for i in range(150):\n"
        "    log.record({'event': 'switched', 'time': '2026-12-01T07:00:00+00:00', 'model': 'm',\n"
        "                'version': f'1.{i}.0', 'previous': None, 'stage': 'production',\n"
        "                'sha256': {f'shard-{n}.bin': 'ab' * 32 for n in range(40)}})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), host]) for host in ("a", "b")]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    reading = read_receipts([tmp_path / RECEIPTS_FILE])
    assert not reading.problems and not reading.warnings
    for host in ("a", "b"):
        assert [r["version"] for r in reading.receipts if r["host"] == host] == [f"1.{i}.0" for i in range(150)]


def test_a_receipt_that_cannot_be_written_is_a_clear_error_and_a_bad_host_key_is_refused(
        tmp_path: Path, keys: dict[str, Path]) -> None:
    (tmp_path / RECEIPTS_FILE).mkdir()  # something in the way (a folder), even for root
    log = ReceiptLog(tmp_path, host="h")
    with pytest.raises(ReceiptError, match=r"receipts.jsonl: cannot append the receipt of m@1.0.0 .*"
                       r"the switch itself happened"):
        log.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    with pytest.raises(UsageError, match=r"--host-key .*: no such file"):
        ReceiptLog(tmp_path, host="h", key=tmp_path / "missing.key")
    with pytest.raises(RegistryError, match="is a public key"):
        ReceiptLog(tmp_path, host="h", key=keys["web-1"].with_suffix(".pub"))


def test_a_model_that_left_the_stage_is_served_by_no_one_after_its_removal(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path, host="h")
    log.record(switched("m", "1.0.0", None, "2026-12-01T07:00:00+00:00"))
    log.record(switched("m", "1.1.0", None, "2026-12-01T07:00:00+00:00", role="canary"))
    log.record({"event": "removed", "time": "2026-12-01T08:00:00+00:00", "model": "m", "version": "1.1.0",
                "role": "canary", "stage": "production", "registry_commit": "abc"})
    reading = read_receipts([tmp_path / RECEIPTS_FILE])
    assert not reading.problems
    before = served_at(reading.receipts, parse_time("2026-12-01T07:30:00Z"))
    assert [(r["role"], r["version"]) for r in before] == [("canary", "1.1.0"), ("current", "1.0.0")]
    after = served_at(reading.receipts, parse_time("2026-12-01T08:30:00Z"))
    assert [(r["role"], r["version"]) for r in after] == [("current", "1.0.0")]
