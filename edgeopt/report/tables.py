"""Machine-readable outputs: the JSON report and the CSV of all trials, written atomically."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from edgeopt.metrics import TASK_METRICS, Metric
from edgeopt.record_seq import SeqLatency, seq_latency
from edgeopt.report.final_latency import disagreements, final_figure, final_targets
from edgeopt.report.machines import machine_label
from edgeopt.report.model import Summary
from edgeopt.report.target_fronts import target_fronts

REPORT_KIND = "edgeopt-report"


def _clean(obj: Any) -> Any:
    """Non-finite floats become None so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def render_json(s: Summary) -> str:
    """The records (same ``schema_version``) plus the report's conclusions: ``front``
    (trial numbers), for a run over several targets ``target_fronts`` (per target: its
    ``runtime``, the ``format`` of its files, the ``objectives`` it is judged on and its own
    ``front``, trial numbers; ``edgeopt.report.target_fronts``), ``pick`` (number, method,
    reason) or ``no_pick_reason``, ``notes``, ``latency_disagreements`` (front members and
    baselines whose final host speedup and in-search one are more than 15 % apart:
    ``{number, target, in_search_speedup, final_speedup, note}``)."""
    out = s.records.to_dict()
    out["kind"] = REPORT_KIND
    out["front"] = [t.number for t in s.front]
    fronts = target_fronts(s.records)
    if fronts:  # a run over several targets: each target's own front
        out["target_fronts"] = [
            {
                "target": f.target,
                "runtime": f.runtime,
                "format": f.format,
                "objectives": [o.name for o in f.objectives],
                "front": f.numbers,
            }
            for f in fronts
        ]
    out["pick"] = asdict(s.pick) if s.pick is not None else None
    out["no_pick_reason"] = s.no_pick_reason
    out["notes"] = list(s.notes)
    out["objective_labels"] = {o.name: o.label for o in s.objectives}
    shown = [*s.front, *(b for b in (s.original, s.int8) if b is not None and b not in s.front)]
    out["latency_disagreements"] = disagreements(s.records, shown)
    return json.dumps(_clean(out), indent=2, allow_nan=False) + "\n"


def csv_columns(s: Summary) -> list[str]:
    """Column names, in order: identity, accuracy, size, task metrics (``val.f1`` ...; when
    recorded), per-target numbers (latency per ``--seq-lens`` length, when recorded), params,
    timing, constraints, failure."""
    cols = [
        "number",
        "state",
        "describe",
        "baseline",
        "feasible",
        "on_front",
        "picked",
        "val_accuracy",
        "test_accuracy",
        "size_mb",
    ]
    if any(t.task_metrics for t in s.trials):  # front and baselines, labelled data
        cols += [f"{split}.{m}" for split in ("val", "test") for m in TASK_METRICS]
    metrics = sorted(
        {
            (tgt, m)
            for t in s.trials
            for tgt, by_metric in t.measurements.items()
            for m in by_metric
            # size has its own column: the record's top-level ``size_mb``
            if m != Metric.SIZE_MB
        }
    )
    for tgt, m in metrics:
        cols += [f"{m}[{tgt}]", f"{m}[{tgt}].provenance"]
    for tgt in final_targets(s.records, s.trials):  # re-measured after the search (measured)
        cols += [f"final_latency_ms[{tgt}]", f"final_speedup[{tgt}]"]
    for col, _, _ in _seq_columns(s):  # --seq-lens: p50 per length, then its provenance
        cols += [col, f"{col}.provenance"]
    params = sorted({p for t in s.trials for p in t.params})
    cols += [f"param.{p}" for p in params]
    cons = sorted({c for t in s.trials for c in t.constraints})
    cols += [f"constraint.{c}" for c in cons]
    cols += [
        "build_s",
        "measure_s",
        "trial_s",
        "machine",
        "onnx",
        "fail_stage",
        "fail_reason",
        "stopped_reason",
    ]
    return cols


def render_csv(s: Summary) -> str:
    """One row per trial (every state); empty cells where a number does not apply."""
    cols = csv_columns(s)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    finals = final_targets(s.records, s.trials)
    by_length = _seq_columns(s)
    for t in s.trials:
        row: dict[str, Any] = {
            "number": t.number,
            "state": str(t.state),
            "describe": t.describe,
            "baseline": t.baseline or "",
            # whether it met the budgets and is on the front: said of complete trials only
            "feasible": _b(t.feasible) if t.is_complete else "",
            "on_front": _b(t.on_front) if t.is_complete else "",
            "picked": _b(s.pick is not None and t.number == s.pick.number),
            "val_accuracy": _n(t.val_accuracy),
            "test_accuracy": _n(t.test_accuracy),
            "size_mb": _n(t.size_mb),
            "machine": machine_label(t),
            "onnx": t.onnx or "",
            "fail_stage": t.fail_stage,
            "fail_reason": t.fail_reason,
            "stopped_reason": t.stopped_reason,
        }
        for tgt in finals:
            f = final_figure(s.records, t, tgt)
            row[f"final_latency_ms[{tgt}]"] = _n(f.p50_ms if f else None)
            row[f"final_speedup[{tgt}]"] = _n(f.speedup if f else None)
        for col, n, by_seq in by_length:
            p50 = by_seq.p50_ms(t.number, n)
            row[col] = _n(p50)
            row[f"{col}.provenance"] = by_seq.provenance if p50 is not None else ""
        for col in cols:
            if col.startswith("param."):
                row[col] = _n(t.params.get(col[6:]))
            elif col.startswith("constraint."):
                row[col] = _n(t.constraints.get(col[11:]))
            elif col.split(".")[0] in ("val", "test") and col.split(".")[-1] in TASK_METRICS:
                split, m = col.split(".")
                entry = t.task_metric(split, m)
                row[col] = _n(entry.value if entry is not None else None)
            elif col in ("build_s", "measure_s", "trial_s"):
                row[col] = _n(getattr(t.timing, col))
            elif "[" in col and col not in row:
                m, rest = col.split("[", 1)
                tgt, _, suffix = rest.partition("]")
                e = t.metric(tgt, m)
                if e is None:
                    row[col] = ""
                elif suffix == ".provenance":
                    row[col] = e.provenance
                else:
                    row[col] = _n(e.value)
        w.writerow(row)
    return buf.getvalue()


def _seq_columns(s: Summary) -> list[tuple[str, str, SeqLatency]]:
    """``(column, length, figures)`` for each length each target was timed at (``optimize
    --seq-lens``: ``latency_ms@16[host-cpu]``); none for a run without lengths."""
    out = []
    for tgt in s.targets:
        by_seq = seq_latency(s.records.latency_by_seq, tgt)
        if by_seq is None:
            continue
        out += [(f"{Metric.LATENCY_MS.value}@{n}[{tgt}]", n, by_seq) for n in by_seq.lengths]
    return out


def _b(v: Any) -> str:
    return "" if v is None else ("true" if v else "false")


def _n(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return _b(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return v
