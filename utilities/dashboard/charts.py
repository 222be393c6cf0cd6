"""Charts as inline SVG, drawn on the server: a farm may have no internet, so no CDN and no script.

Pure: a list of (label, value) points in, one ``<svg>`` element out. Every text that reaches
the SVG is escaped here, so the caller may mark the result safe. A missing value (a day without
transfers) is a gap: no bar, and the line is broken there rather than drawn through zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

Point = tuple[str, float | None]

WIDTH = 640
HEIGHT = 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 46, 12, 26, 28


def nice_ceiling(value: float) -> float:
    """The axis top: the next 1, 2 or 5 times a power of ten at or above ``value`` (1 for none)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return 10.0 * power


def _number(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _frame(title: str, top: float, points: Sequence[Point], unit: str) -> list[str]:
    """Title, the y axis (0, half, top) with grid lines, and the first, middle and last x label."""
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    parts = [
        f'<text x="{_LEFT}" y="16" class="chart-title" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="#d0d7de" stroke-width="1"/>')
        label = escape(f"{_number(top * fraction)}{unit}")
        parts.append(f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#57606a">{label}</text>')
    if points:
        picks = sorted({0, len(points) // 2, len(points) - 1})
        for index in picks:
            x = _LEFT + plot_w * (index + 0.5) / len(points)
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11" fill="#57606a">'
                f"{escape(points[index][0])}</text>"
            )
    return parts


def _svg(parts: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(label)}">' + "".join(parts) + "</svg>"
    )


def bar_chart(title: str, points: Sequence[Point], unit: str = "", colour: str = "#2f81f7") -> str:
    """One bar per point; a point's ``<title>`` tells its label and value on hover."""
    values = [v for _, v in points if v is not None]
    top = nice_ceiling(max(values, default=0.0))
    parts = _frame(title, top, points, unit)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(points) if points else 0.0
    for index, (label, value) in enumerate(points):
        if value is None or value <= 0:
            continue
        height = plot_h * value / top
        x = _LEFT + slot * index + slot * 0.15
        y = _TOP + plot_h - height
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{height:.1f}" fill="{colour}">'
            f"<title>{escape(f'{label}: {_number(value)}{unit}')}</title></rect>"
        )
    if not values:
        parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" fill="#57606a">no data yet</text>')
    return _svg(parts, title)


def line_chart(title: str, points: Sequence[Point], unit: str = "", colour: str = "#1a7f37") -> str:
    """A line through the points with a dot on each; a missing value breaks the line."""
    values = [v for _, v in points if v is not None]
    top = nice_ceiling(max(values, default=0.0))
    parts = _frame(title, top, points, unit)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    runs: list[list[tuple[float, float]]] = [[]]
    dots: list[str] = []
    for index, (label, value) in enumerate(points):
        if value is None:
            runs.append([])
            continue
        x = _LEFT + plot_w * (index + 0.5) / len(points)
        y = _TOP + plot_h * (1 - value / top)
        runs[-1].append((x, y))
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
            f"<title>{escape(f'{label}: {_number(value)}{unit}')}</title></circle>"
        )
    for run in runs:
        if len(run) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    parts += dots  # drawn over the line
    if not values:
        parts.append(f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" fill="#57606a">no data yet</text>')
    return _svg(parts, title)
