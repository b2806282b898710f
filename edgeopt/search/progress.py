"""What the progress display is told after each trial (plain values), and its text.

After each trial: the trial's own result, the size of the feasible Pareto front, and the one
trial a user would take now: the best (by the first objective other than accuracy) among
those within the budgets, and, when no accuracy budget is set, within 1 point of the
original's validation accuracy. Then elapsed time and an ETA against ``--trials``/``--timeout``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.metrics import Metric
from edgeopt.search.shared import baseline_from
from edgeopt.search.study import FINISHED, retry_of

NEAR_ORIGINAL = 0.01
"""Without an accuracy budget, the best candidate is looked for within this much (1 point)
of the original's validation accuracy."""
ACCURACY_CONSTRAINTS = ("accuracy_drop", "min_accuracy")


@dataclass(frozen=True)
class BestTrial:
    """One real trial: its number, description and objective values (by objective name)."""

    number: int
    describe: str
    values: dict[str, float]


@dataclass(frozen=True)
class TrialEvent:
    """One finished trial and the state of the study after it.

    ``done`` counts the study's finished trials (all workers, all sessions; a re-queued
    trial once, as its retry) against ``total`` (``--trials``; None with only
    ``--timeout``). ``best`` is the trial ``best_rule`` describes (None when no trial
    qualifies yet); ``best_by`` the objective it is best on.
    ``eta_s`` is the time left to ``total`` at this session's pace (None when unknown).
    """

    number: int
    state: str
    summary: str
    done: int
    total: int | None
    elapsed_s: float
    front_size: int
    best: BestTrial | None = None
    best_rule: str = "within the budgets"
    best_by: str = ""
    eta_s: float | None = None


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    """Every constraint met (Optuna's convention: values <= 0)."""
    return all(v <= 0 for v in (t.constraints or {}).values())


def trial_event(
    study: optuna.Study, number: int, objectives: Any, total: int | None, elapsed_s: float
) -> TrialEvent:
    """The event for trial ``number`` of ``study``; ``objectives`` are the run's
    ``config.Objective`` list, ``elapsed_s`` the time since this session's search began."""
    trials = study.get_trials(deepcopy=False)
    t = trials[number]
    # a re-queued trial counts once, as its retry (``study.counted_trials``)
    retried = {retry_of(x) for x in trials} - {None}
    finished = [x for x in trials if x.state in FINISHED and x.number not in retried]
    complete = [x for x in finished if x.state == TrialState.COMPLETE]
    best, rule, by = best_candidate(study, complete, objectives)
    return TrialEvent(
        number=number,
        state=t.state.name,
        summary=f"{t.user_attrs.get('describe', '')}: {_summary(t, objectives)}",
        done=len(finished),
        total=total,
        elapsed_s=elapsed_s,
        front_size=len(study.best_trials) if complete else 0,
        best=best,
        best_rule=rule,
        best_by=by,
        eta_s=_eta_s(finished, total, elapsed_s),
    )


