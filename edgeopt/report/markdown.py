"""A short Markdown summary for a CI job summary or a PR comment (well under 60 lines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from edgeopt.metrics import Metric
from edgeopt.report.stats import accuracy_interval, fmt_interval, interval_note
from edgeopt.report.summary import (
    BASELINE_NAMES,
    Summary,
    fail_label,
    fmt_num,
    metric_entry,
    metric_short,
)

MAX_FRONT_ROWS = 15
MAX_FAIL_ROWS = 4


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
        f"{len(s.pruned)} stopped early; front: {len(s.front)}; objectives: "
        + ", ".join(f"{o.name} ({'max' if o.maximize else 'min'})" for o in s.objectives)
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
    if s.failed or s.pruned:
        lines.append("")
        lines += _failures(s)
    lines.append("")
    lines.append(
        "meas. = measured on this host (ORT CPU); est. = estimated from the hardware profile. "
        "val = validation split (selection); test = never seen by the search. "
        "Full plots: report.html."
        + (f" {ci}" if (ci := interval_note(s.records, s.accuracy_kind)) else "")
    )
    return "\n".join(lines) + "\n"


def _front_table(s: Summary) -> list[str]:
    kind = "fid." if s.accuracy_kind == "fidelity" else "acc."
    # kept short for a PR comment: size, then latency per target (report.html has the rest)
    head = ["trial", "config", f"val {kind}", f"test {kind}", metric_short(Metric.SIZE_MB)]
    for tgt in s.targets:
        prov = _prov(s, tgt, Metric.LATENCY_MS)
        head.append(f"{metric_short(Metric.LATENCY_MS)} {tgt} ({_abbr(prov)})")
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


def _prov(s: Summary, target: str, metric: str) -> str:
    for t in s.complete:
        e = metric_entry(t, target, metric)
        if e:
            return str(e.get("provenance", "estimated"))
    return "estimated"


def _row(s: Summary, t: Mapping[str, Any]) -> list[str]:
    num = str(t["number"])
    if s.pick is not None and t["number"] == s.pick.number:
        num = f"**{num}** ★"
    desc = t.get("describe") or "unchanged"
    name = BASELINE_NAMES.get(t.get("baseline") or "")
    if name:
        desc += f" ({name})"
    if not t.get("on_front"):
        desc += ", not on front"
    cells = [
        num,
        desc,
        _accuracy(t.get("val_accuracy"), s.records.get("n_val")),
        _accuracy(t.get("test_accuracy"), s.records.get("n_test")),
        fmt_num(t.get("size_mb"), Metric.SIZE_MB),
    ]
    for tgt in s.targets:
        e = metric_entry(t, tgt, Metric.LATENCY_MS)
        cells.append(fmt_num(e.get("value"), Metric.LATENCY_MS) if e else "-")
    return cells


def _accuracy(value: Any, n: Any) -> str:
    """An accuracy, then its 95 % interval when the run recorded the sample count."""
    ci = accuracy_interval(value, n)
    text = fmt_num(value, Metric.ACCURACY)
    return text if ci is None else f"{text} {fmt_interval(ci)}"


def _failures(s: Summary) -> list[str]:
    out = []
    if s.failed:
        groups = Counter(fail_label(t) for t in s.failed)
        out.append(f"**Failed trials ({len(s.failed)}):**")
        for label, count in groups.most_common(MAX_FAIL_ROWS):
            nums = [str(t["number"]) for t in s.failed if fail_label(t) == label][:8]
            more = "…" if count > len(nums) else ""
            out.append(f"- {count}× {_cell(label)[:160]} (trials {', '.join(nums)}{more})")
        if len(groups) > MAX_FAIL_ROWS:
            out.append(f"- …{len(groups) - MAX_FAIL_ROWS} other reasons in report.html")
    if s.pruned:
        if out:
            out.append("")
        groups = Counter(str(t.get("pruned_reason") or "no reason recorded") for t in s.pruned)
        out.append(f"**Stopped early ({len(s.pruned)}):**")
        for label, count in groups.most_common(2):
            out.append(f"- {count}× {_cell(label)[:160]}")
        if len(groups) > 2:
            out.append(f"- …{len(groups) - 2} other reasons in report.html")
    return out
