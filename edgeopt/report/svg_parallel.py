"""Parallel coordinates as inline SVG: one polyline per trial across min-max scaled axes,
each turned so that up is better."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from edgeopt.report.svg import dash_attr, fmt_tick, open_svg


@dataclass(frozen=True)
class PcAxis:
    """One parallel-coordinates axis: ``label`` on top, ``sub`` (target, provenance) under it;
    drawn so that up is better (``maximize`` says which end that is)."""

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
    """One legend entry: a short stroke in the lines' color and dash, then its label."""

    label: str
    color: str
    dash: str | None = None


@dataclass(frozen=True)
class _Frame:
    """Where the axes stand (``xs``) and the value range of each: (lo, hi, maximize)."""

    top: int
    ph: int
    xs: tuple[float, ...]
    ranges: tuple[tuple[float, float, bool], ...]

    def sy(self, k: int, v: float) -> float:
        lo, hi, up = self.ranges[k]
        if hi <= lo:
            frac = 0.5
        else:
            frac = (v - lo) / (hi - lo)
            if not up:
                frac = 1 - frac
        return self.top + self.ph - frac * self.ph


def _ranges(
    axes: Sequence[PcAxis], lines: Sequence[PcLine]
) -> tuple[tuple[float, float, bool], ...]:
    out = []
    for k, ax in enumerate(axes):
        col = [v for ln in lines if (v := ln.values[k]) is not None and math.isfinite(v)]
        lo, hi = (min(col), max(col)) if col else (0.0, 1.0)
        out.append((lo, hi, ax.maximize))
    return tuple(out)


def _axis_marks(f: _Frame, axes: Sequence[PcAxis]) -> list[str]:
    """Each axis line with its label, sub-label, best value on top and worst at the bottom."""
    top, ph = f.top, f.ph
    out = []
    for k, (ax, x) in enumerate(zip(axes, f.xs, strict=True)):
        lo, hi, up = f.ranges[k]
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
    return out


def _polyline(f: _Frame, ln: PcLine) -> tuple[str, tuple[float, str] | None]:
    """The line's markup, and its end label as (y, rest of the ``<text>`` tag) if it has one."""
    segs: list[str] = []
    prev = False
    for k, v in enumerate(ln.values):
        if v is None or not math.isfinite(v):
            prev = False
            continue
        segs.append(f"{'L' if prev else 'M'}{f.xs[k]:.1f},{f.sy(k, v):.1f}")
        prev = True
    tip = f"<title>{escape(ln.tip)}</title>" if ln.tip else ""
    markup = (
        f'<g>{tip}<path d="{"".join(segs)}" fill="none" stroke="{ln.color}" '
        f'stroke-width="{ln.width}" opacity="0.85"{dash_attr(ln.dash)}/></g>'
    )
    last = max((k for k, v in enumerate(ln.values) if v is not None), default=None)
    if last is None or not ln.label:
        return markup, None
    y = f.sy(last, ln.values[last])  # type: ignore[arg-type]
    rest = f'x="{f.xs[last] + 6:.1f}" font-size="10" fill="{ln.color}">{escape(ln.label)}</text>'
    return markup, (y, rest)


def _end_labels(labels: Sequence[tuple[float, str]]) -> list[str]:
    """Line labels at the right end; where two collide, the later line's label wins."""
    # the last lines drawn matter most (the pick, baselines)
    out = []
    taken: list[float] = []
    for y, rest in reversed(labels):
        if all(abs(y - other) >= 11 for other in taken):
            taken.append(y)
            out.append(f'<text y="{y + 4:.1f}" {rest}')
    return out


def _legend(legend: Sequence[PcLegend], x: int, y: int) -> list[str]:
    out = []
    for item in legend:
        out.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{item.color}" '
            f'stroke-width="2.5"{dash_attr(item.dash)}/>'
            f'<text x="{x + 28}" y="{y + 4}" font-size="12">{escape(item.label)}</text>'
        )
        x += 40 + 7 * len(item.label)
    return out


def parallel_coordinates(
    title: str,
    axes: Sequence[PcAxis],
    lines: Sequence[PcLine],
    legend: Sequence[PcLegend] = (),
    *,
    width: int = 1300,
    height: int = 420,
) -> str:
    """Each axis min-max scaled over ``lines`` and oriented so that up is better.

    Every line needs one value (or None) per axis. Lines are drawn in order, so the caller
    puts the ones that matter most last.
    """
    left, right, top, bottom = 70, 95, 84, 70
    pw, ph = width - left - right, height - top - bottom
    n = len(axes)
    xs = tuple(left + (pw * i / (n - 1) if n > 1 else pw / 2) for i in range(n))
    f = _Frame(top, ph, xs, _ranges(axes, lines))
    out = open_svg("plot pc", width, height, title, 8)
    out += _axis_marks(f, axes)
    labels: list[tuple[float, str]] = []
    for ln in lines:
        markup, label = _polyline(f, ln)
        out.append(markup)
        if label is not None:
            labels.append(label)
    out += _end_labels(labels)
    out += _legend(legend, left, height - 18)
    out.append(
        f'<text x="{width - 8}" y="20" font-size="12" fill="#555" text-anchor="end">'
        "every axis: up = better</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
