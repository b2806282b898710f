"""Tiny inline-SVG plotting: scatter/line plots and horizontal bars (parallel coordinates are
in ``svg_parallel``).

Pure string building, no dependencies, so a report is one offline file. Every plot is one
``<svg>`` element with a ``<title>`` and its own legend; hovering a marker shows its
``<title>`` tooltip (native in every browser, no JavaScript).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = "font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"


@dataclass(frozen=True)
class Point:
    """One marker at (``x``, ``y``); ``tip`` becomes its hover tooltip."""

    x: float
    y: float
    tip: str = ""


@dataclass(frozen=True)
class Series:
    """Points drawn alike. ``marker`` is circle, diamond, square, x, star, triangle or none;
    ``line`` is none, line or step (connect in order)."""

    label: str
    points: tuple[Point, ...]
    marker: str = "circle"
    color: str = "#1f77b4"
    fill: str | None = None
    size: float = 4.0
    line: str = "none"
    dash: str | None = None
    opacity: float = 1.0


@dataclass(frozen=True)
class Axis:
    """A plot axis: label (with unit and provenance) and, optionally, a fixed range."""

    label: str
    lo: float | None = None
    hi: float | None = None


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] with about ``n`` intervals (1, 2, 5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-9:
        out.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return out


def fmt_tick(v: float) -> str:
    """A tick label: up to 4 significant digits, no trailing zeros."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def open_svg(css_class: str, width: int, height: int, title: str, title_x: int) -> list[str]:
    """The opening of every plot: the ``<svg>`` tag, its ``<title>``, a white background and
    the visible title at ``title_x``. The caller appends the content and ``</svg>``."""
    return [
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{title_x}" y="20" font-size="14" font-weight="600">{escape(title)}</text>',
    ]


def dash_attr(dash: str | None) -> str:
    """The ``stroke-dasharray`` attribute (with its leading space) for a dash pattern, if any."""
    return f' stroke-dasharray="{dash}"' if dash else ""


def _range(values: Sequence[float], lo: float | None, hi: float | None) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v)]
    a = lo if lo is not None else (min(vals) if vals else 0.0)
    b = hi if hi is not None else (max(vals) if vals else 1.0)
    if b <= a:
        pad = abs(a) * 0.1 or 1.0
        return a - pad, b + pad
    pad = (b - a) * 0.06
    return (a - pad if lo is None else a), (b + pad if hi is None else b)


def _star_points(x: float, y: float, r: float) -> str:
    pts = []
    for i in range(10):
        rad = r * 2.0 if i % 2 == 0 else r * 0.85
        ang = math.pi / 2 + i * math.pi / 5
        pts.append(f"{x + rad * math.cos(ang):.1f},{y - rad * math.sin(ang):.1f}")
    return " ".join(pts)


def _marker(kind: str, x: float, y: float, r: float, color: str, fill: str | None) -> str:
    f = fill if fill is not None else color
    common = f'stroke="{color}" fill="{f}" stroke-width="1.3"'
    if kind == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {common}/>'
    if kind == "square":
        return (
            f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" '
            f'height="{2 * r:.1f}" {common}/>'
        )
    if kind == "diamond":
        d = r * 1.35
        pts = f"{x:.1f},{y - d:.1f} {x + d:.1f},{y:.1f} {x:.1f},{y + d:.1f} {x - d:.1f},{y:.1f}"
        return f'<polygon points="{pts}" {common}/>'
    if kind == "triangle":
        d = r * 1.2
        pts = f"{x:.1f},{y - d:.1f} {x + d:.1f},{y + d * 0.8:.1f} {x - d:.1f},{y + d * 0.8:.1f}"
        return f'<polygon points="{pts}" {common}/>'
    if kind == "star":
        return f'<polygon points="{_star_points(x, y, r)}" {common}/>'
    if kind == "x":
        return (
            f'<path d="M{x - r:.1f},{y - r:.1f}L{x + r:.1f},{y + r:.1f}'
            f'M{x - r:.1f},{y + r:.1f}L{x + r:.1f},{y - r:.1f}" stroke="{color}" '
            f'stroke-width="1.8" fill="none"/>'
        )
    return ""


def _legend(series: Sequence[Series], x0: float, y0: float, width: float) -> tuple[str, float]:
    """Legend entries laid out in rows from (x0, y0); returns markup and its height."""
    parts = []
    x, y = x0, y0
    for s in series:
        if not s.label:
            continue
        w = 30 + 6.2 * len(s.label)
        if x + w > x0 + width and x > x0:
            x, y = x0, y + 18
        if s.marker != "none":
            parts.append(_marker(s.marker, x + 8, y, max(s.size, 3.5), s.color, s.fill))
        else:
            parts.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 16:.1f}" y2="{y:.1f}" '
                f'stroke="{s.color}" stroke-width="2"{dash_attr(s.dash)}/>'
            )
        parts.append(
            f'<text x="{x + 20:.1f}" y="{y + 4:.1f}" font-size="12">{escape(s.label)}</text>'
        )
        x += w
    return "".join(parts), (y - y0) + 18


