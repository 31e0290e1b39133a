"""Done and failed per minute as an SVG bar chart, drawn here from the stats' ``perMinute``:
no chart library, no script. Each minute is a stacked bar (done below, failed above); the
title and description say the totals in words for screen readers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 24


def _nice_top(value: int) -> int:
    """The axis' top: the smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def per_minute_svg(minutes: Sequence[Mapping[str, Any]]) -> Markup:
    done = [int(m.get("done", 0)) for m in minutes]
    failed = [int(m.get("failed", 0)) for m in minutes]
    top = _nice_top(max([d + f for d, f in zip(done, failed, strict=True)] + [1]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(minutes), 1)
    bar = max(slot - 1.5, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Done and failed per minute, the last hour</title>',
        f'<desc id="chart-desc">{sum(done)} done and {sum(failed)} failed in the last '
        f'{len(minutes)} minutes; the busiest minute had {max([*done, 0])} done and the worst '
        f'{max([*failed, 0])} failed.</desc>',
    ]
    for fraction in (0.0, 0.5, 1.0):  # grid lines with their values
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/><text class="axis" x="{LEFT - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{top * fraction:g}</text>')
    for i, (d, f) in enumerate(zip(done, failed, strict=True)):
        x = LEFT + i * slot
        h_done, h_failed = plot_h * d / top, plot_h * f / top
        base = TOP + plot_h
        label = escape(str(minutes[i].get("minute", "")))
        if d:
            parts.append(f'<rect class="done" x="{x:.1f}" y="{base - h_done:.1f}" '
                         f'width="{bar:.1f}" height="{h_done:.1f}"><title>{label}: {d} done'
                         '</title></rect>')
        if f:
            parts.append(f'<rect class="failed" x="{x:.1f}" y="{base - h_done - h_failed:.1f}" '
                         f'width="{bar:.1f}" height="{h_failed:.1f}"><title>{label}: {f} failed'
                         '</title></rect>')
    count = len(minutes)
    for i, text in ((0, f"-{count - 1} min"), (count // 2, f"-{count - 1 - count // 2} min"),
                    (count - 1, "now")):
        if count:
            x = LEFT + i * slot + bar / 2
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" '
                         f'text-anchor="middle">{text}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
