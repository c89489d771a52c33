"""immutability gate: nothing under an already-merged version folder changes or disappears."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry import cards
from registry.gates import GateResult
from registry.repo import MODELS_DIR

if TYPE_CHECKING:
    from registry.check import CheckContext


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    merged: dict[tuple[str, str], bool] = {}
    for change in ctx.changes:
        parts = change.path.split("/")
        if parts[0] != MODELS_DIR or len(parts) < 4:
            continue
        key = (parts[1], parts[2])
        card = f"{MODELS_DIR}/{key[0]}/{key[1]}/{cards.CARD_FILE}"
        if key not in merged:
            merged[key] = ctx.read(ctx.merge_base, card) is not None or ctx.read(ctx.base, card) is not None
        if not merged[key]:
            continue
        verb = {"A": "adds", "D": "deletes"}.get(change.status, "changes")
        results.append(GateResult(
            "immutability", key[0], key[1], "fail",
            f"{change.path}: {verb} a file of {key[0]}@{key[1]}, which is already merged; "
            "versions never change after merge: register a new version instead", change.path))
    if not results:
        results.append(GateResult("immutability", None, None, "pass", "no merged version is modified"))
    return results
