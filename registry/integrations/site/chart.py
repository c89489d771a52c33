"""The metrics chart of a model page: an accessible inline SVG, one line per metric."""

from __future__ import annotations

import math

from registry.integrations.site.markup import esc, num
from registry.integrations.site.read import ModelEntry

# Series colours (each at least 4.5:1 on white) and dash patterns, so series differ without colour.
_SERIES = (
    ("#1d4ed8", ""), ("#c2410c", "6 4"), ("#047857", "2 3"), ("#7e22ce", "10 4 2 4"),
    ("#be123c", "4 2"), ("#0e7490", "8 3 2 3 2 3"), ("#4d5562", "1 3"), ("#a16207", "12 4"),
)


def round_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (1, 2 or 5 times a power of ten apart)."""
    if hi - lo <= 0:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def chart(model: ModelEntry, names: list[str]) -> str:
    versions = [v.version for v in model.versions]
    series = {m: [(i, float(v.card.metrics[m])) for i, v in enumerate(model.versions)
                  if m in v.card.metrics and math.isfinite(float(v.card.metrics[m]))] for m in names}
    values = [y for points in series.values() for _, y in points]
    if not values:
        return '<p class="empty">No finite metric values to chart.</p>\n'
    ticks = round_ticks(min(values), max(values))
    lo, hi = ticks[0], ticks[-1]
    width, height = 960, 300
    left, right, top, bottom = 88, 24, 20, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    band = plot_w / len(versions)

    def x(i: int) -> float:
        return left + band * (i + 0.5)

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - lo) / (hi - lo))

    decimals = max(0, -math.floor(math.log10(ticks[1] - ticks[0]))) if len(ticks) > 1 else 2
    title_id, desc_id = f"chart-{model.name}-title", f"chart-{model.name}-desc"
    summary = "; ".join(
        f"{m}: " + ", ".join(f"{versions[i]} {num(val)}" for i, val in points) for m, points in series.items()
    )
    out = [
        f'<figure class="chart">\n<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-labelledby="{esc(title_id)} {esc(desc_id)}" xmlns="http://www.w3.org/2000/svg">\n'
        f'<title id="{esc(title_id)}">Metrics of {esc(model.name)} across versions</title>\n'
        f'<desc id="{esc(desc_id)}">Line chart, one line per metric, versions oldest to newest from left to right. '
        f"{esc(summary)}.</desc>\n"
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#ffffff" stroke="#c4cad3"/>\n'
    ]
    for tick in ticks:
        ty = y(tick)
        out.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" stroke="#e3e7ed"/>'
                   f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end" font-size="13" fill="#374151">'
                   f"{tick:.{decimals}f}</text>\n")
    for i, version in enumerate(versions):
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 20}" text-anchor="middle" font-size="13" '
                   f'fill="#374151">{esc(version)}</text>\n')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 14}" text-anchor="middle" font-size="14" '
               'font-weight="600" fill="#1f2937">Version</text>\n'
               f'<text transform="translate(22 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle" '
               'font-size="14" font-weight="600" fill="#1f2937">Metric value</text>\n')
    for n, (metric, points) in enumerate(series.items()):
        colour, dash = _SERIES[n % len(_SERIES)]
        coords = " ".join(f"{x(i):.1f},{y(val):.1f}" for i, val in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<g class="series"><polyline data-metric="{esc(metric)}" points="{coords}" fill="none" '
                   f'stroke="{colour}" stroke-width="2.5"{dash_attr}/>\n')
        for i, val in points:
            out.append(f'<circle cx="{x(i):.1f}" cy="{y(val):.1f}" r="4" fill="{colour}">'
                       f"<title>{esc(metric)} of {esc(versions[i])}: {esc(num(val))}</title></circle>\n")
        out.append("</g>\n")
    out.append("</svg>\n")
    legend = "".join(
        f'<li><svg width="28" height="10" aria-hidden="true" focusable="false"><line x1="0" y1="5" x2="28" y2="5" '
        f'stroke="{_SERIES[n % len(_SERIES)][0]}" stroke-width="3"'
        + (f' stroke-dasharray="{_SERIES[n % len(_SERIES)][1]}"' if _SERIES[n % len(_SERIES)][1] else "")
        + f"/></svg>{esc(metric)}</li>"
        for n, metric in enumerate(series)
    )
    out.append(f'<figcaption><ul class="legend" aria-label="Legend">{legend}</ul>'
               "The values are listed in the versions table above.</figcaption>\n</figure>\n")
    return "".join(out)

