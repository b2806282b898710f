"""The final host latency beside the in-search one, read from plain records.

After a search the front, the baselines and the original are re-measured together in one
interleaved pass on this host (``edgeopt.search.run.final_measure``; a record's
``final_latency``). Each figure is shown next to the in-search one; when their speedups over
the original disagree by more than ``DISAGREEMENT`` the report says so on that row, with the
host's recorded load during each measurement, instead of silently choosing one. The pick uses
the final figures where every front member has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeopt.metrics import Metric
from edgeopt.records import Load, RunRecord, TrialRecord

DISAGREEMENT = 0.15
"""Speedups further apart than this (relative) are flagged."""
LOAD_GAP_CPUS = 0.5
"""Other processes' CPU use must differ by this much to explain a disagreement."""


def describe_load(load: Load | None) -> str:
    """``load 3.4, other processes used 1.9 CPUs (stress, python)``; ``""`` without a load."""
    if load is None:
        return ""
    avgs = [v for v in (load.loadavg_1m, load.loadavg_1m_before) if v is not None]
    bits = [f"load {max(avgs):.1f}"] if avgs else []
    other = load.other_cpus
    if isinstance(other, int | float):
        names = ", ".join(dict.fromkeys(str(p.name) for p in load.busy_processes))
        bits.append(f"other processes used {other:.1f} CPUs" + (f" ({names})" if names else ""))
    return ", ".join(bits)


def fmt_speedup(x: float) -> str:
    """``14.1x`` / ``2.05x`` / ``0.93x``."""
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def speed_phrase(speedup: float) -> str:
    """``2.05x faster`` / ``1.08x slower`` (than the original) / ``as fast`` within 0.5 %."""
    if abs(speedup - 1) < 0.005:
        return "as fast"
    return f"{fmt_speedup(speedup)} faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


@dataclass(frozen=True)
class FinalFigure:
    """One trial's final latency on one target, with its in-search counterpart.

    ``speedup``: the original's time / this trial's, both from the final pass;
    ``in_search_speedup``: the same from the search (its interleaved ratio). ``*_load``: the
    host's recorded load (``edgeopt.measure.machine_load``) during each, None where not recorded.
    """

    target: str
    p50_ms: float
    p90_ms: float | None
    speedup: float | None
    in_search_ms: float | None
    in_search_speedup: float | None
    search_load: Load | None
    final_load: Load | None

    @property
    def disagrees(self) -> bool:
        """True when the two speedups are more than ``DISAGREEMENT`` apart."""
        a, b = self.speedup, self.in_search_speedup
        if not a or not b or a <= 0 or b <= 0:
            return False
        return max(a, b) / min(a, b) > 1 + DISAGREEMENT

    def note(self) -> str | None:
        """The row's explicit statement when the two figures disagree, else None."""
        if not self.disagrees:
            return None
        assert self.speedup is not None and self.in_search_speedup is not None
        head = (
            f"in-search {fmt_speedup(self.in_search_speedup)} vs final "
            f"{fmt_speedup(self.speedup)} against the original on {self.target}"
        )
        return f"{head}: {self._why()}"

    def _why(self) -> str:
        search, final = describe_load(self.search_load), describe_load(self.final_load)
        if self.search_load is None:
            return f"no load was recorded during the search (final pass: {final or 'n/a'})"
        s_cpu = float(self.search_load.other_cpus or 0.0)
        f_cpu = float(self.final_load.other_cpus or 0.0) if self.final_load is not None else 0.0
        if s_cpu - f_cpu >= LOAD_GAP_CPUS:
            return (
                f"the machine was loaded during the search ({search}; final pass: {final}), "
                "so the final figure is the one to trust"
            )
        if f_cpu - s_cpu >= LOAD_GAP_CPUS:
            return (
                f"the machine was loaded during the final pass ({final}; search: {search}), "
                "so the in-search figure may be the better one"
            )
        return (
            f"the recorded load does not explain it (search: {search}; final pass: {final}): "
            "timing noise or contention the load figures missed; compare with "
            "`edgeopt bench --vs` on a quiet machine"
        )


