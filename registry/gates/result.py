"""What a gate answers: one GateResult per finding, and the marker for bytes not on this machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# How a gate says an artifact's bytes are not on this machine (not pulled from DVC): `check`
# then says to run `registry fetch` first.
NOT_AVAILABLE = "not available"


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
