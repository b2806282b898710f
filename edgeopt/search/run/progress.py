"""What the progress display is told after each trial (plain values), and its text.

After each trial: the trial's own result, the size of the feasible Pareto front, and the
pick: the trial the report would recommend now (``edgeopt.report.pick.choose`` on the
study's records as they stand, with the in-search latency; after the search the final
re-measure may move it, and ``optimize`` ends with the one the report names). Then elapsed
time and an ETA against ``--trials``/``--timeout``. Numbers are named as the reports name
them: the accuracy objective by the run's ``--metric`` (``val macro F1``), never by its
objective key.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from edgeopt.records import TrialState as RecordState
from edgeopt.report.model import Summary
from edgeopt.report.summary import summarize
from edgeopt.search.run.collect import study_records
from edgeopt.search.study.lifecycle import FINISHED, retry_of
from edgeopt.search.study.records import trial_record
from edgeopt.search.trial.objective import DISABLED_BY_ATTR, RESTED_BY_ATTR
from edgeopt.search.trial.policy import rest_note
from edgeopt.stages import STAGES


@dataclass(frozen=True)
class PickedTrial:
    """The trial the report would recommend: its number, description and objective values
    (by their printed names, e.g. ``val macro F1``, ``latency ms host-cpu``)."""

    number: int
    describe: str
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrialEvent:
    """One finished trial and the state of the study after it.

    ``done`` is this trial's place among the study's finished trials, in the order they
    finished (all workers, all sessions; a re-queued trial once, as its retry) against
    ``total`` (``--trials``; None with only ``--timeout``). ``pick`` is the trial the report
    would recommend now (None when there is none; ``no_pick`` says why, in a few words).
    ``eta_s`` is the time left to ``total`` at this session's pace (None when unknown).
    ``note``: a line the trial has for the user (a stage it switched off for the model).
    """

    number: int
    state: str
    summary: str
    done: int
    total: int | None
    elapsed_s: float
    front_size: int
    pick: PickedTrial | None = None
    no_pick: str = "none yet"
    eta_s: float | None = None
    note: str = ""


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
    records = study_records(study)
    s = summarize(records) if records is not None else None
    labels = {o.name: o.short for o in s.objectives} if s is not None else {}
    names = [labels.get(o.name, o.name) for o in objectives]
    return TrialEvent(
        number=number,
        state=t.state.name,
        summary=f"{trial_record(t).describe}: {_summary(t, names)}",
        done=_ordinal(finished, t),
        total=total,
        elapsed_s=elapsed_s,
        front_size=len(s.front) if s is not None else 0,
        pick=picked(s, labels) if s is not None else None,
        no_pick=_no_pick(s),
        eta_s=_eta_s(finished, total, elapsed_s),
        note=_note(t),
    )


def _ordinal(finished: list[optuna.trial.FrozenTrial], t: optuna.trial.FrozenTrial) -> int:
    """How many of ``finished`` had finished when ``t`` did (``t`` included): each trial
    keeps its own place when several workers finish at once (counting the study at print
    time gave two workers' trials the same ``[2/2]``)."""

    def key(x: optuna.trial.FrozenTrial) -> tuple[datetime.datetime, int]:
        return (x.datetime_complete or datetime.datetime.max, x.number)

    return sum(1 for x in finished if key(x) <= key(t))


def _note(t: optuna.trial.FrozenTrial) -> str:
    """What this trial changed for the rest of the search, in words (said once)."""
    off = t.user_attrs.get(DISABLED_BY_ATTR)
    rest = t.user_attrs.get(RESTED_BY_ATTR)
    if rest:
        return rest_note(str(rest["stage"]), rest)
    if not off:
        return ""
    title = getattr(STAGES.get(off), "title", "") or off
    return f"{title} is off for this model from now on: {trial_record(t).fail_reason}"


def picked(s: Summary, labels: Mapping[str, str]) -> PickedTrial | None:
    """``s``'s pick (``edgeopt.report.pick.choose``) with its values by printed name."""
    if s.pick is None:
        return None
    rec = next(r for r in s.complete if r.number == s.pick.number)
    values = {labels.get(k, k): float(v) for k, v in rec.values.items()}
    return PickedTrial(s.pick.number, str(rec.describe or "unchanged"), values)


def _no_pick(s: Summary | None) -> str:
    if s is None:
        return "unknown (the study records no run settings)"
    if s.pick is not None or not s.complete:
        return "none yet"
    return "none yet (no complete trial meets every budget)"


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


def _summary(t: optuna.trial.FrozenTrial, names: Sequence[str]) -> str:
    """A finished trial in one line: its values under ``names``, or why it did not finish."""
    rec = trial_record(t)
    if rec.state is RecordState.COMPLETE:
        text = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, t.values, strict=True))
        return text + ("" if rec.feasible else " (over budget)")
    if rec.state is RecordState.STOPPED:
        return f"stopped early: {rec.stopped_reason}"
    return f"failed in {rec.fail_stage}: {rec.fail_reason}"


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
    status = [f"front {event.front_size}", _pick_text(event)]
    eta = eta_text(event, timeout_s)
    if eta:
        status.append(eta)
    notes = [f"note: {event.note}"] if event.note else []
    if one_line:
        return [head + " | " + " | ".join(status), *notes]
    return [head, "        " + " | ".join(status), *notes]


def _pick_text(event: TrialEvent) -> str:
    p = event.pick
    if p is None:
        return f"pick: {event.no_pick}"
    values = ", ".join(f"{k} {v:.4g}" for k, v in p.values.items())
    return f"pick: trial {p.number} ({p.describe}: {values})"
