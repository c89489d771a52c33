"""format gate: each artifact is what its bytes say it is, and well-formed.

safetensors headers are checked strictly without reading the tensors; ONNX models
pass the ONNX checker (skipped with a reason when `onnx` is not installed); pickles
and archives are left to the scan gate, which parses them opcode by opcode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.artifacts import identify, onnx, safetensors
from registry.errors import ValidationError
from registry.gates.common import checked_folders
from registry.gates.result import NOT_AVAILABLE, GateResult

if TYPE_CHECKING:
    from registry.gates.run import CheckContext

NOT_CHECKED_HERE = {
    "pickle", "zip", "pt2", "skops", "gzip", "bz2", "xz", "zlib", "lzma", "joblib-zfile", "npy", "tar", "hdf5"
}


def run(ctx: CheckContext) -> list[GateResult]:
    results: list[GateResult] = []
    for checked in checked_folders(ctx, "format", results):
        model, version, folder = checked.model, checked.version, checked.folder
        for artifact in checked.card.artifacts:
            rel = f"models/{model}/{version}/{artifact.path}"
            path = folder / artifact.path
            if not path.is_file():
                results.append(GateResult("format", model, version, "fail", f"{rel}: {NOT_AVAILABLE} to check", rel))
                continue
            kind = identify.sniff(path)
            try:
                if kind == "safetensors" or artifact.path.endswith(".safetensors"):
                    info = safetensors.validate_safetensors(path)
                    message = f"{rel}: valid safetensors ({info.tensor_count} tensors)"
                    results.append(GateResult("format", model, version, "pass", message, rel))
                elif kind == "onnx" or artifact.path.endswith(".onnx"):
                    check = onnx.check_onnx(path)
                    results.append(GateResult("format", model, version, check.status, f"{rel}: {check.message}", rel))
                elif kind in NOT_CHECKED_HERE:
                    results.append(GateResult("format", model, version, "pass",
                                              f"{rel}: {kind}; its contents are checked by the scan gate", rel))
                else:
                    results.append(GateResult("format", model, version, "pass", f"{rel}: {kind}", rel))
            except ValidationError as exc:
                for problem in exc.problems:
                    where = f"{rel}: {problem.field}: " if problem.field else f"{rel}: "
                    results.append(GateResult("format", model, version, "fail", where + problem.message, rel))
    if not results:
        results.append(GateResult("format", None, None, "skip", "no version to check"))
    return results
