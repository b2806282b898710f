"""The recommended pick of a run: which front member, by what rule, and why.

``choose(summary)`` decides it from the front's objective vectors: the knee of the front
(``pareto.knee``), untied on accuracy within its Wilson interval (``stats.untie_knee``), on
the final host latency where every front member has one. Every place that names a pick uses
this one function, so the progress line, the reports and ``export --best`` agree.
"""

from __future__ import annotations

from edgeopt.metrics import DEFAULT_TASK_METRIC, Metric
from edgeopt.records import TrialRecord
from edgeopt.report.final_latency import (
    complete_targets,
    final_figure,
    fmt_speedup,
    speed_phrase,
)
from edgeopt.report.model import TIME_UNITS, ObjectiveInfo, Pick, Summary, fmt_num, is_fraction
from edgeopt.report.pareto import KNEE_METHOD, knee
from edgeopt.report.stats import tie_rule, untie_knee


def choose(s: Summary) -> tuple[Pick | None, str | None]:
    """The recommended front member of ``s`` with the rule and the reason, or None and why
    there is none. The one place the pick is decided: the reports, the progress line during
    a search, the last line of ``optimize`` and ``report``, and ``export --best`` use it."""
    members = [(t, pick_vector(s, t)) for t in s.front]
    members = [(t, v) for t, v in members if v is not None]
    if not members:
        return None, _why_no_front(s)
    points, maximize = [v for _, v in members], [o.maximize for o in s.objectives]
    idx = knee(points, maximize)
    assert idx is not None
    method = KNEE_METHOD
    accuracy = next((i for i, o in enumerate(s.objectives) if o.metric == Metric.ACCURACY), None)
    n = s.records.n_val
    knee_trial = None
    # ties within the Wilson interval: top-1 accuracy (or fidelity) is a proportion on n
    # samples; another --metric is not, so its knee stands
    wilson = s.metric == DEFAULT_TASK_METRIC
    if accuracy is not None and wilson and isinstance(n, int) and n > 0:
        untied = untie_knee(points, maximize, accuracy, n, idx)
        knee_trial, idx = (members[idx][0] if untied != idx else None), untied
        method += "; " + tie_rule(n)
    chosen = members[idx][0]
    return Pick(chosen.number, method, _reason(s, chosen, knee_trial)), None


def _why_no_front(s: Summary) -> str:
    if not s.complete:
        n = len(s.trials)
        return (
            f"no trial completed ({n} trial(s): {len(s.failed)} failed, {len(s.stopped)} "
            "stopped early), so there is nothing to recommend"
        )
    parts = []
    names = sorted({k for t in s.complete for k in t.constraints})
    for name in names:
        vals = [t.constraints[name] for t in s.complete if name in t.constraints]
        ok = sum(1 for v in vals if v <= 0)
        msg = f"{name}: {ok} of {len(vals)} within budget"
        if ok == 0 and vals:
            msg += f" (closest exceeds it by {min(vals):.4g})"
        parts.append(msg)
    detail = "; ".join(parts) if parts else "no constraint values were recorded"
    return f"no complete trial meets every budget ({detail}); relax a budget or run more trials"


def _ratio_phrase(o: ObjectiveInfo, new: float, old: float) -> str:
    if is_fraction(o.metric):
        d = (new - old) * 100
        return f"{d:+.1f} pt"
    if new <= 0 or old <= 0:
        return "n/a"
    if abs(new - old) / old < 0.005:
        return "about the same"
    time = o.unit in TIME_UNITS
    if new < old:
        return f"{old / new:.2f}x {'faster' if time else 'smaller'}"
    return f"{new / old:.2f}x {'slower' if time else 'larger'}"


def pick_vector(s: Summary, t: TrialRecord) -> list[float] | None:
    """``objective_vector`` with each host latency replaced by its final re-measure (one
    interleaved pass after the search, ``final_latency``) on the targets where every front
    member has one: the pick and its reason use these, the plots the in-search values."""
    vec = s.objective_vector(t)
    if vec is None:
        return None
    usable = complete_targets(s.records, s.front)
    for i, o in enumerate(s.objectives):
        f = final_figure(s.records, t, o.target) if o.target in usable else None
        if f is not None and o.metric == Metric.LATENCY_MS:
            vec[i] = f.p50_ms
    return vec


def _final_phrase(
    s: Summary, t: TrialRecord, o: ObjectiveInfo, num: str, *, original: bool
) -> str | None:
    """``0.5 ms vs 1.0 ms (2.01x faster, measured ...; in-search 2.10x)`` for a latency
    objective the pick took from the final pass, else None."""
    if o.metric != Metric.LATENCY_MS or o.target not in complete_targets(s.records, s.front):
        return None
    f = final_figure(s.records, t, o.target)
    if f is None:
        return None
    how = "measured on this host after the search, in one interleaved pass with the original"
    if original or f.speedup is None:
        return f"{num} ({how})"
    final_pass = s.records.final_latency.get(o.target)
    original_ms = final_pass.original.p50_ms if final_pass and final_pass.original else None
    old = fmt_num(original_ms, o.metric) + f" {o.unit}"
    ratio = speed_phrase(f.speedup)
    search = f"; in-search {fmt_speedup(f.in_search_speedup)}" if f.in_search_speedup else ""
    return f"{num} vs {old} ({ratio}, {how}{search})"


def _reason(s: Summary, t: TrialRecord, knee_trial: TrialRecord | None = None) -> str:
    """Why ``t`` is the pick: its numbers against the original's; ``knee_trial`` is the knee
    it was picked over (accuracy tied within the interval, see ``stats.tie_rule``)."""
    vec = pick_vector(s, t) or []
    ref = s.objective_vector(s.original) if s.original is not None else None
    if t.baseline == "unchanged":
        ref = None
    bits = []
    for i, o in enumerate(s.objectives):
        where = f" on {o.target}" if o.target else ""
        num = fmt_num(vec[i], o.metric) + (f" {o.unit}" if o.unit else "")
        final = _final_phrase(s, t, o, num, original=ref is None)
        if final is not None:
            bits.append(f"{o.noun}{where} {final}")
        elif ref is not None:
            old = fmt_num(ref[i], o.metric) + (f" {o.unit}" if o.unit else "")
            bits.append(
                f"{o.noun}{where} {num} vs {old} ({_ratio_phrase(o, vec[i], ref[i])}, "
                f"{o.provenance})"
            )
        else:
            bits.append(f"{o.noun}{where} {num} ({o.provenance})")
    who = f"Trial {t.number} ({t.describe or 'unchanged'})"
    original = t.baseline == "unchanged"
    if knee_trial is not None:
        head = (
            f"{who} is picked over the knee of the front, trial {knee_trial.number}, "
            f"whose validation {s.score_noun} "
            f"({fmt_num(knee_trial.val_accuracy, 'accuracy')}"
            f" vs {fmt_num(t.val_accuracy, 'accuracy')}) is higher only within the "
            "95 % interval, while this trial is at least as good on everything else"
        )
    elif original:
        head = (
            f"{who} is the original model and the knee of the front: no candidate traded "
            "its objectives off better"
        )
    else:
        head = f"{who} is the knee of the front"
    if original:
        against = "; its numbers: "
    else:
        against = (
            "; against the original: "
            if ref is not None
            else " (the original did not complete, so there is nothing to compare with): "
        )
    within = " and meets every budget" if s.budgets else ""
    return f"{head}{within}{against}" + "; ".join(bits) + "."
