"""`register --card-from-readme`: a Hugging Face model card's front matter offered to the card.

A Hugging Face folder's README.md starts with YAML front matter between two `---` lines
(https://huggingface.co/docs/hub/model-cards). Its values fill what the given card leaves out,
never what it says:

- `license` → `tags.license`; `base_model` → `tags.base_model`;
- `tags` → `tags.hf_tags` and `datasets` → `tags.datasets` (comma-separated: a card's tags are
  scalars, and Hub dataset ids are not paths in the registry, which `training.data` names);
- `model-index[].results[].metrics[]` → `metrics.<type>` (or `<name>` when a metric has no type),
  the first value for a name winning.

The front matter is parsed by the registry's hardened YAML loader (registry.yamlio), as any
other input; what cannot be used (a metric that is not a finite number, a name the card schema
refuses) is left out with a warning naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from registry.errors import ValidationError
from registry.files import yamlio

README = "README.md"
_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")  # the card schema's names of tags and metrics
_FENCE = re.compile(r"^---[ \t]*\r?$")


def front_matter(path: Path, shown: str) -> tuple[dict[str, Any], int]:
    """The README's front matter and the line it starts on; ({}, 0) when it has none."""
    try:
        with path.open("rb") as handle:  # the front matter is at the top; the body may be long
            head = handle.read(yamlio.MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ValidationError.one(shown, f"cannot read: {exc.strerror}") from None
    lines = head.decode("utf-8", errors="replace").split("\n")
    if not lines or not _FENCE.match(lines[0]):
        return {}, 0
    for end in range(1, len(lines)):
        if _FENCE.match(lines[end]):
            break
    else:
        raise ValidationError.one(shown, "front matter opened with '---' is never closed with a '---' line "
                                  f"(within its first {yamlio.MAX_YAML_BYTES} bytes)", 1)
    data = yamlio.loads("\n".join(lines[1:end]) + "\n", shown)
    if data is None:
        return {}, 2
    if not isinstance(data, dict):
        raise ValidationError.one(shown, "front matter must be a mapping (license: ..., tags: [...])", 2)
    return data, 2


def offered(meta: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float], list[str]]:
    """(tags, metrics, warnings) the front matter offers."""
    tags: dict[str, Any] = {}
    warnings: list[str] = []
    for source, key in (("license", "license"), ("base_model", "base_model"), ("tags", "hf_tags"),
                        ("datasets", "datasets")):
        value = _scalar(meta.get(source))
        if value is not None:
            tags[key] = value
        elif meta.get(source) is not None:
            warnings.append(f"README.md: {source}: not a string or a list of strings; left out")
    metrics: dict[str, float] = {}
    for entry in _dicts(meta.get("model-index")):
        for result in _dicts(entry.get("results")):
            for metric in _dicts(result.get("metrics")):
                name = metric.get("type") or metric.get("name")
                value = metric.get("value")
                if not isinstance(name, str) or not _KEY.fullmatch(name):
                    warnings.append(f"README.md: model-index: metric {name!r}: not a usable metric name; left out")
                elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    warnings.append(f"README.md: model-index: metric {name}: {value!r} is not a finite number; "
                                    "left out")
                elif name in metrics:
                    if metrics[name] != value:
                        warnings.append(f"README.md: model-index: metric {name} appears again ({value}); "
                                        f"kept the first ({metrics[name]})")
                else:
                    metrics[name] = value
    return tags, metrics, warnings


def fill(card: dict[str, Any], meta: Mapping[str, Any]) -> list[str]:
    """Add what the front matter offers to card where it says nothing; the warnings."""
    tags, metrics, warnings = offered(meta)
    for field_name, values in (("tags", tags), ("metrics", metrics)):
        if not values:
            continue
        present = card.get(field_name)
        if present is None:
            card[field_name] = dict(values)
        elif isinstance(present, dict):
            card[field_name] = {**values, **present}  # the given card wins, key by key
        # anything else: the schema check reports the card's own field
    return warnings


def _scalar(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return ",".join(v.strip() for v in value)
    return None


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
