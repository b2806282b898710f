"""What the progress display is told after each trial (plain values; the CLI renders them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.search.study import FINISHED


@dataclass(frozen=True)
class TrialEvent:
    """One finished trial and the state of the study after it."""

    number: int
    state: str
    summary: str
    done: int
    total: int | None
    elapsed_s: float
    best: dict[str, float]
    front_size: int


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    """Every constraint met (Optuna's convention: values <= 0)."""
    return all(v <= 0 for v in (t.constraints or {}).values())


def trial_event(
    study: optuna.Study, number: int, objectives: Any, total: int | None, elapsed_s: float
) -> TrialEvent:
    """The event for trial ``number`` of ``study``."""
    t = study.get_trials(deepcopy=False)[number]
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    complete = [x for x in finished if x.state == TrialState.COMPLETE]
    best: dict[str, float] = {}
    for i, o in enumerate(objectives):
        vals = [x.values[i] for x in complete if feasible(x)]
        if vals:
            best[o.name] = max(vals) if o.direction.value == "maximize" else min(vals)
    return TrialEvent(
        number=number,
        state=t.state.name,
        summary=f"{t.user_attrs.get('describe', '')}: {_summary(t, objectives)}",
        done=len(finished),
        total=total,
        elapsed_s=elapsed_s,
        best=best,
        front_size=len(study.best_trials) if complete else 0,
    )


def _summary(t: optuna.trial.FrozenTrial, objectives: Any) -> str:
    if t.state == TrialState.COMPLETE:
        text = ", ".join(f"{o.name} {v:.4g}" for o, v in zip(objectives, t.values, strict=True))
        return text + ("" if feasible(t) else " (over budget)")
    if t.state == TrialState.PRUNED:
        return "stopped early: " + str(t.user_attrs.get("pruned_reason", ""))
    stage = t.user_attrs.get("fail_stage", "worker")
    reason = t.user_attrs.get("fail_reason", "its worker stopped (no heartbeat)")
    return f"failed in {stage}: {reason}"
