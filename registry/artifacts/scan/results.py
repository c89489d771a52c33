"""What a scan reports (findings per file) and the bounds it keeps to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Finding:
    """One reason a file is unsafe.

    ``member`` names where inside the file: archive members and decompression layers
    from the outside in, joined by ``!`` (``inner.zip!payload.pkl``,
    ``[gzip]!model/evil.pkl``). ``offset`` is a byte offset in the innermost member
    (after decompression). ``global_name`` is the offending ``module.qualname``.
    """

    path: str
    member: str | None
    offset: int | None
    global_name: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.member is None else f"{self.path}!{self.member}"
        if self.offset is not None:
            where = f"{where}@{self.offset}"
        what = f"{self.global_name}: {self.message}" if self.global_name else self.message
        return f"{where}: {what}"


@dataclass(frozen=True)
class ScanReport:
    """The scan of one file. ``kind`` is what its bytes were identified as, outer
    layers first (``gzip/joblib``, ``torch-zip``, ``unknown``)."""

    path: str
    findings: tuple[Finding, ...]
    kind: str

    @property
    def safe(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep a hostile file from costing unbounded time or memory."""

    max_total_bytes: int = 4 * 1024**3  # decompressed bytes, over the whole file
    max_ratio: int = 200  # decompressed / compressed ...
    ratio_floor: int = 16 * 1024**2  # ... checked once a stream has produced this much
    max_members: int = 100_000  # archive members, over the whole file
    max_depth: int = 4  # nested archives and compression layers
    max_findings: int = 200  # per file; the rest are counted in one last finding
    max_pickle_nesting: int = 16  # pickles inside pickles (joblib object arrays)
    max_marks: int = 1_000_000  # open MARKs in one pickle


DEFAULT_LIMITS: Final = ScanLimits()
