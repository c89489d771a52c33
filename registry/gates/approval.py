"""approval gate: who must approve this PR (from CODEOWNERS), and CODEOWNERS is up to date.

Approval itself is enforced by GitHub: branch protection with "require review from
code owners" plus the generated CODEOWNERS. This gate makes sure CODEOWNERS says
what registry.yaml roles and model owners say, and tells the reviewer who is needed.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from registry import codeowners
from registry.gates import GateResult

if TYPE_CHECKING:
    from registry.check import CheckContext


def owners_for(rules: list[tuple[str, list[str]]], path: str) -> list[str]:
    """The owners of path under CODEOWNERS semantics: the last matching rule wins."""
    found: list[str] = []
    for pattern, owners in rules:
        if _matches(pattern, path):
            found = owners
    return found


def _matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    anchored = pattern.startswith("/")
    pattern = pattern.lstrip("/")
    if pattern.endswith("/"):
        return path.startswith(pattern) if anchored else ("/" + path).find("/" + pattern) >= 0
    return fnmatch.fnmatch(path, pattern) or (not anchored and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern))


def run(ctx: CheckContext) -> list[GateResult]:
    expected = codeowners.generate_at(ctx, ctx.head)
    actual = (ctx.read(ctx.head, codeowners.CODEOWNERS_FILE) or b"").decode(errors="replace")
    if expected != actual:
        return [GateResult("approval", None, None, "fail",
                           f"{codeowners.CODEOWNERS_FILE} is out of date with registry.yaml roles and model owners; "
                           "run `registry codeowners` and commit the result", codeowners.CODEOWNERS_FILE)]
    rules = codeowners.parse(expected)
    needed: dict[str, list[str]] = {}
    for change in ctx.changes:
        owners = owners_for(rules, change.path)
        key = ", ".join(owners) if owners else "(nobody: add roles.admin or model owners)"
        needed.setdefault(key, []).append(change.path)
    if not needed:
        return [GateResult("approval", None, None, "skip", "nothing changed")]
    results = []
    for who, paths in sorted(needed.items()):
        status = "fail" if who.startswith("(nobody") else "pass"
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        results.append(GateResult("approval", None, None, status,
                                  f"needs approval from one of {who} for {shown} "
                                  "(CODEOWNERS; enforced by branch protection)"))
    return results
