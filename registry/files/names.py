"""Model names and semantic versions: validated once at the boundary, typed after."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from registry.errors import UsageError

MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# semver.org's grammar, without a leading "v" and without build metadata: 1.0.0+a and 1.0.0+b
# have the same precedence as 1.0.0, so two folders could claim one version.
SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?",
    re.ASCII,  # \d must not match look-alike digits such as Arabic-Indic '٠'
)
BUILD_METADATA_HINT = (
    "build metadata (+...) is not allowed: versions that differ only in it have equal precedence; "
    "use a pre-release (1.0.0-build.7) or a new version"
)
STAGES = ("production", "canary", "staging", "deprecated", "archived")
ALL_STAGES = ("development", *STAGES)


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        foreign = [c for c in name if not c.isascii()] if isinstance(name, str) else []
        hint = f"; {foreign[0]!r} is U+{ord(foreign[0]):04X}, not an ASCII character" if foreign else ""
        raise UsageError(
            f"invalid model name {name!r}: use 1-64 lowercase ASCII letters, digits and '-', "
            f"starting with a letter or digit (e.g. credit-approval){hint}"
        )
    return name


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[int | str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = SEMVER_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            if isinstance(text, str) and "+" in text and SEMVER_RE.fullmatch(text.partition("+")[0]):
                raise UsageError(f"invalid version {text!r}: {BUILD_METADATA_HINT}")
            foreign = [c for c in text if not c.isascii()] if isinstance(text, str) else []
            hint = f"; {foreign[0]!r} is U+{ord(foreign[0]):04X}, not an ASCII character" if foreign else ""
            raise UsageError(
                f"invalid version {text!r}: use a semantic version such as 1.2.0 or 1.3.0-rc.1{hint}"
            )
        major, minor, patch, pre = match.groups()
        prerelease = tuple(int(p) if p.isdigit() else p for p in pre.split(".")) if pre else ()
        return cls(int(major), int(minor), int(patch), prerelease)

    @classmethod
    def is_valid(cls, text: object) -> bool:
        return isinstance(text, str) and SEMVER_RE.fullmatch(text) is not None

    def sort_key(self) -> tuple[object, ...]:
        return self._key()

    def _key(self) -> tuple[object, ...]:
        # semver precedence: a pre-release sorts before its release; numeric ids before alphanumeric.
        pre = tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def bump(self, part: str) -> Version:
        if part == "major":
            return Version(self.major + 1, 0, 0)
        if part == "minor":
            return Version(self.major, self.minor + 1, 0)
        if part == "patch":
            if self.prerelease:
                return Version(self.major, self.minor, self.patch)
            return Version(self.major, self.minor, self.patch + 1)
        raise UsageError(f"invalid bump {part!r}: use major, minor or patch")

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        return text


def check_version(text: str) -> str:
    Version.parse(text)
    return text


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name@version`` (version optional) and validate both parts."""
    name, sep, version = ref.partition("@")
    check_model_name(name)
    if sep:
        check_version(version)
        return name, version
    return name, None