@dataclass(frozen=True)
class _Frame:
    """The plotting area of an xy plot (pixels) and the data ranges it maps."""

    left: int
    top: int
    pw: int
    ph: int
    x_lo: float
    x_hi: float
    y_lo: float
    y_hi: float

    def sx(self, v: float) -> float:
        return self.left + (v - self.x_lo) / (self.x_hi - self.x_lo) * self.pw

    def sy(self, v: float) -> float:
        return self.top + self.ph - (v - self.y_lo) / (self.y_hi - self.y_lo) * self.ph


def _gridline(
    line: tuple[int | str, int | str, int | str, int | str],
    label_at: tuple[int | str, int | str],
    anchor: str,
    value: float,
) -> str:
    """A light grid line (x1, y1, x2, y2) and its tick label; coordinates come formatted."""
    x1, y1, x2, y2 = line
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#e6e8eb"/>'
        f'<text x="{label_at[0]}" y="{label_at[1]}" font-size="11" text-anchor="{anchor}" '
        f'fill="#444">{fmt_tick(value)}</text>'
    )


def _grid(f: _Frame, x_label: str, y_label: str) -> list[str]:
    """Plot area, tick lines with their labels, and the two axis labels."""
    left, top, pw, ph = f.left, f.top, f.pw, f.ph
    out = [
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafbfc" stroke="#c8ccd0"/>'
    ]
    for t in nice_ticks(f.x_lo, f.x_hi, 6):
        X = f"{f.sx(t):.1f}"
        out.append(_gridline((X, top, X, top + ph), (X, top + ph + 15), "middle", t))
    for t in nice_ticks(f.y_lo, f.y_hi, 5):
        Y = f.sy(t)
        line = (left, f"{Y:.1f}", left + pw, f"{Y:.1f}")
        out.append(_gridline(line, (left - 6, f"{Y + 4:.1f}"), "end", t))
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{top + ph + 34}" font-size="12" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    cy = top + ph / 2
    out.append(
        f'<text x="14" y="{cy:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {cy:.1f})">{escape(y_label)}</text>'
    )
    return out


def _draw_series(f: _Frame, s: Series) -> list[str]:
    """One series: its connecting line (if any), then its markers with tooltips."""
    pts = [(f.sx(p.x), f.sy(p.y), p) for p in s.points if math.isfinite(p.x + p.y)]
    out = []
    if s.line != "none" and len(pts) > 1:
        d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
        for x1, y1, _ in pts[1:]:
            d += f"H{x1:.1f}V{y1:.1f}" if s.line == "step" else f"L{x1:.1f},{y1:.1f}"
        out.append(
            f'<path d="{d}" fill="none" stroke="{s.color}" stroke-width="1.8"'
            f' opacity="{s.opacity}"{dash_attr(s.dash)}/>'
        )
    if s.marker != "none":
        out.append(f'<g opacity="{s.opacity}">')
        for X, Y, p in pts:
            m = _marker(s.marker, X, Y, s.size, s.color, s.fill)
            tip = f"<title>{escape(p.tip)}</title>" if p.tip else ""
            out.append(f"<g>{tip}{m}</g>")
        out.append("</g>")
    return out


def xy_plot(
    title: str,
    x_axis: Axis,
    y_axis: Axis,
    series: Sequence[Series],
    *,
    width: int = 640,
    height: int = 420,
    note: str = "",
    css_class: str = "plot",
) -> str:
    """A scatter/line plot with axes, ticks, labels, a legend under the plot and tooltips."""
    left, right, top = 74, 18, 34
    legend, legend_h = _legend(series, left, 0, width - left - right)
    bottom = 52 + legend_h + (16 if note else 0)
    f = _Frame(
        left,
        top,
        width - left - right,
        height - top - bottom,
        *_range([p.x for s in series for p in s.points], x_axis.lo, x_axis.hi),
        *_range([p.y for s in series for p in s.points], y_axis.lo, y_axis.hi),
    )
    out = open_svg(css_class, width, height, title, left)
    out += _grid(f, x_axis.label, y_axis.label)
    for s in series:
        out += _draw_series(f, s)
    out.append(f'<g transform="translate(0,{top + f.ph + 52})">{legend}</g>')
    if note:
        out.append(
            f'<text x="{left}" y="{height - 6}" font-size="11" fill="#555">{escape(note)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    width: int = 640,
    value_label: str = "",
    color: str = "#1f77b4",
) -> str:
    """Horizontal bars, largest first, each labelled with its value."""
    items = sorted(items, key=lambda kv: -kv[1])
    label_w = min(260, 12 + 7 * max((len(k) for k, _ in items), default=4))
    row = 22
    top, bottom = 34, 30
    height = top + bottom + row * max(len(items), 1)
    pw = width - label_w - 70
    vmax = max((v for _, v in items), default=1.0) or 1.0
    out = open_svg("plot bars", width, height, title, 8)
    for i, (k, v) in enumerate(items):
        y = top + i * row
        w = max(0.0, v) / vmax * pw
        out.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="12" text-anchor="end">'
            f"{escape(k)}</text>"
            f'<g><title>{escape(k)}: {v:.3f}</title><rect x="{label_w}" y="{y + 3}" '
            f'width="{w:.1f}" height="{row - 7}" fill="{color}"/></g>'
            f'<text x="{label_w + w + 5:.1f}" y="{y + 15}" font-size="11" fill="#444">'
            f"{v:.3f}</text>"
        )
    out.append(
        f'<text x="{label_w}" y="{height - 8}" font-size="11" fill="#555">'
        f"{escape(value_label)}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