def best_candidate(
    study: optuna.Study, complete: Sequence[optuna.trial.FrozenTrial], objectives: Any
) -> tuple[BestTrial | None, str, str]:
    """``(trial, rule, by)``: the complete trial within the budgets, and within 1 point of the
    original when no accuracy budget is set (``rule`` says which), that is best on the first
    objective other than accuracy (``by``; then the next ones, then accuracy, then the
    lower number). None when no trial qualifies."""
    ok = [t for t in complete if feasible(t)]
    rule = "within the budgets"
    has_accuracy_budget = any(
        k.split("[")[0] in ACCURACY_CONSTRAINTS for t in complete for k in t.constraints or {}
    )
    original = _original_accuracy(study, complete)
    if not has_accuracy_budget and original is not None:
        rule = f"within {NEAR_ORIGINAL * 100:g} pt of the original ({original:.4f})"
        ok = [t for t in ok if _accuracy(t) >= original - NEAR_ORIGINAL - 1e-12]
    order = [i for i, o in enumerate(objectives) if o.metric != Metric.ACCURACY]
    by = objectives[order[0]].name if order else "accuracy"
    if not ok:
        return None, rule, by

    def cost(t: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        up = [objectives[i].direction.value == "maximize" for i in order]
        rest = [-t.values[i] if u else t.values[i] for i, u in zip(order, up, strict=True)]
        return (*rest, -_accuracy(t), t.number)

    best = min(ok, key=cost)
    values = {o.name: float(v) for o, v in zip(objectives, best.values, strict=True)}
    return BestTrial(best.number, str(best.user_attrs.get("describe", "")), values), rule, by


def _accuracy(t: optuna.trial.FrozenTrial) -> float:
    value = t.user_attrs.get("val_accuracy")
    return float(value) if isinstance(value, int | float) else -math.inf


def _original_accuracy(
    study: optuna.Study, complete: Sequence[optuna.trial.FrozenTrial]
) -> float | None:
    """The original's validation accuracy: the study's reference baseline, else its trial."""
    try:
        baseline = baseline_from(study.user_attrs)
    except Exception:  # an unreadable record: fall back to the trial
        baseline = None
    if baseline is not None:
        return float(baseline.val_accuracy)
    for t in complete:
        if t.user_attrs.get("baseline") == "unchanged" and "val_accuracy" in t.user_attrs:
            return float(t.user_attrs["val_accuracy"])
    return None


def _eta_s(
    finished: Sequence[optuna.trial.FrozenTrial], total: int | None, elapsed_s: float
) -> float | None:
    """Time to ``total`` finished trials at the pace of this session (trials the study
    finished since it began, on any worker); None without a total or a pace yet."""
    if total is None:
        return None
    left = max(0, total - len(finished))
    if left == 0:
        return 0.0
    began = datetime.datetime.now() - datetime.timedelta(seconds=elapsed_s)
    recent = sum(1 for t in finished if t.datetime_complete and t.datetime_complete >= began)
    if recent == 0 or elapsed_s <= 0:
        return None
    return left * elapsed_s / recent


def _summary(t: optuna.trial.FrozenTrial, objectives: Any) -> str:
    if t.state == TrialState.COMPLETE:
        text = ", ".join(f"{o.name} {v:.4g}" for o, v in zip(objectives, t.values, strict=True))
        return text + ("" if feasible(t) else " (over budget)")
    if t.state == TrialState.PRUNED:
        return "stopped early: " + str(t.user_attrs.get("pruned_reason", ""))
    stage = t.user_attrs.get("fail_stage", "worker")
    reason = t.user_attrs.get("fail_reason", "its worker stopped (no heartbeat)")
    return f"failed in {stage}: {reason}"


# ---------------------------------------------------------------------------- text
def duration(seconds: float) -> str:
    """``42s``, ``3m10s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_text(event: TrialEvent, timeout_s: float | None = None) -> str:
    """``ETA 3m10s``: the sooner of the trial count's ETA and ``--timeout`` (after which no
    trial starts; the running one still finishes); ``""`` when neither is known."""
    etas = [e for e in (event.eta_s,) if e is not None]
    if timeout_s is not None:
        etas.append(max(0.0, timeout_s - event.elapsed_s))
    return f"ETA {duration(min(etas))}" if etas else ""


def render(event: TrialEvent, *, timeout_s: float | None = None, one_line: bool) -> list[str]:
    """The progress text of one event: one line (``one_line``, for logs and CI), or the
    trial's line then an indented status line (for a terminal)."""
    total = f"/{event.total}" if event.total else ""
    head = (
        f"[{event.done}{total}] {duration(event.elapsed_s)} trial {event.number} "
        f"{event.state.lower()}: {event.summary}"
    )
    status = [f"front {event.front_size}", _best_text(event)]
    eta = eta_text(event, timeout_s)
    if eta:
        status.append(eta)
    if one_line:
        return [head + " | " + " | ".join(status)]
    return [head, "        " + " | ".join(status)]


def _best_text(event: TrialEvent) -> str:
    b = event.best
    if b is None:
        return f"best {event.best_rule}: none yet"
    values = ", ".join(f"{k} {v:.4g}" for k, v in b.values.items())
    return f"best by {event.best_by} {event.best_rule}: trial {b.number} ({b.describe}: {values})"
