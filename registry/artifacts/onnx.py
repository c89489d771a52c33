"""The format gate's ONNX check: the ONNX checker, or a skip when onnx is not installed."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from registry.artifacts.sniff import StrPath, open_regular
from registry.errors import ValidationError

__all__ = ["ONNX_MISSING", "FormatCheck", "check_onnx"]

ONNX_MISSING = "onnx not installed; pip install gitops-registry[onnx]"



@dataclass(frozen=True)
class FormatCheck:
    """Outcome of a checker that may have nothing to check with (status "skip")."""

    path: str
    format: str
    status: Literal["pass", "skip"]
    message: str



def _import_optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def check_onnx(path: StrPath, *, full_check: bool = True) -> FormatCheck:
    """Run the ONNX checker on the file (by path, so models over 2 GiB and external
    data work); skip with a reason when onnx is not installed.

    `full_check` adds ONNX shape inference, which catches wiring the structural check
    misses (incompatible shapes) and costs little next to loading the model.
    """
    with open_regular(path):
        pass
    checker = _import_optional("onnx.checker")
    inference = _import_optional("onnx.shape_inference")
    if checker is None or inference is None:
        return FormatCheck(str(path), "onnx", "skip", ONNX_MISSING)
    try:
        checker.check_model(os.fspath(path), full_check=full_check)
    except (checker.ValidationError, inference.InferenceError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ValidationError.one(path, f"ONNX checker: {detail}") from None
    kind = "full check with shape inference" if full_check else "structural check"
    return FormatCheck(str(path), "onnx", "pass", f"ONNX checker passed ({kind})")

