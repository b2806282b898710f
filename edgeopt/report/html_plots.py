"""The plot sections of the HTML report: Pareto scatter plots, parallel coordinates of the
front, optimization history per objective and parameter importance."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape
from typing import Any

from edgeopt.metrics import Metric
from edgeopt.records import TrialRecord
from edgeopt.report.model import (
    TARGET_METRICS,
    ObjectiveInfo,
    Summary,
    fail_label,
    fmt_num,
    metric_title,
)
from edgeopt.report.pareto import running_best
from edgeopt.report.svg import Axis, Point, Series, bar_chart, xy_plot
from edgeopt.report.svg_parallel import PcAxis, PcLegend, PcLine, parallel_coordinates

MAX_PAIR_PLOTS = 12
# per-target numbers that get their own parallel-coordinates axis when recorded (and not
# already an objective), in table order; latency is left out: it is the headline number
# and an objective of nearly every run (a presentation choice, not a fact of the metric)
PC_EXTRA_METRICS: tuple[Metric, ...] = tuple(m for m in TARGET_METRICS if m != Metric.LATENCY_MS)
C_FRONT = "#1f77b4"
C_OTHER = "#9aa5b1"
C_INFEASIBLE = "#d62728"
C_ORIGINAL = "#111111"
C_INT8 = "#ff7f0e"
C_PICK = "#f2b705"
C_PICK_LINE = "#c99700"
C_FAIL = "#8c564b"
C_STOPPED = "#9467bd"
BASELINE_DASH = "6 4"

Group = tuple[str, list[TrialRecord], dict[str, Any]]


def _tip(s: Summary, t: TrialRecord) -> str:
    bits = [f"trial {t.number}: {t.describe or 'unchanged'}"]
    for o in s.objectives:
        v = t.values.get(o.name)
        bits.append(f"{o.short} = {fmt_num(v, o.metric)} ({o.provenance})")
    if not t.feasible:
        over = [k for k, v in t.constraints.items() if v > 0]
        bits.append("over budget: " + ", ".join(over))
    return "\n".join(bits)


def _on(o: ObjectiveInfo) -> str:
    return f" on {o.target}" if o.target else ""


def _pick_number(s: Summary) -> int | None:
    return s.pick.number if s.pick else None


# ------------------------------------------------------------------ pareto scatter
def _groups(s: Summary) -> list[Group]:
    """(legend label, trials, style) for every marker class, drawn in this order."""
    pick = _pick_number(s)
    others = [t for t in s.complete if t.feasible and not t.on_front]
    infeasible = [t for t in s.complete if not t.feasible]
    groups: list[Group] = [
        ("other trials", others, {"marker": "circle", "color": C_OTHER, "fill": "#fff"}),
        ("over a budget", infeasible, {"marker": "x", "color": C_INFEASIBLE}),
        ("Pareto front", list(s.front), {"marker": "circle", "color": C_FRONT, "size": 5}),
    ]
    if s.original is not None:
        style = {"marker": "diamond", "color": C_ORIGINAL, "fill": "#fff", "size": 6}
        groups.append(("original model", [s.original], style))
    if s.int8 is not None:
        style = {"marker": "square", "color": C_INT8, "fill": "#fff", "size": 5}
        groups.append(("plain int8", [s.int8], style))
    if pick is not None:
        chosen = [t for t in s.front if t.number == pick]
        style = {"marker": "star", "color": "#7a5c00", "fill": C_PICK, "size": 5}
        groups.append((f"recommended (trial {pick})", chosen, style))
    return groups


def _pairs(s: Summary) -> list[tuple[ObjectiveInfo, ObjectiveInfo]]:
    # accuracy reads best on the y axis
    return [
        (b, a) if a.metric == Metric.ACCURACY else (a, b)
        for a, b in itertools.combinations(s.objectives, 2)
    ]


def _better(o: ObjectiveInfo, axis: str) -> str:
    if axis == "x":
        return "right" if o.maximize else "left"
    return "up" if o.maximize else "down"


def _scatter(s: Summary, xo: ObjectiveInfo, yo: ObjectiveInfo) -> str:
    series = []
    for label, trials, style in _groups(s):
        pts = [
            Point(float(v[xo.name]), float(v[yo.name]), _tip(s, t))
            for t in trials
            if xo.name in (v := t.values) and yo.name in v
        ]
        if pts:
            series.append(Series(label, tuple(pts), **style))
    return xy_plot(
        f"{yo.noun}{_on(yo)} vs {xo.noun}{_on(xo)}",
        Axis(xo.label),
        Axis(yo.label),
        series,
        width=660,
        height=430,
        note=f"better: {_better(xo, 'x')}, {_better(yo, 'y')}; hover a point for its trial",
    )


def pareto_section(s: Summary) -> str:
    """One scatter plot per pair of objectives (at most ``MAX_PAIR_PLOTS``)."""
    if len(s.objectives) < 2:
        return "<p>Only one objective: no trade-off to plot.</p>"
    if not s.complete:
        return "<p>No trial completed, so there is nothing to plot.</p>"
    pairs = _pairs(s)
    plots = [_scatter(s, xo, yo) for xo, yo in pairs[:MAX_PAIR_PLOTS]]
    more = ""
    if len(pairs) > MAX_PAIR_PLOTS:
        more = f"<p class='muted'>{len(pairs) - MAX_PAIR_PLOTS} more objective pairs not drawn.</p>"
    lead = (
        "<p class='muted'>Front = feasible trials no other feasible trial beats in every "
        "objective at once (all objectives, not only the two in a plot). Numbers are on the "
        "validation split.</p>"
    )
    return lead + f'<div class="grid">{"".join(plots)}</div>{more}'


# ------------------------------------------------------------------ parallel coordinates
def _pc_extra(s: Summary, members: Sequence[TrialRecord]) -> list[tuple[str, Metric]]:
    """(target, metric) of the non-objective numbers some front member recorded."""
    objective_names = {o.name for o in s.objectives}
    return [
        (tgt, m)
        for tgt in s.targets
        for m in PC_EXTRA_METRICS
        if any(t.metric(tgt, m) for t in members) and f"{m}[{tgt}]" not in objective_names
    ]


def _pc_axes(
    s: Summary, members: Sequence[TrialRecord], extra: Sequence[tuple[str, Metric]]
) -> list[PcAxis]:
    axes = [
        PcAxis(
            metric_title(o.metric),
            o.maximize,
            f"{o.target + ', ' if o.target else ''}{o.provenance}",
        )
        for o in s.objectives
    ]
    for tgt, m in extra:
        prov = next((str(e.provenance) for t in members if (e := t.metric(tgt, m))), "?")
        axes.append(PcAxis(metric_title(m), m.maximize, f"{tgt}, {prov}"))
    return axes


def _pc_line(
    s: Summary, t: TrialRecord, extra: Sequence[tuple[str, Metric]], pick: int | None
) -> PcLine:
    vec: list[float | None] = list(s.objective_vector(t) or [])
    for tgt, m in extra:
        e = t.metric(tgt, m)
        vec.append(float(e.value) if e is not None and e.value is not None else None)
    styles = {"unchanged": (C_ORIGINAL, 2.0, BASELINE_DASH), "int8": (C_INT8, 2.0, BASELINE_DASH)}
    if t.number == pick:
        color, width, dash = C_PICK_LINE, 3.5, None
    else:
        color, width, dash = styles.get(t.baseline or "", (C_FRONT, 1.4, None))
    return PcLine(tuple(vec), f"#{t.number}", color, width, dash, _tip(s, t))


def _pc_legend(s: Summary, pick: int | None) -> list[PcLegend]:
    legend = [PcLegend("front member", C_FRONT)]
    if pick is not None:
        legend.append(PcLegend(f"recommended (trial {pick})", C_PICK_LINE))
    if s.original is not None:
        legend.append(PcLegend("original model", C_ORIGINAL, BASELINE_DASH))
    if s.int8 is not None:
        legend.append(PcLegend("plain int8", C_INT8, BASELINE_DASH))
    return legend


def parallel_section(s: Summary) -> str:
    """The feasible front (and the baselines) across every objective and extra number."""
    members = [t for t in s.front if s.objective_vector(t) is not None]
    if not members:
        return "<p>No feasible front member to draw.</p>"
    extra = _pc_extra(s, members)
    axes = _pc_axes(s, members, extra)
    rows = list(members)
    for b in (s.original, s.int8):
        if b is not None and b not in rows and s.objective_vector(b) is not None:
            rows.append(b)
    pick = _pick_number(s)
    # thickest last, so the pick is drawn on top
    lines = sorted((_pc_line(s, t, extra, pick) for t in rows), key=lambda ln: ln.width)
    svg = parallel_coordinates(
        f"Front members across {len(axes)} numbers (each axis min-max over these lines)",
        axes,
        lines,
        _pc_legend(s, pick),
        width=max(900, min(1340, 170 * len(axes) + 150)),
        height=440,
    )
    return (
        "<p class='muted'>Each line is one trial; every axis is scaled to the lines drawn and "
        "turned so that up is better. Baselines are dashed.</p>" + svg
    )


# ------------------------------------------------------------------ history
def _history_series(s: Summary, i: int, numbers: Sequence[int]) -> list[Series]:
    """Objective ``i`` of every complete trial by trial number, its running best, and
    failed and stopped-early trials as markers along the bottom."""
    o = s.objectives[i]
    feas: list[Point] = []
    infeas: list[Point] = []
    front: list[Point] = []
    for t in s.complete:
        vec = s.objective_vector(t)
        if vec is None:
            continue
        p = Point(float(t.number), vec[i], _tip(s, t))
        if t.on_front:
            front.append(p)
        elif t.feasible:
            feas.append(p)
        else:
            infeas.append(p)
    feasible = {t.number: t for t in s.complete if t.feasible}
    vals: list[float | None] = []
    for n in numbers:
        vec = s.objective_vector(feasible[n]) if n in feasible else None
        vals.append(vec[i] if vec else None)
    best = running_best(vals, o.maximize)
    best_pts = tuple(
        Point(float(n), b) for n, b in zip(numbers, best, strict=True) if b is not None
    )
    floor = min((p.y for p in feas + infeas + front), default=0.0)
    fails = tuple(
        Point(float(t.number), floor, f"trial {t.number} failed: {fail_label(t)}") for t in s.failed
    )
    stopped = tuple(
        Point(float(t.number), floor, f"trial {t.number} stopped early: {t.stopped_reason or ''}")
        for t in s.stopped
    )
    series = [
        Series("running best (feasible)", best_pts, marker="none", line="step", color="#2ca02c"),
        Series("feasible", tuple(feas), color=C_OTHER, fill="#fff"),
        Series("over a budget", tuple(infeas), marker="x", color=C_INFEASIBLE),
        Series("on the front", tuple(front), color=C_FRONT, size=4.5),
        Series("failed (at the bottom)", fails, marker="triangle", color=C_FAIL, fill="#fff"),
        Series(
            "stopped early (at the bottom)",
            stopped,
            marker="triangle",
            color=C_STOPPED,
            fill="#fff",
        ),
    ]
    return [x for x in series if x.points]


def history_section(s: Summary) -> str:
    """One plot per objective over trial numbers."""
    if not s.complete:
        return (
            f"<p>No trial completed ({len(s.trials)} trial(s)), so there is no objective value "
            "to plot over time; the reasons are listed below.</p>"
        )
    numbers = sorted(t.number for t in s.trials)
    plots = [
        xy_plot(
            f"{o.noun}{_on(o)} by trial",
            Axis("trial number", -0.5, max(numbers) + 0.5),
            Axis(o.label),
            _history_series(s, i, numbers),
            width=660,
            height=360,
        )
        for i, o in enumerate(s.objectives)
    ]
    return f'<div class="grid">{"".join(plots)}</div>'


# ------------------------------------------------------------------ importance
def importance_section(s: Summary) -> str:
    """Bars of parameter importance per objective, or why there are none."""
    if s.records.importance is None:
        return (
            "<p>Parameter importance is not in these records: they were loaded without "
            "importances (<code>load_run(..., importance=True)</code> computes them, as "
            "<code>edgeopt report</code> does).</p>"
        )
    imp = s.records.importance
    if not imp:
        return (
            f"<p>Parameter importance is absent: it needs at least 4 complete trials with "
            f"varied parameters (this run has {len(s.complete)} complete), and Optuna's "
            "evaluator could not compute it otherwise.</p>"
        )
    plots = []
    missing = []
    for o in s.objectives:
        items = [(k, float(v)) for k, v in (imp.get(o.name) or {}).items()]
        if not items:
            missing.append(o.name)
            continue
        plots.append(
            bar_chart(
                f"importance for {o.noun}{_on(o)}",
                items,
                width=660,
                value_label="relative importance, normalized to sum 1 (optuna.importance)",
            )
        )
    note = ""
    if len(s.complete) < 30:
        # fANOVA fits a forest on the completed trials; on a few dozen, with conditional
        # parameters, it credits parameters that only co-vary with the ones that matter
        note += (
            f"<p class='muted'>Based on {len(s.complete)} complete trials: with fewer than "
            "about 30, importances are rough; read them as hints, not rankings.</p>"
        )
    if missing:
        note += (
            "<p class='muted'>No importance for " + escape(", ".join(missing)) + ": the "
            "evaluator failed or every trial had the same value.</p>"
        )
    return f'<div class="grid">{"".join(plots)}</div>{note}'
