"""What a stage's probe and failure policy mean for a study: kept per stage, applied by the
search without naming a stage; an older run's flat probe keys and study attributes resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

from edgeopt.profiles import resolve_targets
from edgeopt.rundir import Baseline
from edgeopt.search.study.context import model_facts
from edgeopt.search.trial.builder import TrialChild
from edgeopt.search.trial.policy import (
    DISABLED_ATTR,
    FAIL_STREAK,
    REST_TRIALS,
    blocked_by_earlier_hang,
    disable_after_failure,
    disabled_stages,
    rest_after_streak,
    rested_stages,
)
from edgeopt.search.trial.protocol import FailureKind, Status, TrialRequest, TrialResult
from edgeopt.stages import STAGES, FinetuneConfig, PruneConfig

PRUNED = PruneConfig(ratio=0.5).to_dict()
OTHER = PruneConfig(ratio=0.3).to_dict()
UNPRUNED = PruneConfig(ratio=0.0).to_dict()


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")


def _add(study: optuna.Study, state: TrialState, **attrs: Any) -> None:
    values = [1.0] if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, values=values, user_attrs=attrs))


def test_an_older_baseline_with_flat_probe_keys_resumes_with_stage_facts(
    model_files: dict[str, Path],
) -> None:
    old = {
        "salt": "s",
        "input_shape": [3, 8, 8],
        "onnx_input": False,
        "host": "h",
        "accuracy_kind": "accuracy",
        "val_accuracy": 0.9,
        "test_accuracy": 0.9,
        "prunable": False,
        "prune_ignored": ["a.conv"],
        "prune_note": "Torch-Pruning failed",
        "epoch_s": 1.5,
        "auto_timeout_s": 180.0,
    }
    baseline = Baseline.from_dict(old)
    assert baseline.stage_facts == {
        "prune": {"prunable": False, "ignored": ["a.conv"], "note": "Torch-Pruning failed"},
        "finetune": {"epoch_s": 1.5},
    }
    assert Baseline.from_dict(baseline.to_dict()) == baseline
    # the stages that had no probe then look at the baseline ONNX file when the run opens
    facts = model_facts(baseline, model_files["onnx"])
    assert facts.of("quantize") == {"matmul_heavy": False}
    assert not STAGES["prune"].enabled(facts) and STAGES["quantize"].enabled(facts)
    assert [line for s in STAGES.values() for line in s.probe_notes(facts.of(s.name))] == [
        "pruning off: Torch-Pruning failed; the search keeps to fine-tuning-free ONNX-side "
        "stages (quantization)",
        "one fine-tune epoch: 1.5s (measured on this host)",
    ]


def test_a_trial_that_outlives_its_timeout_is_a_hang(tmp_path: Path) -> None:
    request = TrialRequest(
        trial_dir=str(tmp_path / "trials" / "0"),
        model={},
        data=None,
        profiles=resolve_targets(["cpu"]).texts,
        seed=0,
        cache_dir=str(tmp_path / "cache"),
        salt="s",
        candidate={},
        reference_onnx=str(tmp_path / "none.onnx"),
    )
    child = TrialChild(tmp_path / "trials", memory_gb=8.0)
    try:
        result = child.run(request, timeout_s=0.2)  # the child is still importing
    finally:
        child.close(kill=True)
    assert result.status is Status.FAIL and result.failure is FailureKind.HANG
    result.write(tmp_path / "result.json")
    assert TrialResult.read(tmp_path / "result.json") == result
    assert TrialResult.failed("prune", "boom").failure is FailureKind.ERROR


def test_an_error_before_any_success_switches_the_stage_off_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    assert not disable_after_failure(study, "prune", "slow", FailureKind.HANG)
    assert not disable_after_failure(study, "finetune", "diverged", FailureKind.ERROR)  # no policy
    assert disable_after_failure(study, "prune", "cannot trace", FailureKind.ERROR)
    assert not disable_after_failure(study, "prune", "again", FailureKind.ERROR)  # said once
    assert disabled_stages(study.user_attrs) == {"prune": "cannot trace"}
    assert study.user_attrs[DISABLED_ATTR] == {"prune": "cannot trace"}

    pruned_once = optuna.create_study(storage=f"sqlite:///{tmp_path / 'other.db'}")
    _add(pruned_once, TrialState.COMPLETE, candidate={"prune": PRUNED})
    assert not disable_after_failure(pruned_once, "prune", "this draw", FailureKind.ERROR)


def test_a_study_from_before_disabled_stages_keeps_pruning_off(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study.set_user_attr("prune_unsupported", "Torch-Pruning failed")
    assert disabled_stages(study.user_attrs) == {"prune": "Torch-Pruning failed"}


def test_a_config_that_hung_is_not_built_again(tmp_path: Path) -> None:
    study = _study(tmp_path)
    tuned = FinetuneConfig(epochs=2).to_dict()
    _add(
        study,
        TrialState.FAIL,
        candidate={"prune": PRUNED, "finetune": tuned},
        fail_hung=True,
        fail_reason="timed out after 9s (--trial-timeout)",
    )
    _add(study, TrialState.FAIL, candidate={"prune": OTHER}, fail_hung=False, fail_reason="x")
    assert blocked_by_earlier_hang(study, {"prune": PRUNED}) == (
        "prune",
        "skipped: the same prune setting failed in trial 0 (timed out after 9s (--trial-timeout))",
    )
    assert blocked_by_earlier_hang(study, {"prune": OTHER}) is None  # an error, not a hang
    assert blocked_by_earlier_hang(study, {"prune": UNPRUNED}) is None
    # fine-tuning's policy does not block its configs
    assert blocked_by_earlier_hang(study, {"prune": OTHER, "finetune": tuned}) is None


def test_a_streak_of_failures_in_one_stage_rests_it_for_longer_each_time(tmp_path: Path) -> None:
    study = _study(tmp_path)
    pruned = {"prune": PRUNED}

    def fails_now(reason: str = "too coarse") -> dict[str, Any] | None:
        """The next trial fails in prune: what the policy says, then it is told."""
        rest = rest_after_streak(study, "prune", len(study.trials), pruned, reason)
        _add(study, TrialState.FAIL, candidate=pruned, fail_stage="prune")
        return rest

    assert fails_now() is None
    _add(study, TrialState.FAIL, candidate={}, fail_stage="interrupted")  # passed over
    assert fails_now() is None  # 2 in a row
    _add(study, TrialState.FAIL, candidate={"prune": UNPRUNED}, fail_stage="quantize")
    # a failure in another stage broke the streak
    assert [fails_now() for _ in range(FAIL_STREAK - 1)] == [None] * (FAIL_STREAK - 1)
    last = len(study.trials)
    assert fails_now() == {
        "after": last,
        "until": last + REST_TRIALS,
        "times": 1,
        "reason": "too coarse",
    }
    assert rested_stages(study.user_attrs, last) == {}
    assert rested_stages(study.user_attrs, last + 1) == {"prune": "too coarse"}
    assert rested_stages(study.user_attrs, last + REST_TRIALS + 1) == {}
    # a trial drawn before the rest began that fails now starts no new rest
    assert fails_now() is None
    # back from its rest, the next streak rests it twice as long
    for _ in range(len(study.trials), last + REST_TRIALS + 1):
        _add(study, TrialState.COMPLETE, candidate={"prune": UNPRUNED})
    again = [fails_now("x") for _ in range(FAIL_STREAK)][-1]
    assert again is not None and again["times"] == 2
    assert again["until"] - again["after"] == 2 * REST_TRIALS
