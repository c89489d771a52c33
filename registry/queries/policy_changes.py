"""registry.yaml changes in words: what each `policy` event of `registry log` says changed.

The effective settings before and after (every default filled in, as RegistryConfig
reads them) are compared key by key, so a change of comments or layout says nothing
and a trusted key is named by its id as well as its file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from registry.errors import ValidationError
from registry.files import config

__all__ = ["describe_policy_change", "key_labeller"]


def _effective(raw: bytes | None) -> dict[str, Any] | None:
    """registry.yaml's data with every default filled in as RegistryConfig reads it; None if invalid."""
    from registry.files import yamlio

    if raw is None:
        return None
    try:
        data = yamlio.loads(raw, config.CONFIG_FILE)
    except ValidationError:
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None
    merged: dict[str, Any] = {}
    for key, default in config.DEFAULT_CONFIG.items():
        value = data.get(key, default)
        if key != "policy" and isinstance(default, dict) and isinstance(value, dict):
            value = {**default, **value}
        merged[key] = value
    for key, value in data.items():
        merged.setdefault(key, value)
    policy = merged.get("policy")
    if isinstance(policy, dict):
        # As config.stage_policies reads it: each stage's keys over that stage's defaults.
        stages = dict.fromkeys([*config.DEFAULT_POLICY, *(k for k in policy if k not in config.NOT_STAGES)])
        merged["policy"] = {
            stage: ({"approvals": config.default_approvals(stage), **config.DEFAULT_POLICY.get(stage, {}), **p}
                    if isinstance(p := policy.get(stage, {}), dict) else p)
            for stage in stages
        }
        for key in config.NOT_STAGES:  # tasks, drift: not stages, compared as they are written
            if policy.get(key):
                merged["policy"][key] = policy[key]
    return merged


def _flatten(value: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict) and value:
        flat: dict[tuple[str, ...], Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, (*prefix, str(key))))
        return flat
    return {prefix: value}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value, default=str)
    return str(value)


def _label(path: tuple[str, ...]) -> str:
    if path[:1] == ("policy",) and len(path) > 2:
        stage, kind, *rest = path[1:]
        if kind == "metrics" and len(rest) == 2:
            return f"{stage} {rest[0]} {rest[1]}"
        if kind == "max_regression" and len(rest) == 2:
            return f"{stage} {rest[0]} max regression ({rest[1]})"
        return " ".join([stage, kind, *rest])
    if path[:2] == ("lifecycle", "transitions") and len(path) == 3:
        return f"transitions from {path[2]}"
    return ".".join(path)


def describe_policy_change(old: bytes | None, new: bytes | None,
                           key_label: Callable[[str], str] | None = None) -> list[str]:
    """What changed between two registry.yaml blobs, in words, one phrase per change."""
    before, after = _effective(old), _effective(new)
    if after is None:
        return ["registry.yaml removed" if new is None else "registry.yaml made invalid (the gates refuse it)"]
    if before is None:
        if old is not None:
            return ["registry.yaml made valid again"]
        before = _effective(b"{}")
        assert before is not None
    flat_old, flat_new = _flatten(before), _flatten(after)
    words = []
    for path in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(path), flat_new.get(path)
        if a == b:
            continue
        if isinstance(a, list | type(None)) and isinstance(b, list | type(None)) and (a or b):
            added = [x for x in (b or []) if x not in (a or [])]
            removed = [x for x in (a or []) if x not in (b or [])]
            for item, verb in [*((x, "added") for x in added), *((x, "removed") for x in removed)]:
                if path == ("trusted_keys",):
                    shown = key_label(str(item)) if key_label else str(item)
                    words.append(f"trusted key {shown} {verb}")
                elif path[:2] == ("lifecycle", "transitions"):
                    words.append(f"transition {path[2]} → {item} {verb}")
                elif path[:1] == ("roles",) and len(path) == 2:
                    words.append(f"{item} {verb} as {path[1]}")
                else:
                    words.append(f"{_label(path)}: {item} {verb}")
            continue
        if a is None:
            words.append(f"{_label(path)} set to {_show(b)}")
        elif b is None:
            words.append(f"{_label(path)} {_show(a)} removed")
        else:
            words.append(f"{_label(path)} {_show(a)} → {_show(b)}")
    return words  # empty: comments or layout only, no change in effect


def key_labeller(read: Callable[[str], bytes | None]) -> Callable[[str], str]:
    """A trusted key's file name and key id(s) (first 8 hex digits), read from a commit."""
    from registry.errors import RegistryError
    from registry.signing.keys import key_id, parse_public_keys

    def label(path: str) -> str:
        data = read(path)
        if data is None:
            return path
        try:
            ids = [key_id(k)[:8] + "…" for k in parse_public_keys(data, path)]
        except RegistryError:
            return path
        return f"{', '.join(ids)} ({path})"

    return label
