"""stages.yaml: which version holds which stage, and the rules for changing it.

The file's shape is fixed by the spec and written canonically, one line per stage,
so that a promotion is a one- or two-line diff a reviewer reads at a glance.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from registry.errors import Problem, RegistryError, ValidationError
from registry.files import yamlio
from registry.files.layout import STAGES_FILE as STAGES_FILE
from registry.files.names import SEMVER_RE

SCHEMA_REF = f"../../{yamlio.REPO_SCHEMA_DIR}/stages.schema.json"
_PLAIN = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]*")


@dataclass(frozen=True)
class Canary:
    version: str
    traffic: float


@dataclass(frozen=True)
class Deprecation:
    sunset: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Stages:
    production: str | None = None
    canary: Canary | None = None
    staging: tuple[str, ...] = ()
    deprecated: dict[str, Deprecation] = field(default_factory=dict)
    archived: tuple[str, ...] = ()

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> Stages:
        data = data or {}
        canary = data.get("canary")
        return cls(
            production=data.get("production"),
            canary=Canary(canary["version"], float(canary["traffic"])) if canary else None,
            staging=tuple(data.get("staging") or ()),
            deprecated={
                str(v): Deprecation((d or {}).get("sunset"), (d or {}).get("reason"))
                for v, d in (data.get("deprecated") or {}).items()
            },
            archived=tuple(data.get("archived") or ()),
        )

    def assignments(self) -> list[tuple[str, str]]:
        """(version, stage) pairs in file order; a version listed twice appears twice."""
        pairs: list[tuple[str, str]] = []
        if self.production:
            pairs.append((self.production, "production"))
        if self.canary:
            pairs.append((self.canary.version, "canary"))
        pairs += [(v, "staging") for v in self.staging]
        pairs += [(v, "deprecated") for v in self.deprecated]
        pairs += [(v, "archived") for v in self.archived]
        return pairs

    def stage_of(self, version: str) -> str:
        for held, stage in self.assignments():
            if held == version:
                return stage
        return "development"

    def versions_in(self, stage: str) -> list[str]:
        return [v for v, s in self.assignments() if s == stage]

    def without(self, version: str) -> Stages:
        return Stages(
            production=None if self.production == version else self.production,
            canary=None if self.canary and self.canary.version == version else self.canary,
            staging=tuple(v for v in self.staging if v != version),
            deprecated={v: d for v, d in self.deprecated.items() if v != version},
            archived=tuple(v for v in self.archived if v != version),
        )

    def with_stage(
        self,
        version: str,
        stage: str,
        *,
        traffic: float | None = None,
        sunset: str | None = None,
        reason: str | None = None,
    ) -> Stages:
        """A copy with version moved into stage (out of whatever it held)."""
        rest = self.without(version)
        if stage == "development":
            return rest
        if stage == "production":
            return replace(rest, production=version)
        if stage == "canary":
            return replace(rest, canary=Canary(version, traffic if traffic is not None else 0.1))
        if stage == "staging":
            return replace(rest, staging=(*rest.staging, version))
        if stage == "deprecated":
            return replace(rest, deprecated={**rest.deprecated, version: Deprecation(sunset, reason)})
        if stage == "archived":
            return replace(rest, archived=(*rest.archived, version))
        raise RegistryError(f"unknown stage {stage!r}")

    def as_dict(self) -> dict[str, Any]:
        """The ``stages`` object of ``ls --json``: only stages that are held."""
        out: dict[str, Any] = {}
        if self.production:
            out["production"] = self.production
        if self.canary:
            out["canary"] = {"version": self.canary.version, "traffic": self.canary.traffic}
        if self.staging:
            out["staging"] = list(self.staging)
        if self.deprecated:
            out["deprecated"] = {
                v: {k: x for k, x in (("sunset", d.sunset), ("reason", d.reason)) if x}
                for v, d in self.deprecated.items()
            }
        if self.archived:
            out["archived"] = list(self.archived)
        return out

    def to_text(self) -> str:
        lines = [yamlio.schema_header(SCHEMA_REF).rstrip("\n")]
        if self.production:
            lines.append(f"production: {_scalar(self.production)}")
        if self.canary:
            lines.append(
                f"canary: {{version: {_scalar(self.canary.version)}, traffic: {self.canary.traffic!r}}}"
            )
        if self.staging:
            lines.append(f"staging: [{', '.join(map(_scalar, self.staging))}]")
        if self.deprecated:
            items = []
            for version, dep in self.deprecated.items():
                inner = [f"sunset: {dep.sunset}"] if dep.sunset else []
                if dep.reason:
                    inner.append(f"reason: {json.dumps(dep.reason)}")
                items.append(f"{_scalar(version)}: {{{', '.join(inner)}}}")
            lines.append(f"deprecated: {{{', '.join(items)}}}")
        if self.archived:
            lines.append(f"archived: [{', '.join(map(_scalar, self.archived))}]")
        if len(lines) == 1:
            lines.append("{}")
        return "\n".join(lines) + "\n"


def _scalar(text: str) -> str:
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


_TRAFFIC = re.compile(r"0\.[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _plain_version(text: str) -> bool:
    # A semantic version is always a plain YAML string (never a number or a date).
    return SEMVER_RE.fullmatch(text) is not None


def _real_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _read_line(key: str, rest: str) -> Any:
    """The value of one canonical line, or None when it is not in exactly that form."""
    if key == "production":
        return rest if _plain_version(rest) else None
    if key in ("staging", "archived"):
        if not (rest.startswith("[") and rest.endswith("]")):
            return None
        items = rest[1:-1].split(", ") if rest != "[]" else []
        unique = len(set(items)) == len(items)
        return items if unique and all(_plain_version(v) for v in items) else None
    if key == "canary":
        if not (rest.startswith("{version: ") and rest.endswith("}")):
            return None
        version, sep, traffic = rest[len("{version: "):-1].partition(", traffic: ")
        if not sep or not _plain_version(version) or not _TRAFFIC.fullmatch(traffic) or float(traffic) == 0:
            return None
        return {"version": version, "traffic": float(traffic)}
    if key == "deprecated":
        if not (rest.startswith("{") and rest.endswith("}")) or rest == "{}":
            return None
        value: dict[str, Any] = {}
        for item in rest[1:-1].split(", "):
            version, sep, detail = item.partition(": ")
            if not sep or not _plain_version(version) or version in value:
                return None
            if detail == "{}":
                value[version] = {}
            elif detail.startswith("{sunset: ") and detail.endswith("}") and _real_date(detail[9:-1]):
                value[version] = {"sunset": detail[9:-1]}
            else:
                return None
        return value
    return None


def _read_canonical(text: str | bytes) -> dict[str, Any] | None:
    """The canonical one-line-per-stage form `to_text` writes, read without a YAML parser.

    What it returns is always valid against stages.schema.json (no check is needed after it).

    Registries hold thousands of stages files and the readers (ls, manifest, log) parse
    them all; anything not in exactly this form returns None and goes to the YAML
    loader. tests/test_fastcheck.py checks that both readings agree.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            return None
    data: dict[str, Any] = {}
    empty = False
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        if line == "{}" and not data and not empty:
            empty = True
            continue
        key, sep, rest = line.partition(": ")
        value = _read_line(key, rest) if sep and not empty else None
        if value is None or key in data:
            return None  # not canonical, or a duplicate key: let the YAML loader say where
        data[key] = value
    return None if empty and data else data


