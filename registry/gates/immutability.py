"""immutability gate: nothing under an already-merged version folder changes or disappears."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry import cards
from registry.gates import GateResult
from registry.repo import MODELS_DIR

if TYPE_CHECKING:
    from registry.check import CheckContext


def _only_purge_mark(ctx: CheckContext, path: str) -> bool:
    """gc may add `purged:` to a merged card; nothing else in it may change."""
    from registry import yamlio
    from registry.errors import ValidationError

    try:
        before = yamlio.loads(ctx.read(ctx.merge_base, path) or ctx.read(ctx.base, path) or b"")
        after = yamlio.loads(ctx.read(ctx.head, path) or b"")
    except ValidationError:
        return False
    if not isinstance(before, dict) or not isinstance(after, dict) or "purged" in before:
        return False
    rest = {k: v for k, v in after.items() if k != "purged"}
    return "purged" in after and rest == before


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
        if change.path.endswith("/signature.json") and change.status in ("A", "M"):
            # Signing after review: the signature gate verifies it against the trusted keys.
            results.append(GateResult("immutability", key[0], key[1], "pass",
                                      f"{change.path}: a signature for the merged version (verified by the "
                                      "signature gate)", change.path))
            continue
        if change.path.endswith("/card.yaml") and change.status == "M" and _only_purge_mark(ctx, change.path):
            results.append(GateResult("immutability", key[0], key[1], "pass",
                                      f"{change.path}: only the retention policy's purge mark is added", change.path))
            continue
        verb = {"A": "adds", "D": "deletes"}.get(change.status, "changes")
        results.append(GateResult(
            "immutability", key[0], key[1], "fail",
            f"{change.path}: {verb} a file of {key[0]}@{key[1]}, which is already merged; "
            "versions never change after merge: register a new version instead", change.path))
    if not results:
        results.append(GateResult("immutability", None, None, "pass", "no merged version is modified"))
    return results
