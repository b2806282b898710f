"""What ``optimize`` and ``report`` print on the terminal: the front as a table whose columns
fit every name, and the one line naming the recommended trial and its file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeopt.metrics import Metric
from edgeopt.records import RunRecord, TrialRecord, as_run
from edgeopt.report.final_latency import final_lines
from edgeopt.report.model import Summary, score_noun
from edgeopt.report.summary import hidden_note
from edgeopt.report.target_fronts import target_fronts


def render_front(run: RunRecord | Mapping[str, Any]) -> str:
    """Final table of the Pareto front (validation and test score, numbers per target),
    with the baselines below it; every column as wide as its longest entry."""
    run = as_run(run)
    front = [t for t in run.trials if t.on_front]
    if not front:
        return "no feasible trial on the front (see the report for failures and budgets)"
    # the baselines are always shown, so the front can be read against what you have now
    extra = [t for t in run.trials if t.baseline and not t.on_front and t.is_complete]
    noun = score_noun(run)
    targets = list(run.targets)
    head = ["trial", "candidate", f"val {noun}", f"test {noun}", "size MB"]
    head += [f"latency ms {t}" for t in targets]
    rows = []
    for t in front + extra:
        tag = "" if t.on_front else " [baseline, not on front]"
        row = [
            str(t.number),
            (t.describe or "unchanged") + tag,
            _f(t.val_accuracy),
            _f(t.test_accuracy),
            _f(t.size_mb, 3),
        ]
        for name in targets:
            m = t.metric(name, Metric.LATENCY_MS)
            row.append(f"{_f(m.value, 3)} ({str(m.provenance)[:4]}.)" if m is not None else "-")
        rows.append(row)
    lines = [
        f"Pareto front (feasible trials; val/test = {noun}, val = selection split, "
        "test = never seen by the search):",
        *_table(head, rows, left={1}),
    ]
    lines.append(
        f"meas. = measured on {', '.join(_remote(front + extra, targets)) or 'this host'} "
        "(interleaved vs the original); esti. = estimated from the profile"
    )
    lines += final_lines(run, front + extra)
    lines += _per_target(run)
    hidden = hidden_note(run)
    if hidden:
        lines.append(hidden)
    return "\n".join(lines)


def _per_target(run: RunRecord) -> list[str]:
    """For a run over several targets, each target's own front (``target_fronts``): one line
    a target, its trials fastest first and the ``edgeopt export --format`` of its files."""
    fronts = target_fronts(run)
    if not fronts:
        return []
    lines = ["front per target (Pareto-optimal on that target alone; every member in report.md):"]
    for f in fronts:
        numbers = ", ".join(str(t.number) for t in f.fastest_first()) or "none"
        lines.append(f"  {f.target} ({f.label}): {numbers} (fastest first; --format {f.format})")
    return lines


def recommended_line(s: Summary, run_dir: Path | None) -> str:
    """``recommended: trial N, RUN_DIR/trials/N/model.onnx``: the report's pick (the same
    ``choose`` as every report), or ``recommended: none: <why>``. ``run_dir`` is None for a
    shared study read through ``--storage``: the file is then in the run directory of the
    machine that built it."""
    if s.pick is None:
        return f"recommended: none: {s.no_pick_reason}"
    trial = next(t for t in s.complete if t.number == s.pick.number)
    onnx = trial.onnx
    if not onnx:
        return f"recommended: trial {s.pick.number} (it recorded no ONNX file)"
    if run_dir is not None and (Path(run_dir) / onnx).is_file():
        return f"recommended: trial {s.pick.number}, {Path(run_dir) / onnx}"
    if run_dir is not None:  # another machine built it (a shared study)
        host = trial.machine.hostname if trial.machine and trial.machine.hostname else None
        return (
            f"recommended: trial {s.pick.number}, built on {host or 'another machine'}: not "
            f"in {run_dir} (`edgeopt export {run_dir} --best` copies it from the artifact "
            "store, if that machine ran with --artifacts)"
        )
    return (
        f"recommended: trial {s.pick.number}, {onnx} in the run directory that built it "
        "(`edgeopt export --best` copies it out)"
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: set[int]) -> list[str]:
    """``head``, a rule and ``rows``, each column as wide as its widest cell; the columns in
    ``left`` left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    first = line(head)
    return [first, "-" * len(first), *(line(r) for r in rows)]


def _remote(trials: Sequence[TrialRecord], targets: Sequence[str]) -> list[str]:
    """The devices of a profile's [runner] that measured these trials, where not this host."""
    entries = [t.metric(n, Metric.LATENCY_MS) for t in trials for n in targets]
    devices = {e.device for e in entries if e is not None and e.device is not None}
    return sorted(str(d) for d in devices if not str(d).startswith("local://"))


def _f(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"
