"""The pull-request gates: one module per gate, each with `run(ctx) -> list[GateResult]`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from registry.cards import Card
    from registry.check import CheckContext


@dataclass(frozen=True)
class GateResult:
    gate: str
    model: str | None
    version: str | None
    status: str  # "pass" | "fail" | "skip"
    message: str
    file: str | None = None
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"gate": self.gate, "model": self.model, "version": self.version,
                               "status": self.status, "message": self.message}
        if self.file:
            out["file"] = self.file
        if self.line:
            out["line"] = self.line
        return out


GateFn = Callable[["CheckContext"], list[GateResult]]


def load(name: str) -> GateFn:
    module = importlib.import_module(f"registry.gates.{name}")
    return module.run  # type: ignore[no-any-return]


def located(problem_path: str, line: int | None, message: str) -> str:
    return f"{problem_path}:{line}: {message}" if line else f"{problem_path}: {message}"


@dataclass(frozen=True)
class CheckedVersion:
    model: str
    version: str
    target: str | None
    card: Card
    folder: Path


def checked_folders(ctx: CheckContext, gate: str, results: list[GateResult]) -> list[CheckedVersion]:
    """The versions a gate looks at, with their card and files on disk.

    A version whose files cannot be fetched gets a failing result for this gate instead.
    """
    from registry.errors import RegistryError

    found = []
    for model, version, target in ctx.checked_versions():
        card = ctx.card_at(ctx.head, model, version)
        if card is None:
            continue  # the schema gate reports an invalid card
        try:
            folder = ctx.version_folder(model, version)
        except RegistryError as exc:
            results.append(GateResult(gate, model, version, "fail", f"cannot fetch the artifacts: {exc}"))
            continue
        found.append(CheckedVersion(model, version, target, card, folder))
    return found
