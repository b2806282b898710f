"""What a stage's failure means for the later trials of a study: each stage declares it
(``edgeopt.stages.FailurePolicy``); this module applies it, knowing no stage by name.

A stage switched off for the model is kept in the study attribute ``DISABLED_ATTR``
(``{stage: reason}``), so every worker and a resumed study see it.
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


def _any_success_with(study: optuna.Study, name: str) -> bool:
    """A complete trial had ``name`` at a non-identity config."""
    stage = STAGES[name]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        config = t.user_attrs.get("candidate", {}).get(name)
        if config is not None and not stage.is_identity(stage.config_from_dict(config)):
            return True
    return False
