"""Tiny inline-SVG plotting: scatter/line plots, horizontal bars, parallel coordinates.

Pure string building, no dependencies, so a report is one offline file. Every plot is one
``<svg>`` element with a ``<title>`` and its own legend; hovering a marker shows its
``<title>`` tooltip (native in every browser, no JavaScript).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

FONT = "font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif"


@dataclass(frozen=True)
class Point:
    """One marker; ``tip`` becomes its hover tooltip."""

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


def _range(values: Sequence[float], lo: float | None, hi: float | None) -> tuple[float, float]:
    vals = [v for v in values if math.isfinite(v)]
    a = lo if lo is not None else (min(vals) if vals else 0.0)
    b = hi if hi is not None else (max(vals) if vals else 1.0)
    if b <= a:
        pad = abs(a) * 0.1 or 1.0
        return a - pad, b + pad
    pad = (b - a) * 0.06
    return (a - pad if lo is None else a), (b + pad if hi is None else b)


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
        pts = []
        for i in range(10):
            rad = r * 2.0 if i % 2 == 0 else r * 0.85
            ang = math.pi / 2 + i * math.pi / 5
            pts.append(f"{x + rad * math.cos(ang):.1f},{y - rad * math.sin(ang):.1f}")
        return f'<polygon points="{" ".join(pts)}" {common}/>'
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
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            parts.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 16:.1f}" y2="{y:.1f}" '
                f'stroke="{s.color}" stroke-width="2"{dash}/>'
            )
        parts.append(
            f'<text x="{x + 20:.1f}" y="{y + 4:.1f}" font-size="12">{escape(s.label)}</text>'
        )
        x += w
    return "".join(parts), (y - y0) + 18


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
    xs = [p.x for s in series for p in s.points]
    ys = [p.y for s in series for p in s.points]
    x_lo, x_hi = _range(xs, x_axis.lo, x_axis.hi)
    y_lo, y_hi = _range(ys, y_axis.lo, y_axis.hi)
    left, right, top = 74, 18, 34
    legend, legend_h = _legend(series, left, 0, width - left - right)
    bottom = 52 + legend_h + (16 if note else 0)
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def sy(v: float) -> float:
        return top + ph - (v - y_lo) / (y_hi - y_lo) * ph

    out = [
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="600">{escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafbfc" stroke="#c8ccd0"/>',
    ]
    for t in nice_ticks(x_lo, x_hi, 6):
        X = sx(t)
        out.append(
            f'<line x1="{X:.1f}" y1="{top}" x2="{X:.1f}" y2="{top + ph}" stroke="#e6e8eb"/>'
            f'<text x="{X:.1f}" y="{top + ph + 15}" font-size="11" text-anchor="middle" '
            f'fill="#444">{fmt_tick(t)}</text>'
        )
    for t in nice_ticks(y_lo, y_hi, 5):
        Y = sy(t)
        out.append(
            f'<line x1="{left}" y1="{Y:.1f}" x2="{left + pw}" y2="{Y:.1f}" stroke="#e6e8eb"/>'
            f'<text x="{left - 6}" y="{Y + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#444">{fmt_tick(t)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{top + ph + 34}" font-size="12" '
        f'text-anchor="middle">{escape(x_axis.label)}</text>'
    )
    cy = top + ph / 2
    out.append(
        f'<text x="14" y="{cy:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {cy:.1f})">{escape(y_axis.label)}</text>'
    )
    for s in series:
        pts = [(sx(p.x), sy(p.y), p) for p in s.points if math.isfinite(p.x + p.y)]
        if s.line != "none" and len(pts) > 1:
            d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
            for (_, py0, _), (x1, y1, _) in zip(pts, pts[1:], strict=False):
                d += f"H{x1:.1f}V{y1:.1f}" if s.line == "step" else f"L{x1:.1f},{y1:.1f}"
                del py0
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(
                f'<path d="{d}" fill="none" stroke="{s.color}" stroke-width="1.8"'
                f' opacity="{s.opacity}"{dash}/>'
            )
        if s.marker != "none":
            out.append(f'<g opacity="{s.opacity}">')
            for X, Y, p in pts:
                m = _marker(s.marker, X, Y, s.size, s.color, s.fill)
                tip = f"<title>{escape(p.tip)}</title>" if p.tip else ""
                out.append(f"<g>{tip}{m}</g>")
            out.append("</g>")
    ly = top + ph + 52
    out.append(f'<g transform="translate(0,{ly})">{legend}</g>')
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
    out = [
        f'<svg class="plot bars" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="20" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
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


@dataclass(frozen=True)
class PcAxis:
    """One parallel-coordinates axis; drawn so that up is better."""

    label: str
    maximize: bool
    sub: str = ""


@dataclass(frozen=True)
class PcLine:
    """One polyline across all axes (``None`` = no value on that axis: the line breaks)."""

    values: tuple[float | None, ...]
    label: str
    color: str = "#1f77b4"
    width: float = 1.5
    dash: str | None = None
    tip: str = ""


@dataclass(frozen=True)
class PcLegend:
    label: str
    color: str
    dash: str | None = None
    items: tuple[str, ...] = field(default_factory=tuple)


def parallel_coordinates(
    title: str,
    axes: Sequence[PcAxis],
    lines: Sequence[PcLine],
    legend: Sequence[PcLegend] = (),
    *,
    width: int = 1300,
    height: int = 420,
) -> str:
    """Each axis min-max scaled over ``lines`` and oriented so that up is better."""
    left, right, top, bottom = 70, 95, 84, 70
    pw, ph = width - left - right, height - top - bottom
    n = len(axes)
    xs = [left + (pw * i / (n - 1) if n > 1 else pw / 2) for i in range(n)]
    ranges = []
    for k, ax in enumerate(axes):
        col = [ln.values[k] for ln in lines if ln.values[k] is not None]
        col = [v for v in col if v is not None and math.isfinite(v)]
        lo, hi = (min(col), max(col)) if col else (0.0, 1.0)
        ranges.append((lo, hi, ax.maximize))

    def sy(k: int, v: float) -> float:
        lo, hi, up = ranges[k]
        if hi <= lo:
            frac = 0.5
        else:
            frac = (v - lo) / (hi - lo)
            if not up:
                frac = 1 - frac
        return top + ph - frac * ph

    out = [
        f'<svg class="plot pc" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="20" font-size="14" font-weight="600">{escape(title)}</text>',
    ]
    for k, (ax, x) in enumerate(zip(axes, xs, strict=True)):
        lo, hi, up = ranges[k]
        best, worst = (hi, lo) if up else (lo, hi)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{top - 38}" font-size="12" text-anchor="middle" '
            f'font-weight="600">{escape(ax.label)}</text>'
            f'<text x="{x:.1f}" y="{top - 23}" font-size="11" text-anchor="middle" '
            f'fill="#333">{escape(ax.sub)}</text>'
            f'<text x="{x:.1f}" y="{top - 8}" font-size="11" text-anchor="middle" '
            f'fill="#2a7">{fmt_tick(best)} (best)</text>'
            f'<text x="{x:.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle" '
            f'fill="#a33">{fmt_tick(worst)}</text>'
        )
    labels: list[tuple[float, str]] = []
    for ln in lines:
        segs: list[str] = []
        prev = False
        for k, v in enumerate(ln.values):
            if v is None or not math.isfinite(v):
                prev = False
                continue
            cmd = "L" if prev else "M"
            segs.append(f"{cmd}{xs[k]:.1f},{sy(k, v):.1f}")
            prev = True
        dash = f' stroke-dasharray="{ln.dash}"' if ln.dash else ""
        tip = f"<title>{escape(ln.tip)}</title>" if ln.tip else ""
        out.append(
            f'<g>{tip}<path d="{"".join(segs)}" fill="none" stroke="{ln.color}" '
            f'stroke-width="{ln.width}" opacity="0.85"{dash}/></g>'
        )
        last = max((k for k, v in enumerate(ln.values) if v is not None), default=None)
        if last is not None and ln.label:
            y = sy(last, ln.values[last])  # type: ignore[arg-type]
            labels.append(
                (
                    y,
                    f'x="{xs[last] + 6:.1f}" font-size="10" fill="{ln.color}">'
                    f"{escape(ln.label)}</text>",
                )
            )
    # the last lines drawn matter most (the pick, baselines): keep theirs when labels collide
    taken: list[float] = []
    for y, rest in reversed(labels):
        if all(abs(y - other) >= 11 for other in taken):
            taken.append(y)
            out.append(f'<text y="{y + 4:.1f}" {rest}')
    x = left
    y = height - 18
    for item in legend:
        dash = f' stroke-dasharray="{item.dash}"' if item.dash else ""
        out.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{item.color}" '
            f'stroke-width="2.5"{dash}/>'
            f'<text x="{x + 28}" y="{y + 4}" font-size="12">{escape(item.label)}</text>'
        )
        x += 40 + 7 * len(item.label)
    out.append(
        f'<text x="{width - 8}" y="20" font-size="12" fill="#555" text-anchor="end">'
        "every axis: up = better</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
