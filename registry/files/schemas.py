"""The JSON Schemas (shipped in the package) and validation with located errors."""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.errors import Problem
from registry.files.names import BUILD_METADATA_HINT, SEMVER_RE
from registry.files.yamlio import REPO_SCHEMA_DIR as REPO_SCHEMA_DIR
from registry.files.yamlio import line_of

if TYPE_CHECKING:
    import jsonschema

KINDS = ("registry", "model", "stages", "card")
# Rules this module adds to the JSON Schemas; part of the fingerprint, so cached verdicts renew.
RULES = "number-is-finite"


def _schema_dir() -> Path:
    here = Path(__file__).resolve().parent
    packaged = here / "jsonschemas"  # where the wheel puts them (force-include in pyproject.toml)
    if packaged.is_dir():
        return packaged
    # Editable install / source checkout: the project's top-level schemas/ folder.
    return here.parents[1] / "schemas"


def schema_file(kind: str) -> Path:
    return _schema_dir() / f"{kind}.schema.json"


@cache
def schema(kind: str) -> dict[str, Any]:
    return json.loads(schema_file(kind).read_text())  # type: ignore[no-any-return]


@cache
def fingerprint() -> str:
    """Changes whenever any schema changes: part of the validation cache key."""
    digest = hashlib.sha256()
    digest.update(RULES.encode())
    for kind in KINDS:
        digest.update(schema_file(kind).read_bytes())
    return digest.hexdigest()[:16]


def is_finite_number(value: object) -> bool:
    """A JSON number: YAML's .nan, .inf and -.inf (and booleans) are not."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    import jsonschema

    base = jsonschema.validators.validator_for(schema(kind))
    # JSON has no NaN or infinity, and every comparison with NaN is false: a `minimum` would pass it.
    checker = base.TYPE_CHECKER.redefine("number", lambda _checker, value: is_finite_number(value))
    cls: type[jsonschema.protocols.Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        base, type_checker=checker)
    return cls(schema(kind), format_checker=cls.FORMAT_CHECKER)


def field_path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: jsonschema.ValidationError, kind: str) -> tuple[list[str | int], str]:
    path: list[str | int] = list(error.absolute_path)
    validator, instance = error.validator, error.instance
    subschema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(subschema.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in allowed)
        hint = "; free-form data goes under tags or hyperparameters" if kind == "card" and not path else ""
        path.append(extra[0] if extra else "")
        return path, f"unknown field (allowed: {', '.join(sorted(allowed))}){hint}"
    if validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        return [*path, missing], "required field is missing"
    if validator == "type":
        expected = error.validator_value
        if isinstance(instance, float) and not math.isfinite(instance) and "number" in str(expected):
            shown = ".nan" if math.isnan(instance) else ("-.inf" if instance < 0 else ".inf")
            return path, f"{shown} is not allowed: use a finite number"
        got = type(instance).__name__
        hint = ""
        if isinstance(instance, (int, float)) and not isinstance(instance, bool) and "string" in str(expected):
            hint = " (quote it so YAML reads it as text)"
        return path, f"expected {expected}, got {got} {instance!r}{hint}"
    if validator == "pattern":
        if isinstance(instance, str) and "+" in instance and SEMVER_RE.fullmatch(instance.partition("+")[0]):
            return path, f"{instance!r}: {BUILD_METADATA_HINT}"
        return path, f"{instance!r} does not have the required form ({subschema.get('description') or error.validator_value})"
    if validator == "enum":
        return path, f"{instance!r} is not one of {', '.join(map(str, subschema.get('enum', [])))}"
    if validator == "format":
        return path, f"{instance!r} is not a valid {error.validator_value} (use YYYY-MM-DD)"
    if validator == "propertyNames":
        return path, f"invalid key: {error.message}"
    return path, error.message


def validate(kind: str, data: Any, path: str, text: str | bytes | None = None) -> list[Problem]:
    """Schema problems of one parsed document, each with its line when text is given."""
    errors = sorted(_validator(kind).iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    problems = []
    for error in errors:
        # For composite keywords, report the most specific sub-error.
        best = error
        while best.context:
            best = min(best.context, key=lambda e: -len(e.absolute_path))
        parts, message = _describe(best, kind)
        line = line_of(text, parts) if text is not None else None
        problems.append(Problem(path, message, line, field_path(parts)))
    return problems
