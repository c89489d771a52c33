"""scan gate: every artifact of a checked version is scanned opcode by opcode; nothing is unpickled.

Anything that could run code on load (a global outside the allow-list, malformed or
unknown content) fails, naming the file, the archive member, the global and the
byte offset. Models are run by later gates only when this gate passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.artifacts import scan
from registry.errors import ValidationError
from registry.gates.common import checked_folders
from registry.gates.result import NOT_AVAILABLE, GateResult

if TYPE_CHECKING:
    from registry.gates.run import CheckContext


def run(ctx: CheckContext) -> list[GateResult]:
    results: list[GateResult] = []
    try:
        scan.allow_list(ctx.config.allow_globals, profiles=ctx.config.scan_profiles)
    except ValidationError as exc:
        return [GateResult("scan", None, None, "fail", str(exc), "registry.yaml")]
    for checked in checked_folders(ctx, "scan", results):
        model, version, folder = checked.model, checked.version, checked.folder
        entrypoint = checked.card.data.get("entrypoint")
        for artifact in checked.card.artifacts:
            rel = f"models/{model}/{version}/{artifact.path}"
            if not (folder / artifact.path).is_file():
                results.append(GateResult("scan", model, version, "fail", f"{rel}: {NOT_AVAILABLE} to scan", rel))
                continue
            report = scan.scan_file(
                folder / artifact.path, ctx.config.allow_globals, profiles=ctx.config.scan_profiles
            )
            if report.safe and artifact.path == entrypoint:
                # Not "nothing executable": it is the model's code, run on purpose, only in the sandbox.
                results.append(GateResult("scan", model, version, "pass",
                                          f"{rel}: model code (the card's entrypoint): no loader runs it; the "
                                          "smoke, latency and metrics gates run it in their sandbox", rel))
                continue
            if report.safe:
                results.append(GateResult("scan", model, version, "pass", f"{rel}: {report.kind}, nothing executable", rel))
                continue
            for finding in report.findings:
                shown = str(finding).replace(str(folder / artifact.path), rel, 1)
                results.append(GateResult("scan", model, version, "fail", shown, rel))
    if not results:
        results.append(GateResult("scan", None, None, "skip", "no version to scan"))
    return results
