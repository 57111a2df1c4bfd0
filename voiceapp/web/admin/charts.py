"""Small server-side SVG charts (no JavaScript, no external files): bars with a dashed limit line."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 480, 140, 22


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def bar_chart(
    title: str,
    points: Sequence[tuple[str, float]],
    *,
    limit: float | None = None,
    limit_label: str = "",
    unit: str = "",
) -> Markup:
    """An accessible bar chart of (label, value); `limit` draws a horizontal line (threshold, budget)."""
    top = max([v for _, v in points] + [limit or 0.0, 0.0]) or 1.0
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(len(points), 1)
    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        ),
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
    ]
    every = max(1, len(points) // 12)  # at most ~12 axis labels
    for i, (label, value) in enumerate(points):
        h = inner_h * value / top
        x = PAD + i * step + step * 0.1
        y = HEIGHT - PAD - h
        tip = f"{label}: {_fmt(value)}{unit}"
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" class="bar">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if i % every == 0:
            parts.append(f'<text x="{x + step * 0.4:.1f}" y="{HEIGHT - 6}" class="tick">{escape(label)}</text>')
    if limit:
        y = HEIGHT - PAD - inner_h * limit / top
        text = escape(f"{limit_label} {_fmt(limit)}{unit}".strip())
        parts.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}" class="limit"/>')
        parts.append(f'<text x="{WIDTH - PAD}" y="{max(y - 3, 10):.1f}" class="limit-label">{text}</text>')
    parts.append(f'<text x="{PAD}" y="12" class="tick">max {escape(_fmt(top))}{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
