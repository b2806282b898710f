"""The table sections of the HTML report: front members (with the baselines), trials that did
not make it, and every trial."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from html import escape
from typing import Any

from edgeopt.metrics import TASK_METRICS, Metric, task_metric_noun
from edgeopt.record_seq import seq_latency
from edgeopt.records import MetricEntry, TrialRecord
from edgeopt.report.final_latency import (
    final_figure,
    final_targets,
    fmt_speedup,
    speed_phrase,
)
from edgeopt.report.model import (
    BASELINE_NAMES,
    Summary,
    fmt_num,
    metric_short,
    present_metrics,
    score_interval,
)
from edgeopt.report.runtimes import ORT_CPU, converted, measured_on
from edgeopt.report.stats import accuracy_interval, fmt_interval, interval_note
from edgeopt.report.target_fronts import target_fronts


def front_note(s: Summary) -> str:
    """What the front table's provenance tags mean: the runtime(s) that timed the measured
    numbers (``runtimes.measured_on``; ONNX Runtime's alone is named in full) and what
    scored the accuracy."""
    on = measured_on(s.records)
    timed = "ONNX Runtime" if on == ORT_CPU else on
    scored = (
        " on each candidate's ONNX file with ONNX Runtime, whatever runtime timed it (a "
        "converted file is timed only once its conversion passed a top-1 parity check: "
        "against that file, or for an int8 .tflite, ai-edge-quantizer's own int8, its float "
        "conversion against the torch model; a converted file's own score is in its "
        "target's front)"
        if converted(s.records)
        else ""
    )
    return (
        f"<p class='muted'>measured = on this host with {escape(timed)} (host latency: "
        "interleaved against the original, median of round ratios times its reference "
        "latency); estimated = from the hardware profile's cost model (energy shown with its "
        f"low–high interval). Accuracy is measured on this host{scored}; val = the split the "
        "search selected on, test = never seen by the search. ONNX paths are relative to the "
        "run directory.</p>"
    )


Column = tuple[str, str]  # (target, metric)


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table; every header and cell is escaped."""
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


# ------------------------------------------------------------------ front table
def _prov(provenance: str | None) -> str:
    p = "" if provenance is None else str(provenance)
    return f'<span class="prov {escape(p)}">{escape(p)}</span>'


def _num_cell(
    entry: MetricEntry | None,
    metric: str = "",
    n: Any = None,
    ci: tuple[float, float] | None = None,
) -> str:
    """A number with its provenance; an estimate's low–high, or with ``n`` (samples behind
    an accuracy) its 95 % confidence interval, or the 95 % interval ``ci`` given."""
    if entry is None:
        return '<td class="n">-</td>'
    txt = fmt_num(entry.value, metric)
    lo, hi = entry.low, entry.high
    if lo is not None and hi is not None:
        txt += f" <span class='muted'>({fmt_num(lo)}–{fmt_num(hi)})</span>"
    if ci is None:
        ci = accuracy_interval(entry.value, n)
    if ci is not None:
        txt += f" <span class='muted ci'>{fmt_interval(ci)}</span>"
    return f'<td class="n">{txt}{_prov(entry.provenance)}</td>'


def _measured(value: float | None) -> MetricEntry:
    return MetricEntry(value=value, provenance="measured")


def _front_rows(s: Summary) -> list[TrialRecord]:
    """The front, then the baselines that are not on it."""
    rows = list(s.front)
    for extra in (s.original, s.int8):
        if extra is not None and extra not in rows:
            rows.append(extra)
    return rows


def _front_head(s: Summary, cols: Sequence[Column]) -> list[str]:
    kind = escape(s.score_noun)
    head = [
        "trial",
        "configuration",
        f"val {kind}",
        f"test {kind} ({escape(str(s.records.test_split or '-'))} split)",
        metric_short(Metric.SIZE_MB),
    ]
    head += [_col_head(tgt, m) for tgt, m in cols]
    head.append("ONNX file")
    return head


def _front_tag(t: TrialRecord, picked: bool) -> str:
    """What the configuration cell says after the description (baseline, off front, pick)."""
    name = BASELINE_NAMES.get(t.baseline or "")
    tag = f" <b>({name})</b>" if name else ""
    if not t.on_front:
        tag += " <span class='muted'>not on front</span>"
    if picked:
        tag += " <b>★ recommended</b>"
    return tag


def _front_row(s: Summary, t: TrialRecord, cols: Sequence[Column]) -> str:
    picked = s.pick is not None and t.number == s.pick.number
    cls = [c for c, on in (("picked", picked), ("base", not t.on_front)) if on]
    cand = escape(json.dumps(t.candidate, indent=1))
    test = t.test_accuracy
    cells = [
        f'<td class="n">{t.number}</td>',
        f"<td class='cfg'>{escape(t.describe or 'unchanged')}{_front_tag(t, picked)}"
        f"<details><summary>config</summary><pre>{cand}</pre></details></td>",
        _num_cell(
            _measured(t.val_accuracy),
            Metric.ACCURACY,
            ci=score_interval(s.records, t, "val"),
        ),
        _num_cell(
            _measured(test) if test is not None else None,
            Metric.ACCURACY,
            ci=score_interval(s.records, t, "test"),
        ),
        _num_cell(_measured(t.size_mb), Metric.SIZE_MB),
    ]
    cells += [_col_cell(s, t, tgt, m) for tgt, m in cols]
    cells.append(f"<td><code>{escape(str(t.onnx or '-'))}</code></td>")
    return f'<tr class="{" ".join(cls)}">' + "".join(cells) + "</tr>"


def front_table(s: Summary) -> str:
    """Every front member and baseline with its numbers, provenance and configuration."""
    rows = _front_rows(s)
    if not rows:
        return "<p>No complete trial to show.</p>"
    metrics = present_metrics(s)
    cols = [(tgt, m) for tgt in s.targets for m in metrics if any(t.metric(tgt, m) for t in rows)]
    cols = _with_final_columns(cols, final_targets(s.records, rows))
    cols = _with_seq_columns(cols, s)
    head = "".join(f"<th>{h}</th>" for h in _front_head(s, cols))
    out = [f"<table><thead><tr>{head}</tr></thead><tbody>"]
    out += [_front_row(s, t, cols) for t in rows]
    out.append("</tbody></table>")
    out.append(front_note(s))
    ci_note = interval_note(s.records, s.accuracy_kind)
    if ci_note:
        out.append(f"<p class='muted'>{escape(ci_note)}</p>")
    return "\n".join(out)


# ------------------------------------------------------------------ final latency
FINAL = "final"  # the column after a target's latency: its final re-measure (Column metric)


def _with_final_columns(cols: Sequence[Column], targets: Sequence[str]) -> list[Column]:
    """``cols`` with a final-latency column after the latency of each of ``targets``."""
    out: list[Column] = []
    for tgt, m in cols:
        out.append((tgt, m))
        if m == Metric.LATENCY_MS and tgt in targets:
            out.append((tgt, FINAL))
    return out


# ------------------------------------------------------------------ latency per length
SEQ = "@"  # a Column metric ``@<length>``: p50 latency at that sequence length (--seq-lens)
LATENCY_COLS = (Metric.LATENCY_MS, FINAL)


def _with_seq_columns(cols: Sequence[Column], s: Summary) -> list[Column]:
    """``cols`` with, after each target's latency (and its final re-measure) as report.md
    has them, one column per sequence length the run timed it at (``optimize --seq-lens``);
    unchanged for a run without lengths."""
    out = list(cols)
    for tgt in s.targets:
        by_seq = seq_latency(s.records.latency_by_seq, tgt)
        if by_seq is None:
            continue
        mine = [i + 1 for i, (t, _) in enumerate(out) if t == tgt]
        latency = [i + 1 for i, (t, m) in enumerate(out) if t == tgt and m in LATENCY_COLS]
        at = max(latency or mine or [len(out)])
        out[at:at] = [(tgt, SEQ + n) for n in by_seq.lengths]
    return out


def _seq_cell(s: Summary, t: TrialRecord, tgt: str, length: str) -> str:
    """``t``'s p50 at ``length`` tokens on ``tgt``, with the provenance of those figures."""
    by_seq = seq_latency(s.records.latency_by_seq, tgt)
    p50 = by_seq.p50_ms(t.number, length) if by_seq is not None else None
    if by_seq is None or p50 is None:
        return _num_cell(None)
    return _num_cell(MetricEntry(value=p50, provenance=by_seq.provenance), Metric.LATENCY_MS)


def _col_head(tgt: str, m: str) -> str:
    if m.startswith(SEQ):
        return f"{metric_short(Metric.LATENCY_MS)} {escape(m)}<br>{escape(tgt)}"
    if m == FINAL:
        return f"final {metric_short(Metric.LATENCY_MS)}<br>{escape(tgt)}<br>(after the search)"
    return f"{metric_short(m)}<br>{escape(tgt)}"


def _col_cell(s: Summary, t: TrialRecord, tgt: str, m: str) -> str:
    if m.startswith(SEQ):
        return _seq_cell(s, t, tgt, m.removeprefix(SEQ))
    if m != FINAL:
        return _num_cell(t.metric(tgt, m), m)
    f = final_figure(s.records, t, tgt)
    if f is None:
        return '<td class="n">-</td>'
    txt = fmt_num(f.p50_ms, Metric.LATENCY_MS)
    if f.speedup is not None:
        txt += f", {speed_phrase(f.speedup)}"
    note = f.note()
    if note:
        txt += f"<div class='note'>⚠ {escape(note)}</div>"
    elif f.in_search_speedup:
        txt += f" <span class='muted'>(in-search {fmt_speedup(f.in_search_speedup)})</span>"
    return f'<td class="n">{txt}{_prov("measured")}</td>'


# ------------------------------------------------------------------ task metrics
def task_metrics_table(s: Summary) -> str:
    """Every task metric on validation and test for the front and the baselines, as
    finalize recorded them; empty when it recorded none (no labelled data, an older run)."""
    rows = [t for t in _front_rows(s) if t.task_metrics]
    if not rows:
        return ""
    head = ["trial", "configuration"]
    head += [f"{split} {task_metric_noun(m)}" for m in TASK_METRICS for split in ("val", "test")]
    out = ["<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>"]
    out.append("<tbody>")
    for t in rows:
        picked = s.pick is not None and t.number == s.pick.number
        cells = [
            f'<td class="n">{t.number}</td>',
            f"<td class='cfg'>{escape(t.describe or 'unchanged')}{_front_tag(t, picked)}</td>",
        ]
        for m in TASK_METRICS:
            for split in ("val", "test"):
                entry = t.task_metric(split, m)
                n = s.records.n(split) if m == "accuracy" else None
                ci = None if m == "accuracy" or entry is None else entry.interval
                # the interval is shown as ``ci``, not as an estimate's low–high
                shown = None if entry is None else replace(entry, low=None, high=None)
                cells.append(_num_cell(shown, Metric.ACCURACY, n, ci))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    optimized = task_metric_noun(s.metric)
    on_onnx = " on each candidate's ONNX file" if converted(s.records) else ""
    out.append(
        f"<p class='muted'>Measured on this host with ONNX Runtime{on_onnx}; val = the split "
        "the search selected on, test = never seen by the search. The search optimized "
        f"{escape(optimized)}"
        f" (--metric {escape(s.metric)}). F1, precision and recall are macro averages over the "
        "classes present in the labels or the predictions; ROC AUC is one-vs-rest on the "
        "softmax of the outputs, averaged over the classes present in the labels. [low, high]: "
        "95 % interval, Wilson score for accuracy, percentile bootstrap (200 resamples of the "
        "split) for the others.</p>"
    )
    return "\n".join(out)


# ------------------------------------------------------------------ failures
def _over_budget(t: TrialRecord) -> str:
    over = [f"{k} by {fmt_num(v)}" for k, v in t.constraints.items() if v > 0]
    return "; ".join(over)


def failures_section(s: Summary) -> str:
    """Failed, stopped-early and over-budget trials, each with its reason."""
    out = []
    if s.failed:
        rows = [
            [str(t.number), t.describe or "", str(t.fail_stage or ""), str(t.fail_reason or "")]
            for t in s.failed
        ]
        out.append(f"<h3>Failed ({len(s.failed)})</h3>")
        out.append(table(["trial", "configuration", "stage", "reason"], rows))
    if s.stopped:
        rows = [[str(t.number), t.describe or "", str(t.stopped_reason or "")] for t in s.stopped]
        out.append(f"<h3>Stopped early ({len(s.stopped)})</h3>")
        out.append(table(["trial", "configuration", "reason"], rows))
    infeasible = [t for t in s.complete if not t.feasible]
    if infeasible:
        rows = [[str(t.number), t.describe or "", _over_budget(t)] for t in infeasible]
        out.append(f"<h3>Over a budget ({len(infeasible)})</h3>")
        out.append(table(["trial", "configuration", "exceeds"], rows))
    if not out:
        return "<p>Every trial completed within the budgets.</p>"
    return "\n".join(out)


# ------------------------------------------------------------------ all trials
def all_trials(s: Summary) -> str:
    """Every trial in one collapsed table (the CSV has more columns)."""
    head = ["trial", "state", "configuration", "feasible", "front"]
    head += [f"{o.short} ({o.provenance})" for o in s.objectives]
    head += ["trial s"]
    rows = []
    for t in s.trials:
        row = [
            str(t.number),
            str(t.state),
            t.describe or "",
            "" if not t.is_complete else ("yes" if t.feasible else "no"),
            "yes" if t.on_front else "",
        ]
        row += [fmt_num(t.values.get(o.name), o.metric) for o in s.objectives]
        row.append(fmt_num(t.timing.trial_s))
        rows.append(row)
    return (
        f"<details><summary>{len(rows)} trials (also in trials.csv)</summary>"
        f"{table(head, rows)}</details>"
    )


# ------------------------------------------------------------------ front per target
def target_fronts_section(s: Summary) -> str:
    """Each target's own front (``target_fronts``), fastest first, with the file its
    runtime loads; empty for a run over one target."""
    parts = []
    for f in target_fronts(s.records):
        judged = [o for o in f.objectives if o.metric != Metric.ACCURACY]
        head = ["trial", "config", f"val {s.score_noun}"]
        if f.converted:
            head.append(f"val {s.score_noun}, its file")
        head += [f"{metric_short(o.metric)} ({o.provenance})" for o in judged]
        head.append("file")
        rows = []
        for t in f.fastest_first():
            picked = " ★" if s.pick is not None and t.number == s.pick.number else ""
            cells = [f"{t.number}{picked}", t.describe or "unchanged"]
            cells.append(fmt_num(t.val_accuracy, Metric.ACCURACY))
            if f.converted:
                cells.append(fmt_num(f.file_score(t), Metric.ACCURACY))
            cells += [fmt_num(t.values[o.name], o.metric) for o in judged]
            cells.append(f.file_of(t) or "-")
            rows.append(cells)
        parts.append(
            f"<h3>{escape(f.target)}</h3><p class='muted'>{escape(f.label)}; "
            f"{len(rows)} candidate(s) Pareto-optimal on this target alone, fastest first.</p>"
            + table(head, rows)
        )
    if not parts:
        return ""
    return (
        "<p class='muted'>Each target judged alone: the run's accuracy objective, the "
        "target's own objectives and the shared ones (size). A joint front member good only "
        "on another target is not on this one. Files are relative to the run directory.</p>"
        + "".join(parts)
    )
