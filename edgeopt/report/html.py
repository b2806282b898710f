"""The HTML report: one self-contained page (inline SVG and CSS, no scripts, no network).

Sections: run facts and notes; the recommended pick; Pareto scatter plots for each pair of
objectives; the front-member table; parallel coordinates of the front; optimization
history per objective; parameter importance; failed, stopped-early and infeasible trials;
every trial in a collapsed table.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from edgeopt import __version__
from edgeopt.report.pareto import running_best
from edgeopt.report.summary import (
    NOUNS,
    ObjectiveInfo,
    Summary,
    fail_label,
    fmt_num,
    metric_entry,
    present_metrics,
)
from edgeopt.report.svg import (
    Axis,
    PcAxis,
    PcLegend,
    PcLine,
    Point,
    Series,
    bar_chart,
    parallel_coordinates,
    xy_plot,
)

MAX_PAIR_PLOTS = 12
C_FRONT = "#1f77b4"
C_OTHER = "#9aa5b1"
C_INFEASIBLE = "#d62728"
C_ORIGINAL = "#111111"
C_INT8 = "#ff7f0e"
C_PICK = "#f2b705"
C_FAIL = "#8c564b"
C_PRUNED = "#9467bd"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1b1f23;max-width:1360px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d0d7de;padding-bottom:4px}
.facts{color:#444}.facts b{color:#1b1f23}
.note{background:#fff8e1;border-left:4px solid #f2b705;padding:6px 10px;margin:6px 0}
.pick{background:#eef6ff;border-left:4px solid #1f77b4;padding:8px 12px;margin:10px 0}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.plot{border:1px solid #e1e4e8;border-radius:4px;background:#fff}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.cfg{min-width:230px}
tr.picked td{background:#fff6d6}tr.base td{background:#f3f3f3}
.prov{font-size:10.5px;padding:0 3px;border-radius:3px;margin-left:3px;white-space:nowrap}
.measured{background:#dcf5e3;color:#135e2b}.estimated{background:#fde7d9;color:#8a3b0c}
code{font-size:12px}details{margin:4px 0}.muted{color:#666}
"""


