"""Model-server adapters that `registry pull --server KIND=URL` drives after a verified switch.

An adapter moves one model server from the version it serves to the version the pull
just verified and switched `DIR/<name>/current` to. The pull client calls, per model
that switched:

    adapter.apply(change)     # load the new version, check readiness and the card's
                              # input_example, make it the default, unload the old one

If `apply` raises `AdapterError`, the adapter has already put the server back on
`change.previous` (as far as it could; the message says what it did), and the pull
client points `current` back at the previous folder, emits a `failed` event and
leaves the previous version serving. If a *later* model of the same all-or-nothing
pull fails, the client calls `adapter.revert(change)` for every change already
applied, newest first, so that every server goes back to what it served before.

Kinds: `torchserve` (management API, a `.mar` per version), `v2` (the Open Inference
Protocol model-repository API: MLServer, KServe's Python server, Triton), `http` (POST a
JSON event) and `command` (run a command), for servers that reload by themselves.
A spec is `KIND=URL` with optional `,key=value` settings after the URL
(`v2=http://127.0.0.1:8080,repository=/srv/mlserver-models`).
"""

from __future__ import annotations

import importlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from registry.errors import RegistryError, UsageError

__all__ = ["KINDS", "Adapter", "AdapterError", "Change", "ServerSpec", "make_adapter", "parse_spec", "public_url"]

# kind -> module under registry.serving.adapters that defines `from_spec(spec) -> Adapter`.
KINDS: Mapping[str, str] = {"torchserve": "torchserve", "v2": "v2", "http": "notify", "command": "notify"}


class AdapterError(RegistryError):
    """A model server did not take the new version; the message says which step failed and what serves now."""


@dataclass(frozen=True)
class Change:
    """One model moving from `previous` to `version` on a server (a switch, or a rollback's reverse)."""

    model: str
    version: str
    folder: Path                      # DIR/<name>/versions/<version>: verified, never written to
    previous: str | None              # the version served before (None: the model is new here)
    previous_folder: Path | None      # DIR/<name>/versions/<previous>, kept on disk by the pull
    card: Mapping[str, Any]           # the version's card.yaml, parsed (input_example, entrypoint...)
    stage: str
    registry_commit: str
    traffic: float | None = None      # the canary share, for a canary assignment
    sha256: Mapping[str, str] = field(default_factory=dict)  # artifact path -> digest, as verified


class Adapter(Protocol):
    """What the pull client needs from a model server."""

    kind: str
    url: str

    def apply(self, change: Change) -> None:
        """Make `change.version` the version the server answers with; on failure restore `previous` and raise AdapterError."""

    def revert(self, change: Change) -> None:
        """Undo an `apply` that succeeded (another model of the same pull failed); raise AdapterError if it cannot."""


@dataclass(frozen=True)
class ServerSpec:
    """`KIND=URL[,key=value...]` as given to `--server`."""

    kind: str
    url: str
    options: Mapping[str, str]
    text: str


def parse_spec(text: str) -> ServerSpec:
    """Parse one `--server` value; a usage error names what is wrong and what the forms are."""
    kind, sep, rest = text.partition("=")
    kind = kind.strip()
    forms = "torchserve=URL, v2=URL,repository=DIR, http=URL or command=PROGRAM"
    if not sep or kind not in KINDS:
        raise UsageError(f"--server {text!r}: give one of {forms}")
    url, *settings = rest.split(",") if kind != "command" else [rest]
    if not url.strip():
        raise UsageError(f"--server {text!r}: {kind} needs a {'command' if kind == 'command' else 'URL'} after '='")
    options: dict[str, str] = {}
    for setting in settings:
        key, eq, value = setting.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--server {text!r}: {setting!r} is not key=value")
        options[key.strip()] = value.strip()
    return ServerSpec(kind, url.strip(), options, text)


def make_adapter(spec: ServerSpec | str) -> Adapter:
    """The adapter for a spec (its module loads only when used)."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    module = importlib.import_module(f"registry.serving.adapters.{KINDS[spec.kind]}")
    adapter: Adapter = module.from_spec(spec)
    return adapter


def public_url(url: str) -> str:
    """A server's URL as events, receipts and messages show it: without user:password, and with a
    query (which may hold a token) shown as "…"."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path,
                                    "…" if parts.query else "", ""))
