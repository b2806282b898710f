"""The HTML report: one self-contained page (inline SVG and CSS, no scripts, no network).

Sections: run facts and notes; the recommended pick; Pareto scatter plots for each pair of
objectives; the front-member table; for a run over several targets each target's own front;
parallel coordinates of the front; optimization history per objective; parameter importance;
failed, stopped-early and infeasible trials; every trial in a collapsed table. This module
assembles the page; the plot sections are in ``html_plots``, the tables in ``html_tables``.
"""

from __future__ import annotations

from html import escape

from edgeopt import __version__
from edgeopt.report.html_plots import (
    history_section,
    importance_section,
    parallel_section,
    pareto_section,
)
from edgeopt.report.html_tables import (
    all_trials,
    failures_section,
    front_table,
    target_fronts_section,
    task_metrics_table,
)
from edgeopt.report.model import Summary

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
        pareto_section(s),
        "<h2>Front members</h2>",
        front_table(s),
        *_target_section(s),
        *_task_section(s),
        "<h2>Parallel coordinates of the front</h2>",
        parallel_section(s),
        "<h2>Optimization history</h2>",
        history_section(s),
        "<h2>Hyperparameter importance</h2>",
        importance_section(s),
        "<h2>Trials that did not make it</h2>",
        failures_section(s),
        "<h2>All trials</h2>",
        all_trials(s),
        _footer(s),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ header and pick
def _header(s: Summary) -> str:
    run = s.records
    budgets = ", ".join(f"{k} = {v:g}" for k, v in s.budgets.items()) or "none"
    data = run.data or "none (fidelity on synthetic inputs)"
    facts = [
        ("run directory", run.run_dir or ""),
        ("model", run.model_path or ""),
        ("data", data),
        ("targets", ", ".join(s.targets)),
        (
            "objectives",
            ", ".join(o.with_direction for o in s.objectives),
        ),
        ("optimized metric", f"{s.score_noun} (validation split)"),
        ("budgets", budgets),
        (
            "sampler",
            f"{run.sampler or '?'} (seed {'?' if run.seed is None else run.seed})"
            + (", plain search" if run.plain_search else ""),
        ),
        (
            "trials",
            f"{len(s.trials)}: {len(s.complete)} complete, {len(s.failed)} failed, "
            f"{len(s.stopped)} stopped early; {len(s.front)} on the feasible front",
        ),
        ("host", run.host or ""),
    ]
    rows = "".join(f"<div><b>{escape(k)}:</b> {escape(str(v))}</div>" for k, v in facts)
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in s.notes)
    return f"<h1>edgeopt report: {escape(s.model_name)}</h1><div class='facts'>{rows}</div>{notes}"


def _target_section(s: Summary) -> list[str]:
    section = target_fronts_section(s)
    return ["<h2>Front per target</h2>", section] if section else []


def _task_section(s: Summary) -> list[str]:
    table = task_metrics_table(s)
    return ["<h2>Task metrics of the front</h2>", table] if table else []


def _pick_box(s: Summary) -> str:
    if s.pick is None:
        return f'<div class="pick"><b>No recommendation.</b> {escape(s.no_pick_reason or "")}</div>'
    t = s.records.trial(s.pick.number)
    onnx = escape(str(t.onnx or "")) if t else ""
    return (
        f'<div class="pick"><b>Recommended: trial {s.pick.number}</b> '
        f"(<code>{onnx}</code>). {escape(s.pick.reason)}"
        f'<div class="muted">Method: {escape(s.pick.method)}; only feasible front members '
        "(within every budget) are candidates.</div></div>"
    )


def _footer(s: Summary) -> str:
    return (
        f"<p class='muted'>Generated by edgeopt {escape(__version__)} from the run's records "
        f"(schema {escape(str(s.records.schema_version))}). This page is self-contained "
        "and works offline.</p>"
    )
