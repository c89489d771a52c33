"""The state of one file's scan: findings, the limits and what they have used."""

from __future__ import annotations

from registry.artifacts.scan.results import Finding, ScanLimits, ScanReport


class _Refused(Exception):
    """A limit was hit: the layer being read is refused."""


def _join(member: str | None, name: str) -> str:
    return name if member is None else f"{member}!{name}"


class _ScanBase:
    """The scan of one file: its findings and the budget it has used. The layers that
    hold other content hand it back to `content` (what `_Scan` implements)."""

    def __init__(self, path: str, allowed: frozenset[str], limits: ScanLimits) -> None:
        self.path = path
        self.allowed = allowed
        self.limits = limits
        self.findings: list[Finding] = []
        self.dropped = 0
        self.inflated = 0
        self.members = 0

    def flag(
        self, member: str | None, offset: int | None, message: str, global_name: str | None = None
    ) -> None:
        if len(self.findings) >= self.limits.max_findings:
            self.dropped += 1
            return
        self.findings.append(Finding(self.path, member, offset, global_name, message))

    def report(self, kind: str) -> ScanReport:
        findings = list(self.findings)
        if self.dropped:
            findings.append(
                Finding(self.path, None, None, None, f"{self.dropped} more findings not listed")
            )
        return ScanReport(self.path, tuple(findings), kind)

    def enter(self, member: str | None, depth: int, what: str) -> bool:
        if depth >= self.limits.max_depth:
            self.flag(member, None, f"{what} nested more than {self.limits.max_depth} levels deep")
            return False
        return True

    def count_members(self, member: str | None, count: int) -> bool:
        self.members += count
        if self.members > self.limits.max_members:
            self.flag(member, None, f"more than {self.limits.max_members} archive members")
            return False
        return True

    def charge(self, size: int) -> None:
        self.inflated += size
        if self.inflated > self.limits.max_total_bytes:
            raise _Refused(
                f"more than {self.limits.max_total_bytes} decompressed bytes (decompression bomb?)"
            )

    def content(
        self, view: memoryview, member: str | None, depth: int, *, zfile: bool = True
    ) -> str:
        """Identify ``view`` the way the loaders would and scan it accordingly."""
        raise NotImplementedError

    def pickle_file(self, view: memoryview, member: str | None, pos: int) -> str:
        """Scan ``view`` from ``pos`` as a pickle, whatever it looks like."""
        raise NotImplementedError
