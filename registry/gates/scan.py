"""scan gate: every artifact of a checked version is scanned opcode by opcode; nothing is unpickled.

Anything that could run code on load (a global outside the allow-list, malformed or
unknown content) fails, naming the file, the archive member, the global and the
byte offset. Models are run by later gates only when this gate passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry import scan
from registry.errors import RegistryError, ValidationError
from registry.gates import GateResult

if TYPE_CHECKING:
    from registry.check import CheckContext


def run(ctx: CheckContext) -> list[GateResult]:
    results = []
    try:
        scan.allow_list(ctx.config.allow_globals)
    except ValidationError as exc:
        return [GateResult("scan", None, None, "fail", str(exc), "registry.yaml")]
    for model, version, _target in ctx.checked_versions():
        card = ctx.card_at(ctx.head, model, version)
        if card is None:
            continue
        try:
            folder = ctx.version_folder(model, version)
        except RegistryError as exc:
            results.append(GateResult("scan", model, version, "fail", f"cannot fetch the artifacts: {exc}"))
            continue
        for artifact in card.artifacts:
            rel = f"models/{model}/{version}/{artifact.path}"
            report = scan.scan_file(folder / artifact.path, ctx.config.allow_globals)
            if report.safe:
                results.append(GateResult("scan", model, version, "pass", f"{rel}: {report.kind}, nothing executable", rel))
                continue
            for finding in report.findings:
                shown = str(finding).replace(str(folder / artifact.path), rel, 1)
                results.append(GateResult("scan", model, version, "fail", shown, rel))
    if not results:
        results.append(GateResult("scan", None, None, "skip", "no version to scan"))
    return results
