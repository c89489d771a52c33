"""immutability gate: nothing under an already-merged version folder changes or disappears.

Two additions are allowed: a signature (verified by the signature gate) and gc's `purged:`
mark, and the mark only where the base branch's retention policy allows the purge (never a
version in production, canary, staging or deprecated): the same rule `registry gc` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.files import cards
from registry.gates.result import GateResult
from registry.repo.registry import MODELS_DIR

if TYPE_CHECKING:
    from registry.gates.run import CheckContext


def _only_purge_mark(ctx: CheckContext, path: str) -> bool:
    """gc may add `purged:` to a merged card; nothing else in it may change."""
    from registry.errors import ValidationError
    from registry.files import yamlio

    try:
        before = yamlio.loads(ctx.read(ctx.merge_base, path) or ctx.read(ctx.base, path) or b"")
        after = yamlio.loads(ctx.read(ctx.head, path) or b"")
    except ValidationError:
        return False
    if not isinstance(before, dict) or not isinstance(after, dict) or "purged" in before:
        return False
    rest = {k: v for k, v in after.items() if k != "purged"}
    return "purged" in after and rest == before


def _purge_refused(ctx: CheckContext, model: str, version: str, path: str) -> str | None:
    """Why the base branch's retention policy does not allow purging this version; None if it does.

    The same rule `registry gc` proposes by, with base's registry.yaml and base's stages (and the
    stage the PR itself would give the version): a served version is never purged.
    """
    import datetime as dt

    from registry.changes import gc

    before = ctx.card_at(ctx.base, model, version) or ctx.card_at(ctx.merge_base, model, version)
    if before is None:
        return "the card on the base branch cannot be read"
    versions = [e.path.split("/")[2] for e in ctx.files_at(ctx.base, f"{MODELS_DIR}/{model}")
                if e.path.count("/") == 3 and e.path.endswith(f"/{cards.CARD_FILE}")]
    today = dt.date.today()
    for where, rev in (("the base branch", ctx.base), ("this change", ctx.head)):
        stage = ctx.stages_at(rev, model).stage_of(version)
        why = gc.keep_reason(ctx.config, version, stage, versions, str(before.data.get("created", "")), today)
        if why is not None:
            return f"{why} (stages on {where})"
    return None


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
            refused = _purge_refused(ctx, key[0], key[1], change.path)
            if refused is None:
                results.append(GateResult("immutability", key[0], key[1], "pass",
                                          f"{change.path}: only the retention policy's purge mark is added",
                                          change.path))
            else:
                results.append(GateResult(
                    "immutability", key[0], key[1], "fail",
                    f"{change.path}: adds a purged: mark, but the retention policy in the base branch's "
                    f"registry.yaml keeps {key[0]}@{key[1]}: {refused}; only `registry gc` proposes purges",
                    change.path))
            continue
        verb = {"A": "adds", "D": "deletes"}.get(change.status, "changes")
        results.append(GateResult(
            "immutability", key[0], key[1], "fail",
            f"{change.path}: {verb} a file of {key[0]}@{key[1]}, which is already merged; "
            "versions never change after merge: register a new version instead", change.path))
    for model, version in ctx.new_versions:
        new_card = ctx.card_at(ctx.head, model, version)
        if new_card is not None and "purged" in new_card.data:
            path = f"{MODELS_DIR}/{model}/{version}/{cards.CARD_FILE}"
            results.append(GateResult(
                "immutability", model, version, "fail",
                f"{path}: a new version carries gc's purged: mark; only `registry gc` marks a merged version "
                "purged, under the retention policy: remove the mark", path))
    if not results:
        results.append(GateResult("immutability", None, None, "pass", "no merged version is modified"))
    return results
