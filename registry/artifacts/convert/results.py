"""What a conversion reports: the tensors written, and why an input was refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.artifacts import scan
from registry.errors import Problem, ValidationError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    """The safetensors dtype code (``F32``, ``BF16``...)."""
    shape: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class Conversion:
    """A finished, verified conversion."""

    source: str
    output: str
    source_format: str
    """What the scan identified the input as: ``torch-zip``, ``torch-legacy``, ``pickle``."""
    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]
    size: int
    sha256: str
    shared_storage: tuple[tuple[str, ...], ...]
    """Groups of tensors that shared one storage in the input (written as copies)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "format": self.source_format,
            "tensors": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes}
                for t in self.tensors
            ],
            "metadata": dict(self.metadata),
            "size": self.size,
            "sha256": self.sha256,
            "shared_storage": [list(group) for group in self.shared_storage],
        }


class UnsafeInputError(ValidationError):
    """The security scan refused the input; ``findings`` says why."""

    def __init__(self, path: str, findings: tuple[scan.Finding, ...], kind: str = "") -> None:
        self.findings = findings
        if kind in ("unknown", "text", "gguf", "protobuf", "npy", "empty"):
            # Raw tensor bytes (a .pt2 archive's weights, say) hold no code: the scan
            # could not tell what they are, and convert reads only checkpoints.
            why = (
                f"refused: the security scan could not show this file safe to read "
                f"({kind} content, not a PyTorch checkpoint or pickle convert reads), so "
                "it is not read; nothing was written"
            )
        else:
            why = (
                "refused: the security scan could not show that unpickling this file runs "
                "no code (findings below), so it is not read; nothing was written"
            )
        super().__init__([Problem(path, why), *(Problem(_where(f), _what(f)) for f in findings)])


def _where(finding: scan.Finding) -> str:
    where = finding.path if finding.member is None else f"{finding.path}!{finding.member}"
    return where if finding.offset is None else f"{where}@{finding.offset}"


def _what(finding: scan.Finding) -> str:
    if finding.global_name:
        return f"{finding.global_name}: {finding.message}"
    return finding.message