def render_html(s: Summary) -> str:
    """The whole page as one string (see module doc)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgeopt report: {escape(s.model_name)}</title>",
        f"<style>{CSS}</style></head><body>",
        _header(s),
        _pick_box(s),
        "<h2>Pareto front</h2>",
        _pareto_section(s),
        "<h2>Front members</h2>",
        _front_table(s),
        "<h2>Parallel coordinates of the front</h2>",
        _parallel_section(s),
        "<h2>Optimization history</h2>",
        _history_section(s),
        "<h2>Hyperparameter importance</h2>",
        _importance_section(s),
        "<h2>Trials that did not make it</h2>",
        _failures_section(s),
        "<h2>All trials</h2>",
        _all_trials(s),
        _footer(s),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ header and pick
def _header(s: Summary) -> str:
    cfg = s.records.get("config", {})
    base = s.records.get("baseline", {})
    budgets = ", ".join(f"{k} = {v:g}" for k, v in s.budgets.items()) or "none"
    data = cfg.get("data") or "none (fidelity on synthetic inputs)"
    facts = [
        ("run directory", s.records.get("run_dir", "")),
        ("model", cfg.get("model", {}).get("path", "")),
        ("data", data),
        ("targets", ", ".join(s.targets)),
        (
            "objectives",
            ", ".join(f"{o.name} ({'max' if o.maximize else 'min'})" for o in s.objectives),
        ),
        ("budgets", budgets),
        ("sampler", f"{cfg.get('sampler', '?')} (seed {cfg.get('seed', '?')})"),
        (
            "trials",
            f"{len(s.trials)}: {len(s.complete)} complete, {len(s.failed)} failed, "
            f"{len(s.pruned)} stopped early; {len(s.front)} on the feasible front",
        ),
        ("host", base.get("host", "")),
    ]
    rows = "".join(f"<div><b>{escape(k)}:</b> {escape(str(v))}</div>" for k, v in facts)
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in s.notes)
    return f"<h1>edgeopt report: {escape(s.model_name)}</h1><div class='facts'>{rows}</div>{notes}"


def _pick_box(s: Summary) -> str:
    if s.pick is None:
        return f'<div class="pick"><b>No recommendation.</b> {escape(s.no_pick_reason or "")}</div>'
    t = _trial(s, s.pick.number)
    onnx = escape(str(t.get("onnx") or "")) if t else ""
    return (
        f'<div class="pick"><b>Recommended: trial {s.pick.number}</b> '
        f"(<code>{onnx}</code>). {escape(s.pick.reason)}"
        f'<div class="muted">Method: {escape(s.pick.method)}; only feasible front members '
        "(within every budget) are candidates.</div></div>"
    )


def _trial(s: Summary, number: int) -> Mapping[str, Any] | None:
    return next((t for t in s.trials if t.get("number") == number), None)


# ------------------------------------------------------------------ pareto scatter
def _tip(s: Summary, t: Mapping[str, Any]) -> str:
    bits = [f"trial {t['number']}: {t.get('describe') or 'unchanged'}"]
    for o in s.objectives:
        v = (t.get("values") or {}).get(o.name)
        bits.append(f"{o.name} = {fmt_num(v, o.metric)} ({o.provenance})")
    if not t.get("feasible", True):
        over = [k for k, v in (t.get("constraints") or {}).items() if v > 0]
        bits.append("over budget: " + ", ".join(over))
    return "\n".join(bits)


def _groups(s: Summary) -> list[tuple[str, list[Mapping[str, Any]], dict[str, Any]]]:
    """(legend label, trials, style) for every marker class, drawn in this order."""
    pick = s.pick.number if s.pick else None
    others = [t for t in s.complete if t.get("feasible", True) and not t.get("on_front")]
    infeasible = [t for t in s.complete if not t.get("feasible", True)]
    groups: list[tuple[str, list[Mapping[str, Any]], dict[str, Any]]] = [
        ("other trials", others, {"marker": "circle", "color": C_OTHER, "fill": "#fff"}),
        ("over a budget", infeasible, {"marker": "x", "color": C_INFEASIBLE}),
        ("Pareto front", list(s.front), {"marker": "circle", "color": C_FRONT, "size": 5}),
    ]
    if s.original is not None:
        groups.append(
            (
                "original model",
                [s.original],
                {"marker": "diamond", "color": C_ORIGINAL, "fill": "#fff", "size": 6},
            )
        )
    if s.int8 is not None:
        groups.append(
            (
                "plain int8",
                [s.int8],
                {"marker": "square", "color": C_INT8, "fill": "#fff", "size": 5},
            )
        )
    if pick is not None:
        groups.append(
            (
                f"recommended (trial {pick})",
                [t for t in s.front if t["number"] == pick],
                {"marker": "star", "color": "#7a5c00", "fill": C_PICK, "size": 5},
            )
        )
    return groups


def _pairs(s: Summary) -> list[tuple[ObjectiveInfo, ObjectiveInfo]]:
    pairs = []
    for a, b in itertools.combinations(s.objectives, 2):
        # accuracy reads best on the y axis
        if a.metric == "accuracy":
            pairs.append((b, a))
        else:
            pairs.append((a, b))
    return pairs


def _pareto_section(s: Summary) -> str:
    if len(s.objectives) < 2:
        return "<p>Only one objective: no trade-off to plot.</p>"
    if not s.complete:
        return "<p>No trial completed, so there is nothing to plot.</p>"
    pairs = _pairs(s)
    plots = []
    for xo, yo in pairs[:MAX_PAIR_PLOTS]:
        series = []
        for label, trials, style in _groups(s):
            pts = []
            for t in trials:
                v = t.get("values") or {}
                if xo.name in v and yo.name in v:
                    pts.append(Point(float(v[xo.name]), float(v[yo.name]), _tip(s, t)))
            if pts:
                series.append(Series(label, tuple(pts), **style))
        plots.append(
            xy_plot(
                f"{yo.noun}{_on(yo)} vs {xo.noun}{_on(xo)}",
                Axis(xo.label),
                Axis(yo.label),
                series,
                width=660,
                height=430,
                note=f"better: {_better(xo, 'x')}, {_better(yo, 'y')}; hover a point for its trial",
            )
        )
    more = ""
    if len(pairs) > MAX_PAIR_PLOTS:
        more = f"<p class='muted'>{len(pairs) - MAX_PAIR_PLOTS} more objective pairs not drawn.</p>"
    lead = (
        "<p class='muted'>Front = feasible trials no other feasible trial beats in every "
        "objective at once (all objectives, not only the two in a plot). Numbers are on the "
        "validation split.</p>"
    )
    return lead + f'<div class="grid">{"".join(plots)}</div>{more}'


def _on(o: ObjectiveInfo) -> str:
    return f" on {o.target}" if o.target else ""


def _better(o: ObjectiveInfo, axis: str) -> str:
    if axis == "x":
        return "right" if o.maximize else "left"
    return "up" if o.maximize else "down"


# ------------------------------------------------------------------ front table
def _prov(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return ""
    p = str(entry.get("provenance", ""))
    return f'<span class="prov {escape(p)}">{escape(p)}</span>'


def _num_cell(entry: Mapping[str, Any] | None, metric: str = "") -> str:
    if not entry:
        return '<td class="n">-</td>'
    txt = fmt_num(entry.get("value"), metric)
    lo, hi = entry.get("low"), entry.get("high")
    if lo is not None and hi is not None:
        txt += f" <span class='muted'>({fmt_num(lo)}–{fmt_num(hi)})</span>"
    return f'<td class="n">{txt}{_prov(entry)}</td>'


def _front_table(s: Summary) -> str:
    rows = list(s.front)
    for extra in (s.original, s.int8):
        if extra is not None and extra not in rows:
            rows.append(extra)
    if not rows:
        return "<p>No complete trial to show.</p>"
    metrics = present_metrics(s)
    kind = "fidelity" if s.accuracy_kind == "fidelity" else "accuracy"
    head = [
        "trial",
        "configuration",
        f"val {kind}",
        f"test {kind} ({escape(str(s.records.get('test_split') or '-'))} split)",
        "size MB",
    ]
    units = {
        "latency_ms": "latency ms",
        "peak_memory_mb": "peak memory MB",
        "energy_mj": "energy mJ",
    }
    cols = [
        (tgt, m) for tgt in s.targets for m in metrics if any(metric_entry(t, tgt, m) for t in rows)
    ]
    for tgt, m in cols:
        head.append(f"{units[m]}<br>{escape(tgt)}")
    head.append("ONNX file")
    out = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    measured = {"value": 0, "provenance": "measured"}
    for t in rows:
        cls = []
        if s.pick and t["number"] == s.pick.number:
            cls.append("picked")
        if not t.get("on_front"):
            cls.append("base")
        tag = ""
        if t.get("baseline") == "unchanged":
            tag = " <b>(original)</b>"
        elif t.get("baseline") == "int8":
            tag = " <b>(plain int8)</b>"
        if not t.get("on_front"):
            tag += " <span class='muted'>not on front</span>"
        if s.pick and t["number"] == s.pick.number:
            tag += " <b>★ recommended</b>"
        cand = escape(json.dumps(t.get("candidate") or {}, indent=1))
        cells = [
            f'<td class="n">{t["number"]}</td>',
            f"<td class='cfg'>{escape(t.get('describe') or 'unchanged')}{tag}"
            f"<details><summary>config</summary><pre>{cand}</pre></details></td>",
            _num_cell({**measured, "value": t.get("val_accuracy")}, "accuracy"),
            _num_cell(
                {**measured, "value": t.get("test_accuracy")}
                if t.get("test_accuracy") is not None
                else None,
                "accuracy",
            ),
            _num_cell({**measured, "value": t.get("size_mb")}),
        ]
        for tgt, m in cols:
            cells.append(_num_cell(metric_entry(t, tgt, m), m))
        cells.append(f"<td><code>{escape(str(t.get('onnx') or '-'))}</code></td>")
        out.append(f'<tr class="{" ".join(cls)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out.append(
        "<p class='muted'>measured = on this host with ONNX Runtime (host latency: interleaved "
        "against the original, median of round ratios times its reference latency); estimated "
        "= from the hardware profile's cost model (energy shown with its low–high interval). "
        "Accuracy is measured on this host; val = the split the search selected on, test = "
        "never seen by the search. ONNX paths are relative to the run directory.</p>"
    )
    return "\n".join(out)


# ------------------------------------------------------------------ parallel coordinates
def _parallel_section(s: Summary) -> str:
    members = [t for t in s.front if s.objective_vector(t) is not None]
    if not members:
        return "<p>No feasible front member to draw.</p>"
    axes = [
        PcAxis(
            f"{NOUNS.get(o.metric, o.metric)}" + (f" ({o.unit})" if o.unit else ""),
            o.maximize,
            f"{o.target + ', ' if o.target else ''}{o.provenance}",
        )
        for o in s.objectives
    ]
    extra: list[tuple[str, str]] = []
    for tgt in s.targets:
        for m in ("peak_memory_mb", "energy_mj"):
            if any(metric_entry(t, tgt, m) for t in members):
                name = f"{m}[{tgt}]"
                if name not in {o.name for o in s.objectives}:
                    extra.append((tgt, m))
    for tgt, m in extra:
        prov = next((str(e["provenance"]) for t in members if (e := metric_entry(t, tgt, m))), "?")
        unit = "peak memory (MB)" if m == "peak_memory_mb" else "energy (mJ)"
        axes.append(PcAxis(unit, False, f"{tgt}, {prov}"))
    rows = list(members)
    for b in (s.original, s.int8):
        if b is not None and b not in rows and s.objective_vector(b) is not None:
            rows.append(b)
    lines = []
    pick = s.pick.number if s.pick else None
    for t in rows:
        vec: list[float | None] = list(s.objective_vector(t) or [])
        for tgt, m in extra:
            e = metric_entry(t, tgt, m)
            vec.append(float(e["value"]) if e else None)
        if t["number"] == pick:
            color, width, dash = "#c99700", 3.5, None
        elif t.get("baseline") == "unchanged":
            color, width, dash = C_ORIGINAL, 2.0, "6 4"
        elif t.get("baseline") == "int8":
            color, width, dash = C_INT8, 2.0, "6 4"
        else:
            color, width, dash = C_FRONT, 1.4, None
        lines.append(PcLine(tuple(vec), f"#{t['number']}", color, width, dash, _tip(s, t)))
    # draw the pick last so it is on top
    lines.sort(key=lambda ln: ln.width)
    legend = [PcLegend("front member", C_FRONT)]
    if pick is not None:
        legend.append(PcLegend(f"recommended (trial {pick})", "#c99700"))
    if s.original is not None:
        legend.append(PcLegend("original model", C_ORIGINAL, "6 4"))
    if s.int8 is not None:
        legend.append(PcLegend("plain int8", C_INT8, "6 4"))
    width = max(900, min(1340, 170 * len(axes) + 150))
    svg = parallel_coordinates(
        f"Front members across {len(axes)} numbers (each axis min-max over these lines)",
        axes,
        lines,
        legend,
        width=width,
        height=440,
    )
    return (
        "<p class='muted'>Each line is one trial; every axis is scaled to the lines drawn and "
        "turned so that up is better. Baselines are dashed.</p>" + svg
    )


# ------------------------------------------------------------------ history
def _history_section(s: Summary) -> str:
    if not s.complete:
        return (
            f"<p>No trial completed ({len(s.trials)} trial(s)), so there is no objective value "
            "to plot over time; the reasons are listed below.</p>"
        )
    plots = []
    numbers = [t["number"] for t in s.trials]
    for i, o in enumerate(s.objectives):
        feas, infeas, front = [], [], []
        for t in s.complete:
            vec = s.objective_vector(t)
            if vec is None:
                continue
            p = Point(float(t["number"]), vec[i], _tip(s, t))
            if t.get("on_front"):
                front.append(p)
            elif t.get("feasible", True):
                feas.append(p)
            else:
                infeas.append(p)
        by_number = {t["number"]: t for t in s.complete if t.get("feasible", True)}
        vals = []
        for n in sorted(numbers):
            t = by_number.get(n)
            vec = s.objective_vector(t) if t else None
            vals.append(vec[i] if vec else None)
        best = running_best(vals, o.maximize)
        best_pts = tuple(
            Point(float(n), b) for n, b in zip(sorted(numbers), best, strict=True) if b is not None
        )
        all_vals = [p.y for p in feas + infeas + front]
        floor = min(all_vals) if all_vals else 0.0
        if o.maximize is False and all_vals:
            floor = min(all_vals)
        fails = tuple(
            Point(float(t["number"]), floor, f"trial {t['number']} failed: {fail_label(t)}")
            for t in s.failed
        )
        pruned = tuple(
            Point(
                float(t["number"]),
                floor,
                f"trial {t['number']} stopped early: {t.get('pruned_reason', '')}",
            )
            for t in s.pruned
        )
        series = [
            Series(
                "running best (feasible)", best_pts, marker="none", line="step", color="#2ca02c"
            ),
            Series("feasible", tuple(feas), color=C_OTHER, fill="#fff"),
            Series("over a budget", tuple(infeas), marker="x", color=C_INFEASIBLE),
            Series("on the front", tuple(front), color=C_FRONT, size=4.5),
            Series("failed (at the bottom)", fails, marker="triangle", color=C_FAIL, fill="#fff"),
            Series(
                "stopped early (at the bottom)",
                pruned,
                marker="triangle",
                color=C_PRUNED,
                fill="#fff",
            ),
        ]
        series = [x for x in series if x.points]
        plots.append(
            xy_plot(
                f"{o.noun}{_on(o)} by trial",
                Axis("trial number", -0.5, max(numbers) + 0.5),
                Axis(o.label),
                series,
                width=660,
                height=360,
            )
        )
    return f'<div class="grid">{"".join(plots)}</div>'


# ------------------------------------------------------------------ importance
def _importance_section(s: Summary) -> str:
    if "importance" not in s.records:
        return (
            "<p>Parameter importance is not in these records: they were loaded without "
            "importances (<code>load_run(..., importance=True)</code> computes them, as "
            "<code>edgeopt report</code> does).</p>"
        )
    imp: Mapping[str, Mapping[str, float]] = s.records.get("importance") or {}
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


# ------------------------------------------------------------------ failures
def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _failures_section(s: Summary) -> str:
    out = []
    if s.failed:
        out.append(f"<h3>Failed ({len(s.failed)})</h3>")
        out.append(
            _table(
                ["trial", "configuration", "stage", "reason"],
                [
                    [
                        str(t["number"]),
                        t.get("describe") or "",
                        str(t.get("fail_stage", "")),
                        str(t.get("fail_reason", "")),
                    ]
                    for t in s.failed
                ],
            )
        )
    if s.pruned:
        out.append(f"<h3>Stopped early ({len(s.pruned)})</h3>")
        out.append(
            _table(
                ["trial", "configuration", "reason"],
                [
                    [str(t["number"]), t.get("describe") or "", str(t.get("pruned_reason", ""))]
                    for t in s.pruned
                ],
            )
        )
    infeasible = [t for t in s.complete if not t.get("feasible", True)]
    if infeasible:
        out.append(f"<h3>Over a budget ({len(infeasible)})</h3>")
        rows = []
        for t in infeasible:
            over = [
                f"{k} by {fmt_num(v)}" for k, v in (t.get("constraints") or {}).items() if v > 0
            ]
            rows.append([str(t["number"]), t.get("describe") or "", "; ".join(over)])
        out.append(_table(["trial", "configuration", "exceeds"], rows))
    if not out:
        return "<p>Every trial completed within the budgets.</p>"
    return "\n".join(out)


def _all_trials(s: Summary) -> str:
    head = ["trial", "state", "configuration", "feasible", "front"]
    head += [f"{o.short} ({o.provenance})" for o in s.objectives]
    head += ["trial s"]
    rows = []
    for t in s.trials:
        v = t.get("values") or {}
        row = [
            str(t["number"]),
            str(t.get("state")),
            t.get("describe") or "",
            "" if t.get("state") != "complete" else ("yes" if t.get("feasible") else "no"),
            "yes" if t.get("on_front") else "",
        ]
        row += [fmt_num(v.get(o.name), o.metric) for o in s.objectives]
        row.append(fmt_num((t.get("timing") or {}).get("trial_s")))
        rows.append(row)
    return (
        f"<details><summary>{len(rows)} trials (also in trials.csv)</summary>"
        f"{_table(head, rows)}</details>"
    )


def _footer(s: Summary) -> str:
    return (
        f"<p class='muted'>Generated by edgeopt {escape(__version__)} from the run's records "
        f"(schema {escape(str(s.records.get('schema_version')))}). This page is self-contained "
        "and works offline.</p>"
    )
