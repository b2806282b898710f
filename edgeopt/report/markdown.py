"""A short Markdown summary for a CI job summary or a PR comment (well under 60 lines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from edgeopt.metrics import TASK_METRICS, Metric, task_metric_noun
from edgeopt.record_seq import seq_latency
from edgeopt.records import TrialRecord
from edgeopt.report.final_latency import (
    FinalFigure,
    final_figure,
    final_targets,
    fmt_speedup,
    speed_phrase,
)
from edgeopt.report.model import (
    BASELINE_NAMES,
    Summary,
    fail_label,
    fmt_num,
    metric_short,
    score_interval,
)
from edgeopt.report.runtimes import ORT_CPU, converted, measured_on
from edgeopt.report.stats import accuracy_interval, fmt_interval, interval_note
from edgeopt.report.target_fronts import TargetFront, target_fronts

MAX_FRONT_ROWS = 15
MAX_FAIL_ROWS = 4
MAX_TARGET_ROWS = 3  # per target in "Front per target": the summary stays under 60 lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _abbr(provenance: str) -> str:
    return "meas." if provenance == "measured" else "est."


def render_markdown(s: Summary) -> str:
    """The summary: run line, notes, the pick, the front table, failures in brief."""
    n = len(s.trials)
    lines = [
        f"## edgeopt: {s.model_name} on {', '.join(s.targets) or '?'}",
        "",
        f"{n} trials: {len(s.complete)} complete, {len(s.failed)} failed, "
        f"{len(s.stopped)} stopped early; front: {len(s.front)}; objectives: "
        + ", ".join(o.with_direction for o in s.objectives)
        + (
            "; budgets: " + ", ".join(f"{k} {v:g}" for k, v in s.budgets.items())
            if s.budgets
            else ""
        ),
        "",
    ]
    for note in s.notes:
        lines.append(f"> {note}")
    if s.notes:
        lines.append("")
    if s.pick is not None:
        lines.append(f"**Recommended: trial {s.pick.number}.** {s.pick.reason}")
        lines.append(f"<sub>Method: {s.pick.method}.</sub>")
    else:
        lines.append(f"**No recommendation:** {s.no_pick_reason}")
    lines.append("")
    lines += _front_table(s)
    fronts = target_fronts(s.records)
    if fronts:
        lines.append("")
        lines += _target_fronts(s, fronts)
    task = _task_table(s)
    if task:
        lines.append("")
        lines += task
    if s.failed or s.stopped:
        lines.append("")
        lines += _failures(s)
    lines.append("")
    lines.append(
        f"meas. = measured on this host ({measured_on(s.records)}); est. = estimated from the "
        "hardware profile. val = validation split (selection); test = never seen by the "
        "search."
        + (f" {SCORED_ON_ONNX}" if converted(s.records) else "")
        + " Full plots: report.html."
        + (f" {ci}" if (ci := interval_note(s.records, s.accuracy_kind)) else "")
    )
    return "\n".join(lines) + "\n"


SCORED_ON_ONNX = (
    f"val/test scores: each candidate's ONNX file on {ORT_CPU}, whatever runtime timed it (a "
    "converted file is timed only once its conversion passed a top-1 parity check: against "
    "that file, or for an int8 .tflite, ai-edge-quantizer's own int8, its float conversion "
    "against the torch model); a converted file's own score is in its target's front."
)
"""The footer's word on accuracy for a run whose targets load converted files."""


def _score_word(s: Summary) -> str:
    """The val/test score in a column heading: ``acc.``, ``fid.`` or the run's --metric."""
    if s.accuracy_kind == "fidelity":
        return "fid."
    return "acc." if s.metric == "accuracy" else s.metric


