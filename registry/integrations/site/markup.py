"""HTML text from registry values: escaping, numbers, sizes, dates, people and stage badges."""

from __future__ import annotations

import html

# Shown as badges and in the index, in lifecycle order.
STAGE_ORDER = ("production", "canary", "staging", "development", "deprecated", "archived")
NONE = '<span class="muted">none</span>'


def esc(value: object) -> str:
    """Every value from the registry goes through here into HTML text or attributes."""
    return html.escape(str(value), quote=True)


def num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return format(value, ".6g")


def byte_size(n: int) -> str:
    amount = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    raise AssertionError("unreachable")


def time_tag(timestamp: str) -> str:
    return f'<time datetime="{esc(timestamp)}">{esc(timestamp[:10])}</time>'


def person(who: str | None) -> str:
    if not who:
        return ""
    return ", ".join(f'<span title="{esc(p)}">{esc(p.split(" <")[0])}</span>' for p in who.split(", "))


def stage_badge(stage: str, label: str | None = None) -> str:
    css = stage if stage in STAGE_ORDER else "other"
    return f'<span class="badge stage-{css}">{esc(label or stage)}</span>'


