"""Driving model servers after a verified switch (`registry pull --server KIND=URL`).

Every change (a model's `current`, or its `canary` with --with-canary) is applied on
every server in the order given. When one server refuses (AdapterError), the servers
that already took a change of the same model are reverted, newest first, and the error
goes up: the pull client then points the links back and leaves the previous version
serving (`registry.serving.switch`). Adapters are idempotent (an `apply` of the version a
server already has only makes it the default), so a freshly started pull client applies
every served model once, whatever the folder says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import RegistryError, UsageError
from registry.files import cards
from registry.serving.adapters import (
    Adapter,
    AdapterError,
    Change,
    ServerSpec,
    make_adapter,
    public_url,
)

__all__ = ["Applied", "Driver", "label", "load_adapters", "read_card"]


def label(adapter: Adapter) -> str:
    """`kind=url`, as events, receipts and messages name a server: without what may be a secret
    (a URL's user:password and query, a command's arguments)."""
    url = adapter.url
    if "://" in url:
        url = public_url(url)
    elif adapter.kind == "command":
        program = url.split(maxsplit=1)
        url = program[0] + (" …" if len(program) > 1 else "") if program else url
    return f"{adapter.kind}={url}"


def load_adapters(servers: Sequence[str | ServerSpec | Adapter]) -> tuple[Adapter, ...]:
    """The adapters for `--server` values (spec strings, parsed specs or ready Adapter objects)."""
    adapters = []
    for server in servers:
        if not isinstance(server, str | ServerSpec):
            adapters.append(server)
            continue
        try:
            adapters.append(make_adapter(server))
        except ModuleNotFoundError as exc:
            raise UsageError(f"--server {server if isinstance(server, str) else server.text!r}: this adapter "
                             f"needs {exc.name}, which is not installed here") from None
    return tuple(adapters)


def read_card(folder: Path) -> Mapping[str, Any]:
    """A verified version folder's card, parsed (an empty mapping when it cannot be read)."""
    try:
        return cards.read_fields(folder)
    except (OSError, RegistryError):  # the folder was verified: a disk problem, which the adapter reports
        return {}


@dataclass(frozen=True)
class Applied:
    adapter: Adapter
    change: Change
    revertible: bool = True  # False for the re-apply of a version the folder already served


class Driver:
    """The servers one Puller drives."""

    def __init__(self, adapters: Sequence[Adapter]) -> None:
        self.adapters = tuple(adapters)
        self.labels = [label(a) for a in self.adapters]

    def __bool__(self) -> bool:
        return bool(self.adapters)

    def apply(self, changes: Sequence[tuple[Change, bool]]) -> list[Applied]:
        """Apply one model's changes ((change, revertible), ...) on every server; if one refuses,
        revert what this call applied (newest first) and raise its AdapterError."""
        done: list[Applied] = []
        for change, revertible in changes:
            for adapter in self.adapters:
                try:
                    adapter.apply(change)
                except Exception as exc:  # a third-party adapter's bug is a refusal too
                    text = str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"
                    if not text.startswith(f"{change.model}@"):  # the adapter did not say which: we do
                        text = f"{change.model}@{change.version}: {label(adapter)}: {text}"
                    problems = self.revert(done)
                    raise AdapterError("; ".join([text, *problems])) from None
                done.append(Applied(adapter, change, revertible))
        return done

    def revert(self, applied: Sequence[Applied]) -> list[str]:
        """Undo applied changes, newest first; what could not be undone, as messages."""
        problems = []
        for item in reversed(applied):
            if not item.revertible:
                continue
            try:
                item.adapter.revert(item.change)
            except Exception as exc:  # keep undoing the others
                problems.append(f"reverting {item.change.model}@{item.change.version} on {label(item.adapter)} "
                                f"failed too: {exc}")
        return problems
