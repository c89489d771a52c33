"""What a file is, for the format gate: the scan's own identification, plus ONNX.

`scan.identify_file` names what the bytes are to the loaders; ONNX models are told
apart from other protobuf files here.
"""

from __future__ import annotations

from registry.artifacts import scan
from registry.artifacts.sniff import StrPath, is_onnx_model, open_regular

__all__ = ["sniff"]


def sniff(path: StrPath) -> str:
    """Name a file's format from its bytes, whatever its extension says: the security
    scan's own identification (`scan.identify_file`), so the two gates never
    disagree on what a file is. A protobuf file whose top-level fields walk cleanly
    as a ModelProto with an ir_version and a graph is "onnx" (no onnx package needed).
    """
    kind = scan.identify_file(path)
    if kind == "protobuf":
        with open_regular(path) as (handle, size):
            if is_onnx_model(handle, size):
                return "onnx"
    return kind
