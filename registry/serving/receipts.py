"""Receipts: what actually served, where and when — one signed line per switch, rollback and removal.

`ReceiptLog(DIR).record(event)` appends a receipt to ``DIR/receipts.jsonl`` for each
``switched``, ``rolled_back`` and ``removed`` pull event (other events are ignored). A receipt names the
host, the model, the version now served and the one before, the role (current or canary),
the stage, the registry commit, the artifacts' sha256, the key that signed the version and
whether it was verified, the model servers that took it, the event's time and when it was
recorded. With a host key (ECDSA, the project's key files) each receipt carries
``"signature": {"key_id", "sig"}``: base64 DER ECDSA over the receipt's canonical JSON
(sorted keys, no spaces, UTF-8) without the signature itself.

An append is one ``os.write`` of a whole line to a file opened with O_APPEND, then fsync:
a writer killed part-way leaves at most one torn last line, which readers skip with a
warning (the next append starts on a line of its own).

`read_receipts` parses one file; `served_at` answers which version each host served,
per model and role, at a moment, from several hosts' files (`registry served`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from registry.errors import Problem, RegistryError, UsageError
from registry.files.fsutil import fsync_dir
from registry.serving.store import RECEIPTS_FILE, ServingDir, Unwritable, VersionRecord, now_iso
from registry.signing import keys

ACTIONS = {"switched": "switch", "rolled_back": "rollback", "removed": "remove"}  # remove: left the stage
_REQUIRED = ("host", "model", "version", "role", "action", "time")


class ReceiptError(Unwritable):
    """A receipt could not be appended (the switch it records did happen)."""


def canonical(receipt: Mapping[str, Any]) -> bytes:
    """The bytes a receipt's signature covers: its JSON without "signature", keys sorted, compact."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(receipt: Mapping[str, Any], private_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The receipt's ``signature`` field."""
    der = private_key.sign(canonical(receipt), keys.ecdsa(private_key.public_key()))
    return {"key_id": keys.key_id(private_key.public_key()), "sig": base64.b64encode(der).decode()}


def check_signature(receipt: Mapping[str, Any], trusted: Sequence[ec.EllipticCurvePublicKey]) -> str:
    """The id of the trusted key that signed the receipt; ValueError saying why not."""
    signature = receipt.get("signature")
    if signature is None:
        raise ValueError("unsigned receipt")
    if not isinstance(signature, dict) or not isinstance(signature.get("key_id"), str) \
            or not isinstance(signature.get("sig"), str):
        raise ValueError('"signature" is not {"key_id": ..., "sig": ...}')
    by_id = {keys.key_id(k): k for k in trusted}
    key = by_id.get(signature["key_id"])
    if key is None:
        raise ValueError(f"signed by key {signature['key_id'][:16]}, which is not among the trusted keys")
    try:
        der = base64.b64decode(signature["sig"], validate=True)
        key.verify(der, canonical(receipt), keys.ecdsa(key))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ValueError(f"bad signature (key {signature['key_id'][:16]}): the receipt was altered "
                         "or not signed by that key") from None
    return str(signature["key_id"])


# --- writing --------------------------------------------------------------------------


class ReceiptLog:
    """Appends receipts to ROOT/receipts.jsonl; use `record` as (or in) a pull's on_event."""

    def __init__(self, root: str | Path, host: str | None = None,
                 key: ec.EllipticCurvePrivateKey | str | Path | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.path = self.root / RECEIPTS_FILE
        self.host = check_host(socket.gethostname() if host is None else host)
        if key is None or isinstance(key, ec.EllipticCurvePrivateKey):
            self.key = key
        else:
            self.key = keys.load_private_key(Path(key), keys.passphrase(None), option="--host-key")

    def record(self, event: Mapping[str, Any]) -> None:
        """Append the receipt of a switched or rolled_back event; other events are ignored."""
        receipt = self.receipt(event)
        if receipt is not None:
            self.append(receipt)

    __call__ = record

    def receipt(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The receipt for an event (signed when there is a host key), or None for other events."""
        action = ACTIONS.get(str(event.get("event")))
        if action is None:
            return None
        model, version = str(event["model"]), str(event["version"])
        previous = event.get("from_version") if action == "rollback" else event.get("previous")
        # Events without digests or signer (a removal, or a caller's own event): state.json has them.
        on_disk = self._state_record(model, version) if not event.get("sha256") or "signed_by" not in event else None
        signed_by = event.get("signed_by", on_disk.signed_by if on_disk else None)
        verified = event.get("verified", signed_by is not None)
        receipt: dict[str, Any] = {
            "host": self.host, "model": model, "version": version, "previous": previous,
            "role": str(event.get("role") or "current"), "action": action,
            "stage": event.get("stage"), "registry_commit": event.get("registry_commit"),
            "artifacts": dict(event.get("sha256") or (on_disk.sha256 if on_disk else {})),
            "signed_by": signed_by, "verified": bool(verified),
            "servers": list(event.get("servers") or []),
            "time": str(event.get("time") or now_iso()), "recorded_at": now_iso(),
        }
        if action == "rollback" and event.get("reason"):
            receipt["reason"] = str(event["reason"])
        if self.key is not None:
            receipt["signature"] = sign(receipt, self.key)
        return receipt

    def _state_record(self, model: str, version: str) -> VersionRecord | None:
        """What state.json records of a version (through the pull's own reader), if it can be read."""
        try:
            state = ServingDir(self.root).read_state()
        except (RegistryError, OSError):
            return None
        return state.record(model, version) if state is not None else None

    def append(self, receipt: Mapping[str, Any]) -> None:
        """One write of one whole line (O_APPEND), fsynced; after a torn line, a fresh line first."""
        line = json.dumps(receipt, sort_keys=True).encode() + b"\n"  # ASCII: one line, whatever it says
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise self._error(receipt, exc) from None
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer was killed mid-line: leave its fragment on a line of its own
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(0, f"only {written} of {len(line)} bytes written (disk full?)")
            os.fsync(fd)
        except OSError as exc:
            raise self._error(receipt, exc) from None
        finally:
            os.close(fd)
        if size == 0:
            fsync_dir(self.root)

    def _error(self, receipt: Mapping[str, Any], exc: OSError) -> ReceiptError:
        return ReceiptError(
            f"{self.path}: cannot append the receipt of {receipt['model']}@{receipt['version']} "
            f"({exc.strerror or exc}); the {receipt['action']} itself happened. Free space or fix "
            "the permissions of the serving folder")


def check_host(host: str) -> str:
    if not host or len(host) > 253 or any(c.isspace() or not c.isprintable() for c in host):
        raise UsageError(f"--host {host!r}: give the host's name (letters, digits, dots, dashes; no spaces)")
    return host


# --- reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """One receipt as read from a file, with where it was and whether its signature was checked."""

    data: Mapping[str, Any]
    time: dt.datetime
    source: str  # file:line
    file_order: int  # position across the files read (ties in time keep file order)
    signature: str  # "valid" (a trusted key), "unchecked" (no keys given, signed), "unsigned"

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


@dataclass
class Reading:
    receipts: list[Receipt] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # malformed, refused
    warnings: list[Problem] = field(default_factory=list)  # torn last lines


def parse_time(text: str, option: str = "--at") -> dt.datetime:
    """ISO 8601 with or without a zone (none means UTC), or a date (its start, 00:00 UTC)."""
    value = text.strip()
    if value.lower() == "now":
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a time; give ISO 8601 such as 2026-12-06T07:30:00Z, "
                         "2026-12-06T08:30+01:00, 2026-12-06 07:30 (UTC) or a date 2026-12-06") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def read_receipts(paths: Iterable[Path], trusted: Sequence[ec.EllipticCurvePublicKey] | None = None) -> Reading:
    """Every receipt in the files, in order. A line that is not a receipt is a problem (file:line);
    a torn last line a warning. With trusted keys an unsigned or badly signed receipt is a
    problem and left out. A file that cannot be read raises RegistryError (exit 1)."""
    reading = Reading()
    order = 0
    for path in paths:
        for number, line, last in _lines(path):
            where = f"{path}:{number}"
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                if last and not line.endswith("\n"):
                    reading.warnings.append(Problem(str(path), "torn last line (a writer was stopped "
                                                    "mid-write); skipped", number))
                elif _cut_short(line, exc):
                    reading.warnings.append(Problem(str(path), "torn line (a writer was stopped "
                                                    "mid-write); skipped", number))
                else:
                    reading.problems.append(Problem(str(path), f"not JSON ({getattr(exc, 'msg', exc)}); skipped", number))
                continue
            try:
                moment = _validate(data)
            except ValueError as exc:
                reading.problems.append(Problem(str(path), f"not a receipt: {exc}; skipped", number))
                continue
            status = "unsigned" if data.get("signature") is None else "unchecked"
            if trusted is not None:
                try:
                    check_signature(data, trusted)
                    status = "valid"
                except ValueError as exc:
                    reading.problems.append(Problem(str(path), f"refused: {exc}", number))
                    continue
            order += 1
            reading.receipts.append(Receipt(data, moment, where, order, status))
    return reading


def _cut_short(line: str, exc: ValueError) -> bool:
    """Whether a line that is not JSON is the start of a receipt cut short (a torn write that a later
    append left on a line of its own), rather than something else written in the file."""
    if not isinstance(exc, json.JSONDecodeError) or not line.startswith('{"'):
        return False
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(line.rstrip())


def _lines(path: Path) -> Iterable[tuple[int, str, bool]]:
    try:
        if path.is_dir():
            raise RegistryError(f"{path}: is a folder; give receipts files (DIR/{RECEIPTS_FILE})")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such receipts file (a pull with receipts writes "
                            f"DIR/{RECEIPTS_FILE})") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from None
    # Lines end at "\n" only (str.splitlines would also cut at U+2028 and friends inside a value).
    parts = raw.decode("utf-8", errors="replace").split("\n")
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for number, line in enumerate(lines, start=1):
        yield number, line, number == len(lines)


def _validate(data: Any) -> dt.datetime:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for key in _REQUIRED:
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f'"{key}" missing or not a string')
    if data["action"] not in ACTIONS.values():
        raise ValueError(f'"action" {data["action"]!r} is not switch, rollback or remove')
    try:
        moment = dt.datetime.fromisoformat(data["time"])
    except ValueError:
        raise ValueError(f'"time" {data["time"]!r} is not ISO 8601') from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


# --- the answer -----------------------------------------------------------------------


def served_at(receipts: Iterable[Receipt], at: dt.datetime, *, model: str | None = None,
              host: str | None = None) -> list[Receipt]:
    """For each (host, model, role): the last receipt at or before `at` — the version served then."""
    latest: dict[tuple[str, str, str], Receipt] = {}
    for receipt in sorted(receipts, key=lambda r: (r.time, r.file_order)):
        if receipt.time > at:
            continue
        if (model is not None and receipt["model"] != model) or (host is not None and receipt["host"] != host):
            continue
        latest[(receipt["host"], receipt["model"], receipt["role"])] = receipt
    # A model (or its canary) that left the stage was served by no one after its remove receipt.
    return [latest[k] for k in sorted(latest) if latest[k]["action"] != "remove"]


def as_json(receipt: Receipt) -> dict[str, Any]:
    """One row of `registry served --json`."""
    data = receipt.data
    return {
        "host": data["host"], "model": data["model"], "role": data["role"], "version": data["version"],
        "since": data["time"], "action": data["action"], "previous": data.get("previous"),
        "stage": data.get("stage"), "registry_commit": data.get("registry_commit"),
        "signed_by": data.get("signed_by"), "verified": data.get("verified"),
        "servers": data.get("servers", []), "receipt": receipt.source,
        "receipt_signature": receipt.signature,
        "receipt_key_id": (data.get("signature") or {}).get("key_id"),
    }
