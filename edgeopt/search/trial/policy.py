"""What a stage's failure means for the later trials of a study: each stage declares it
(``edgeopt.stages.FailurePolicy``); this module applies it, knowing no stage by name.

A stage switched off for the model is kept in the study attribute ``DISABLED_ATTR``
(``{stage: reason}``), so every worker and a resumed study see it.

A stage whose failures are the draw's (its policy keeps it on, or it succeeded before) can
still fill a study: Optuna's samplers learn nothing from a FAIL trial, so they draw the same
failing setting again. After ``FAIL_STREAK`` failed trials in a row (by trial number, across
workers) that all failed in one stage at a drawn config, that stage rests: it stays at its
identity for the next ``REST_TRIALS`` trials (twice as many at each further rest), kept in
``RESTED_ATTR``, then the search draws it again. A streak that fails in a step that is no
stage (a target's conversion, say) rests the one drawn stage to blame: drawn in the failing
trial and in no complete trial (``culprit``); with none or several such, nothing rests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.search.trial.protocol import FailureKind
from edgeopt.stages import STAGES

DISABLED_ATTR = "disabled_stages"
LEGACY_DISABLED = {"prune_unsupported": "prune"}
"""Study attributes of studies made before ``DISABLED_ATTR``: they still resume."""
RESTED_ATTR = "rested_stages"
"""Study attribute ``{stage: {"after", "until", "times", "reason"}}``: the stage is off for
trials ``after < number <= until`` (its latest rest), rested ``times`` times so far."""
FAIL_STREAK = 3
"""Failed trials in a row in one stage after which the stage rests."""
REST_TRIALS = 10
"""Trials a stage rests the first time; each further rest of the same stage lasts twice as
long, so a stage that keeps failing costs ``FAIL_STREAK`` trials per doubling."""
HUNG_ATTR = "fail_hung"
"""Trial attribute: the trial hung or ran out of memory (a ``FailureKind`` other than ERROR)."""


def disabled_stages(study_attrs: Mapping[str, Any]) -> dict[str, str]:
    """The stages switched off for this model, with why."""
    out = {
        old_stage: str(study_attrs[key])
        for key, old_stage in LEGACY_DISABLED.items()
        if key in study_attrs
    }
    out.update({str(k): str(v) for k, v in (study_attrs.get(DISABLED_ATTR) or {}).items()})
    return out


def hung(failure: FailureKind | None) -> bool:
    """A hang or the memory cap: the config, not the model, is to blame."""
    return failure in (FailureKind.HANG, FailureKind.MEMORY)


def disable_after_failure(
    study: optuna.Study, stage: str, reason: str, failure: FailureKind | None
) -> bool:
    """Switch ``stage`` off for the study when its policy says this failure is the model's
    (an error before any trial with the stage active succeeded). True when it did just now."""
    policy = STAGES[stage].failure_policy if stage in STAGES else None
    if policy is None or not policy.disable_after_model_failure or hung(failure):
        return False
    if stage in disabled_stages(study.user_attrs) or _any_success_with(study, stage):
        return False
    study.set_user_attr(
        DISABLED_ATTR, {**(study.user_attrs.get(DISABLED_ATTR) or {}), stage: reason}
    )
    return True


def blocked_by_earlier_hang(
    study: optuna.Study, candidate: Mapping[str, Any]
) -> tuple[str, str] | None:
    """``(stage, reason)`` when a config of a stage whose policy blocks it hung or ran out of
    memory in an earlier trial: the trial is not built again."""
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    for name, config in candidate.items():
        stage = STAGES.get(name)
        if stage is None or not stage.failure_policy.block_config_after_hang:
            continue
        if stage.is_identity(stage.config_from_dict(config)):
            continue
        for t in failed:
            if (
                t.user_attrs.get(HUNG_ATTR)
                and t.user_attrs.get("candidate", {}).get(name) == config
            ):
                return name, (
                    f"skipped: the same {name} setting failed in trial {t.number} "
                    f"({t.user_attrs.get('fail_reason')})"
                )
    return None


def rested_stages(study_attrs: Mapping[str, Any], number: int) -> dict[str, str]:
    """The stages resting at trial ``number``, with why."""
    rests = study_attrs.get(RESTED_ATTR) or {}
    return {
        str(name): str(rest["reason"])
        for name, rest in rests.items()
        if int(rest["after"]) < number <= int(rest["until"])
    }


def culprit(study: optuna.Study, step: str, candidate: Mapping[str, Any]) -> str | None:
    """For a trial with ``candidate`` that failed in ``step``, a step that is no stage (e.g.
    ``convert:litert-host``): the one stage drawn in it that no complete trial has drawn (the
    stages that built a complete candidate are not to blame); None when ``step`` is a stage,
    or no stage or several fit."""
    if step in STAGES:
        return None
    suspects = [n for n in candidate if _drawn(n, candidate) and not _any_success_with(study, n)]
    return suspects[0] if len(suspects) == 1 else None


def rest_after_streak(
    study: optuna.Study,
    stage: str,
    number: int,
    candidate: Mapping[str, Any],
    reason: str,
    failed_in: str | None = None,
) -> dict[str, Any] | None:
    """Rest ``stage`` when trial ``number`` (failing in it now for ``reason``, with
    ``candidate``) ends
    ``FAIL_STREAK`` failed trials in a row that all failed in ``stage`` at a drawn config;
    with ``failed_in`` (a step that is no stage, ``stage`` its ``culprit``), trials that all
    failed in ``failed_in`` with ``stage`` drawn.

    Trials still running or queued, and trials an interrupt failed, are passed over; a
    streak counts only trials after the stage's last rest. Returns the new rest
    (``RESTED_ATTR``'s entry) when it rested the stage just now, else None.
    """
    if not _drawn(stage, candidate):
        return None
    step = failed_in or stage
    rests = dict(study.user_attrs.get(RESTED_ATTR) or {})
    last = rests.get(stage) or {"until": -1, "times": 0}
    if number <= int(last["until"]):
        return None  # drawn before its rest began, or resting
    streak = 1
    trials = study.get_trials(deepcopy=False)
    earlier = [t for t in trials if int(last["until"]) < t.number < number]
    for t in sorted(earlier, key=lambda t: t.number, reverse=True):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        if t.state == TrialState.FAIL and t.user_attrs.get("fail_stage") == "interrupted":
            continue
        if (
            t.state != TrialState.FAIL
            or t.user_attrs.get("fail_stage") != step
            or not _drawn(stage, t.user_attrs.get("candidate") or {})
        ):
            break
        streak += 1
        if streak >= FAIL_STREAK:
            break
    if streak < FAIL_STREAK:
        return None
    times = int(last["times"]) + 1
    rest = {
        "after": number,
        "until": number + REST_TRIALS * 2 ** (times - 1),
        "times": times,
        "reason": reason,
        **({"failed_in": failed_in} if failed_in else {}),
    }
    rests[stage] = rest
    study.set_user_attr(RESTED_ATTR, rests)
    return rest


def rest_note(stage: str, rest: Mapping[str, Any]) -> str:
    """The rest ``rest`` of ``stage`` in words, for the output."""
    title = getattr(STAGES.get(stage), "title", "") or stage
    return (
        f"{title} is off for trials {int(rest['after']) + 1}-{rest['until']}: "
        f"{FAIL_STREAK} trials in a row {failed_where(rest)} ({rest['reason']})"
    )


def failed_where(rest: Mapping[str, Any]) -> str:
    """Where a rest's streak failed, in words: in the stage, or in a later step with it."""
    step = rest.get("failed_in")
    return f"with it failed in {step}" if step else "failed in it"


def _drawn(stage: str, candidate: Mapping[str, Any]) -> bool:
    """``candidate`` has registered stage ``stage`` at a non-identity config."""
    found = STAGES.get(stage)
    config = candidate.get(stage)
    return (
        found is not None
        and config is not None
        and not found.is_identity(found.config_from_dict(config))
    )


def _any_success_with(study: optuna.Study, name: str) -> bool:
    """A complete trial had ``name`` at a non-identity config."""
    stage = STAGES[name]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        config = t.user_attrs.get("candidate", {}).get(name)
        if config is not None and not stage.is_identity(stage.config_from_dict(config)):
            return True
    return False