def _front_table(s: Summary) -> list[str]:
    kind = _score_word(s)
    # kept short for a PR comment: size, then latency per target (report.html has the rest)
    head = ["trial", "config", f"val {kind}", f"test {kind}", metric_short(Metric.SIZE_MB)]
    finals = final_targets(s.records, s.complete)
    for tgt in s.targets:
        prov = _prov(s, tgt, Metric.LATENCY_MS)
        head.append(f"{metric_short(Metric.LATENCY_MS)} {tgt} ({_abbr(prov)})")
        if tgt in finals:
            head.append(f"final {metric_short(Metric.LATENCY_MS)} {tgt} (meas., after search)")
        by_seq = seq_latency(s.records.latency_by_seq, tgt)
        for n in by_seq.lengths if by_seq else ():
            head.append(
                f"{metric_short(Metric.LATENCY_MS)} @{n} {tgt} ({_abbr(by_seq.provenance)})"
            )
    rows = list(s.front)
    shown = rows[:MAX_FRONT_ROWS]
    if s.original is not None and s.original not in shown:
        shown.append(s.original)
    if not shown:
        return ["No complete trial, so there is no front to show."]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in shown:
        out.append("| " + " | ".join(_cell(c) for c in _row(s, t)) + " |")
    if len(rows) > MAX_FRONT_ROWS:
        out.append(f"\n…and {len(rows) - MAX_FRONT_ROWS} more front members in report.html.")
    if not rows:
        out.insert(0, "No feasible trial is on the front; the original, for reference:\n")
    return out


def _target_fronts(s: Summary, fronts: Sequence[TargetFront]) -> list[str]:
    """Each target's own front (``target_fronts``), fastest first, a few rows each."""
    out = [
        "**Front per target**: the candidates Pareto-optimal on each target alone (its own "
        "numbers and the shared ones), fastest first; every member in report.html."
    ]
    for f in fronts:
        rows = f.fastest_first()
        shown = rows[:MAX_TARGET_ROWS]
        some = f", the {len(shown)} fastest" if len(shown) < len(rows) else ""
        out += ["", f"*{f.target}* ({f.label}): {len(rows)} on its front{some}", ""]
        if not shown:
            out[-1:] = []
            continue
        judged = [o for o in f.objectives if o.metric != Metric.ACCURACY]
        head = ["trial", "config", f"val {_score_word(s)}"]
        if f.converted:
            head.append(f"val, its {f.label.rsplit(', ', 1)[-1]} file")
        head += [f"{metric_short(o.metric)} ({_abbr(o.provenance)})" for o in judged]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in shown:
            num = str(t.number) + (" ★" if s.pick is not None and t.number == s.pick.number else "")
            cells = [num, t.describe or "unchanged", _score(t.val_accuracy, None)]
            if f.converted:
                cells.append(_score(f.file_score(t), None))
            cells += [fmt_num(t.values[o.name], o.metric) for o in judged]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


def _prov(s: Summary, target: str, metric: str) -> str:
    for t in s.complete:
        e = t.metric(target, metric)
        if e is not None:
            return str("estimated" if e.provenance is None else e.provenance)
    return "estimated"


def _row(s: Summary, t: TrialRecord) -> list[str]:
    num = str(t.number)
    if s.pick is not None and t.number == s.pick.number:
        num = f"**{num}** ★"
    desc = t.describe or "unchanged"
    name = BASELINE_NAMES.get(t.baseline or "")
    if name:
        desc += f" ({name})"
    if not t.on_front:
        desc += ", not on front"
    cells = [
        num,
        desc,
        _score(t.val_accuracy, score_interval(s.records, t, "val")),
        _score(t.test_accuracy, score_interval(s.records, t, "test")),
        fmt_num(t.size_mb, Metric.SIZE_MB),
    ]
    finals = final_targets(s.records, s.complete)
    for tgt in s.targets:
        e = t.metric(tgt, Metric.LATENCY_MS)
        cells.append(fmt_num(e.value, Metric.LATENCY_MS) if e is not None else "-")
        if tgt in finals:
            cells.append(_final_cell(final_figure(s.records, t, tgt)))
        by_seq = seq_latency(s.records.latency_by_seq, tgt)
        for n in by_seq.lengths if by_seq else ():
            p50 = by_seq.p50_ms(t.number, n)
            cells.append(fmt_num(p50, Metric.LATENCY_MS) if p50 is not None else "-")
    return cells


