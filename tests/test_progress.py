"""The progress event after each trial, on a real study in a temp SQLite file, and its text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.config import Objective
from edgeopt.metrics import Metric
from edgeopt.rundir import Baseline
from edgeopt.search import shared
from edgeopt.search.progress import TrialEvent, duration, render, trial_event

OBJECTIVES = [
    Objective(Metric.ACCURACY, None),
    Objective(Metric.LATENCY_MS, "host-cpu"),
    Objective(Metric.SIZE_MB, None),
]
# (describe, baseline, val accuracy, latency ms, size MB)
TRIALS = [
    ("fp32", "unchanged", 0.95, 1.0, 1.0),
    ("int8_static", "int8", 0.945, 0.5, 0.3),
    ("prune 0.60 l2 + finetune 2ep + int8_static", None, 0.90, 0.2, 0.2),
    ("prune 0.10 l2 + finetune 2ep + fp16", None, 0.948, 0.6, 0.25),
]


def _study(tmp_path: Path, max_accuracy_drop: float | None) -> optuna.Study:
    """A study like edgeopt's: objectives and reference baseline recorded, four complete
    trials (constraints as the search sets them) and one failed."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="edgeopt",
        directions=[o.direction.value for o in OBJECTIVES],
    )
    study.set_user_attr("objectives", [o.name for o in OBJECTIVES])
    base = Baseline("salt", (1, 16, 16), False, "host", "accuracy", 0.95, 0.94)
    study.set_user_attr(shared.BASELINE, base.to_dict())
    for describe, baseline, acc, lat, size in TRIALS:
        constraints = {}
        if max_accuracy_drop is not None:
            constraints["accuracy_drop"] = 0.95 - max_accuracy_drop - acc
        study.add_trial(
            optuna.create_trial(
                values=[acc, lat, size],
                user_attrs={"describe": describe, "baseline": baseline, "val_accuracy": acc},
                constraints=constraints,
            )
        )
    study.add_trial(
        optuna.create_trial(
            state=TrialState.FAIL,
            user_attrs={"describe": "prune 0.9", "fail_stage": "export", "fail_reason": "boom"},
        )
    )
    return study


def test_best_is_one_real_trial_within_1pt_of_the_original(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=None)
    event = trial_event(study, 3, OBJECTIVES, total=10, elapsed_s=40.0)
    assert (event.number, event.state, event.done, event.total) == (3, "COMPLETE", 5, 10)
    assert event.front_size == 4  # every complete trial is best at something
    # trial 2 is fastest but 5 points below the original; trial 1 is the fastest within 1 pt
    assert event.best is not None and event.best.number == 1
    assert event.best.values == {"accuracy": 0.945, "latency_ms[host-cpu]": 0.5, "size_mb": 0.3}
    assert event.best_rule == "within 1 pt of the original (0.9500)"
    assert event.best_by == "latency_ms[host-cpu]"
    # 5 trials finished during the last 40 s: 8 s each, 5 left
    assert event.eta_s == pytest.approx(40.0)


def test_an_accuracy_budget_replaces_the_1pt_rule(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=0.06)
    event = trial_event(study, 4, OBJECTIVES, total=None, elapsed_s=5.0)
    assert event.state == "FAIL" and "failed in export: boom" in event.summary
    assert event.best is not None and event.best.number == 2  # 0.90 is within 6 points
    assert event.best_rule == "within the budgets"
    assert event.eta_s is None  # no --trials: no trial-count ETA


def test_no_candidate_within_a_tight_budget(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    study = _study(tmp_path / "a", max_accuracy_drop=0.0)  # only the original is within
    assert trial_event(study, 2, OBJECTIVES, total=5, elapsed_s=5.0).best.number == 0
    study = _study(tmp_path / "b", max_accuracy_drop=-0.01)  # nothing is
    assert trial_event(study, 2, OBJECTIVES, total=5, elapsed_s=5.0).best is None


def _event(**kw: object) -> TrialEvent:
    base: dict = dict(
        number=7,
        state="COMPLETE",
        summary="int8_static: accuracy 0.945, latency_ms[host-cpu] 0.5, size_mb 0.3",
        done=8,
        total=20,
        elapsed_s=125.0,
        front_size=3,
        best=None,
        best_rule="within 1 pt of the original (0.9500)",
        best_by="latency_ms[host-cpu]",
        eta_s=190.0,
    )
    base.update(kw)
    return TrialEvent(**base)  # type: ignore[arg-type]


def test_rendered_line_for_a_log_is_one_line_per_trial(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=None)
    event = trial_event(study, 1, OBJECTIVES, total=20, elapsed_s=125.0)
    event = dataclasses.replace(event, eta_s=190.0)
    assert render(event, one_line=True) == [
        "[5/20] 2m05s trial 1 complete: int8_static: accuracy 0.945, "
        "latency_ms[host-cpu] 0.5, size_mb 0.3 | front 4 | best by latency_ms[host-cpu] "
        "within 1 pt of the original (0.9500): trial 1 (int8_static: accuracy 0.945, "
        "latency_ms[host-cpu] 0.5, size_mb 0.3) | ETA 3m10s"
    ]


def test_rendered_lines_for_a_terminal_and_the_eta_of_a_timeout() -> None:
    lines = render(_event(), timeout_s=150.0, one_line=False)
    assert lines == [
        "[8/20] 2m05s trial 7 complete: int8_static: accuracy 0.945, "
        "latency_ms[host-cpu] 0.5, size_mb 0.3",
        "        front 3 | best within 1 pt of the original (0.9500): none yet | ETA 25s",
    ]  # --timeout 150 s comes before the trial count's 3m10s
    assert render(_event(total=None, eta_s=None), one_line=True)[0].startswith("[8] 2m05s trial 7")
    assert "ETA" not in render(_event(total=None, eta_s=None), one_line=True)[0]


def test_duration() -> None:
    assert [duration(s) for s in (0, 42.4, 190, 3725)] == ["0s", "42s", "3m10s", "1h02m"]
