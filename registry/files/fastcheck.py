"""Exact, fast structural check of stages.yaml, which read paths (ls, manifest, log) parse by the thousand.

The JSON Schemas stay the authority: these functions answer only "valid or not" for
the parts a reader uses, and when they say "not", the caller runs the full schema
validation to report the precise file, line and field. tests/test_fastcheck.py
checks that both agree.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from registry.files.names import SEMVER_RE

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _version(value: object) -> bool:
    return type(value) is str and SEMVER_RE.fullmatch(value) is not None


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _date(value: object) -> bool:
    if type(value) is not str or not _DATE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _versions(value: object) -> bool:
    return type(value) is list and all(_version(v) for v in value) and len(set(value)) == len(value)


def stages_ok(data: Any) -> bool:
    """Whether data satisfies stages.schema.json."""
    if data is None:
        return True
    if type(data) is not dict:
        return False
    for key, value in data.items():
        if key == "production":
            ok = _version(value)
        elif key == "canary":
            ok = (type(value) is dict and set(value) == {"version", "traffic"} and _version(value["version"])
                  and _number(value["traffic"]) and 0 < value["traffic"] < 1)
        elif key in ("staging", "archived"):
            ok = _versions(value)
        elif key == "deprecated":
            ok = type(value) is dict and all(
                type(v) is str and SEMVER_RE.fullmatch(v) is not None and (
                    d is None or (type(d) is dict and set(d) <= {"sunset", "reason"}
                                  and ("sunset" not in d or _date(d["sunset"]))
                                  and ("reason" not in d or type(d["reason"]) is str)))
                for v, d in value.items())
        else:
            ok = False
        if not ok:
            return False
    return True