def parse(text: str | bytes, path: str) -> Stages:
    canonical = _read_canonical(text) if len(text) <= yamlio.MAX_YAML_BYTES else None
    if canonical is not None:
        data: Any = canonical  # valid by construction
    else:
        from registry.files.fastcheck import stages_ok

        data = yamlio.loads(text, path)
        # The fast exact check answers for valid files; the schema explains invalid ones.
        problems = [] if stages_ok(data) else _schema_problems(data, path, text)
        if problems:
            raise ValidationError(problems)
    stages = Stages.from_data(data)
    problems = duplicate_problems(stages, path, text)
    if problems:
        raise ValidationError(problems)
    return stages


def _schema_problems(data: Any, path: str, text: str | bytes) -> list[Problem]:
    from registry.files import schemas

    return schemas.validate("stages", data, path, text)


def duplicate_problems(stages: Stages, path: str, text: str | bytes | None = None) -> list[Problem]:
    """A version holds one stage at a time."""
    held: dict[str, str] = {}
    problems = []
    for version, stage in stages.assignments():
        if version in held:
            line = yamlio.line_of(text, [stage]) if text is not None else None
            problems.append(
                Problem(path, f"version {version} is in both {held[version]} and {stage}; "
                        "a version holds one stage at a time", line, stage)
            )
        held[version] = stage
    return problems
