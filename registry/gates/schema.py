"""schema gate: every registry YAML file the PR adds or changes validates against its schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.gates.result import GateResult
from registry.queries.validate import kind_of

if TYPE_CHECKING:
    from registry.gates.run import CheckContext


def _owner(path: str) -> tuple[str | None, str | None]:
    parts = path.split("/")
    model = parts[1] if len(parts) > 2 and parts[0] == "models" else None
    version = parts[2] if len(parts) > 3 else None
    return model, version


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    for change in ctx.changes:
        kind = kind_of(change.path)
        if change.status == "D" or kind is None:
            continue
        text = ctx.read(ctx.head, change.path)
        if text is None:
            continue
        model, version = _owner(change.path)
        problems = ctx.schema_problems(kind, text, change.path)
        if problems:
            results += [GateResult("schema", model, version, "fail", str(p), p.path, p.line) for p in problems]
        else:
            results.append(GateResult("schema", model, version, "pass", f"{change.path} is valid", change.path))
    if not results:
        results.append(GateResult("schema", None, None, "skip", "no registry YAML file changed"))
    return results