def _final_cell(f: FinalFigure | None) -> str:
    """Final p50 and speedup beside the in-search one; a disagreement says so here."""
    if f is None:
        return "-"
    text = fmt_num(f.p50_ms, Metric.LATENCY_MS)
    if f.speedup is None:
        return text
    text += f", {speed_phrase(f.speedup)}"
    note = f.note()
    if note:
        return f"{text} ⚠ {note}"
    if f.in_search_speedup:
        text += f" (in-search {fmt_speedup(f.in_search_speedup)})"
    return text


def _score(value: Any, ci: tuple[float, float] | None) -> str:
    """An accuracy (or the run's --metric), then its 95 % interval when there is one."""
    text = fmt_num(value, Metric.ACCURACY)
    return text if ci is None else f"{text} {fmt_interval(ci)}"


def _task_table(s: Summary) -> list[str]:
    """All task metrics, val / test, of the pick and the baselines (report.html and
    report.json have every front member); nothing when finalize recorded none."""
    rows = [t for t in (_picked(s), s.original, s.int8) if t is not None and t.task_metrics]
    rows = list({id(t): t for t in rows}.values())
    if not rows:
        return []
    head = ["trial", *(task_metric_noun(m) for m in TASK_METRICS)]
    on_onnx = ", on each candidate's ONNX file" if converted(s.records) else ""
    out = [
        f"Task metrics, validation / test (measured on this host, {ORT_CPU}{on_onnx}; 95 % "
        "intervals: "
        "Wilson for accuracy, percentile bootstrap of 200 resamples for the others; every "
        "front member in report.html):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for t in rows:
        name = BASELINE_NAMES.get(t.baseline or "")
        label = str(t.number) + (f" ({name})" if name else "")
        if s.pick is not None and t.number == s.pick.number:
            label += " ★"
        cells = [label]
        for m in TASK_METRICS:
            cells.append(" / ".join(_task_cell(s, t, split, m) for split in ("val", "test")))
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return out


def _picked(s: Summary) -> TrialRecord | None:
    if s.pick is None:
        return None
    return next((t for t in s.complete if t.number == s.pick.number), None)


def _task_cell(s: Summary, t: TrialRecord, split: str, metric: str) -> str:
    """One task metric on one split with its 95 % interval (Wilson for top-1 accuracy)."""
    entry = t.task_metric(split, metric)
    if entry is None:
        return "-"
    if metric == "accuracy":
        ci = accuracy_interval(entry.value, s.records.n(split))
    else:
        ci = entry.interval
    return _score(entry.value, ci)


def _failures(s: Summary) -> list[str]:
    out = []
    if s.failed:
        groups = Counter(fail_label(t) for t in s.failed)
        out.append(f"**Failed trials ({len(s.failed)}):**")
        for label, count in groups.most_common(MAX_FAIL_ROWS):
            nums = [str(t.number) for t in s.failed if fail_label(t) == label][:8]
            more = "…" if count > len(nums) else ""
            out.append(f"- {count}× {_cell(label)[:160]} (trials {', '.join(nums)}{more})")
        if len(groups) > MAX_FAIL_ROWS:
            out.append(f"- …{len(groups) - MAX_FAIL_ROWS} other reasons in report.html")
    if s.stopped:
        if out:
            out.append("")
        groups = Counter(str(t.stopped_reason or "no reason recorded") for t in s.stopped)
        out.append(f"**Stopped early ({len(s.stopped)}):**")
        for label, count in groups.most_common(2):
            out.append(f"- {count}× {_cell(label)[:160]}")
        if len(groups) > 2:
            out.append(f"- …{len(groups) - 2} other reasons in report.html")
    return out