def final_figure(records: RunRecord, trial: TrialRecord, target: str) -> FinalFigure | None:
    """``trial``'s final figure on ``target``, or None when it was not re-measured there."""
    entry = trial.final(target)
    if entry is None or not isinstance(entry.p50_ms, int | float):
        return None
    lat = trial.metric(target, Metric.LATENCY_MS)
    value = lat.value if lat is not None else None
    ref = records.host_latency_ms.get(target)
    in_search = None
    if isinstance(value, int | float) and value > 0 and isinstance(ref, int | float):
        in_search = float(ref) / float(value)  # value = in-search ratio x ref
    speedup = entry.speedup
    return FinalFigure(
        target=target,
        p50_ms=float(entry.p50_ms),
        p90_ms=entry.p90_ms,
        speedup=float(speedup) if isinstance(speedup, int | float) else None,
        in_search_ms=float(value) if isinstance(value, int | float) else None,
        in_search_speedup=in_search,
        search_load=lat.load if lat is not None else None,
        final_load=entry.load,
    )


def final_targets(records: RunRecord, trials: Sequence[TrialRecord]) -> list[str]:
    """Targets on which at least one of ``trials`` has a final figure, in run order."""
    return [tgt for tgt in records.targets if any(final_figure(records, t, tgt) for t in trials)]


def complete_targets(records: RunRecord, front: Sequence[TrialRecord]) -> set[str]:
    """Targets on which every front member has a final figure: there the pick uses them."""
    if not front:
        return set()
    return {tgt for tgt in records.targets if all(final_figure(records, t, tgt) for t in front)}


def disagreements(records: RunRecord, trials: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """Every flagged (trial, target): number, target, both speedups and the note."""
    out = []
    for t in trials:
        for tgt in records.targets:
            f = final_figure(records, t, tgt)
            if f is not None and f.disagrees:
                out.append(
                    {
                        "number": t.number,
                        "target": tgt,
                        "in_search_speedup": f.in_search_speedup,
                        "final_speedup": f.speedup,
                        "note": f.note(),
                    }
                )
    return out


def pass_notes(records: RunRecord, shown: Sequence[TrialRecord]) -> list[str]:
    """Run-level notes on the final pass: where it ran and its load, or why it was skipped,
    and how many of the ``shown`` trials' figures disagree with the search."""
    notes = []
    flags = disagreements(records, shown)
    for target, entry in records.final_latency.items():
        flagged = sum(1 for d in flags if d["target"] == target)
        if entry.skipped:
            notes.append(f"Final latency on {target} was not re-measured: {entry.skipped}.")
            continue
        load = describe_load(entry.load)
        front = [t for t in records.trials if t.on_front]
        objectives = {o.name for o in records.objectives}
        used = f"latency_ms[{target}]" in objectives and target in complete_targets(records, front)
        text = (
            f"Final latency on {target}: the front, the baselines and the original were "
            f"re-measured together in one interleaved pass on this host after the search"
            + (f" ({load})" if load else "")
            + ("; the pick uses these figures" if used else "")
            + "; the in-search figures are shown beside them."
        )
        if flagged:
            text += (
                f" {flagged} figure(s) disagree with the search by more than "
                f"{DISAGREEMENT:.0%}, flagged on their rows."
            )
        missing = entry.missing
        if missing:
            text += f" Not re-measured (file unavailable here): trials {', '.join(missing)}."
        notes.append(text)
    return notes


def final_lines(records: RunRecord, trials: Sequence[TrialRecord]) -> list[str]:
    """Plain-text lines for a terminal: per re-measured target, each of ``trials``' final
    figure beside its in-search one (a disagreement says so), or why it was skipped."""
    lines = []
    for target, entry in records.final_latency.items():
        if entry.skipped:
            lines.append(f"final latency on {target}: not re-measured: {entry.skipped}")
            continue
        load = describe_load(entry.load)
        lines.append(
            f"final latency on {target} (measured on this host after the search, in one "
            "interleaved pass with the original" + (f"; {load}" if load else "") + "):"
        )
        for t in trials:
            f = final_figure(records, t, target)
            if f is None:
                continue
            text = f"{t.number:>5}  {f.p50_ms:.4g} ms"
            if f.speedup is not None:
                phrase = speed_phrase(f.speedup)
                text += f", {phrase} {'as' if phrase == 'as fast' else 'than'} the original"
            note = f.note()
            if note:
                text += f"  ⚠ {note}"
            elif f.in_search_speedup:
                text += f" (in-search {fmt_speedup(f.in_search_speedup)})"
            lines.append(text)
    return lines
