"""The progress event after each trial, on a real study in a temp SQLite file, and its text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.config import Budgets, Objective, RunConfig
from edgeopt.loading import ModelSpec
from edgeopt.metrics import Metric
from edgeopt.report.summary import summarize
from edgeopt.rundir import Baseline
from edgeopt.search.run.collect import study_records
from edgeopt.search.run.progress import TrialEvent, duration, render, trial_event
from edgeopt.search.study import shared

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
    ("prune 0.10 l2 + finetune 2ep + fp16", None, 0.948, 0.45, 0.5),
]


def _study(
    tmp_path: Path, max_accuracy_drop: float | None, metric: str = "accuracy"
) -> optuna.Study:
    """A study as edgeopt records it: objectives, run settings and reference baseline,
    four complete trials (constraints as the search sets them) and one failed."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="edgeopt",
        directions=[o.direction.value for o in OBJECTIVES],
    )
    study.set_user_attr("objectives", [o.name for o in OBJECTIVES])
    study.set_user_attr("directions", [o.direction.value for o in OBJECTIVES])
    config = RunConfig(
        model=ModelSpec(path=str(tmp_path / "model.pt")),
        targets=("cpu",),
        # a task metric other than accuracy needs data (never read here)
        data=None if metric == "accuracy" else str(tmp_path / "data.npz"),
        metric=metric,
        # a budget under 0 (no flag takes one) only in the trials' constraints: none is met
        budgets=Budgets(
            max_accuracy_drop=None if max_accuracy_drop is None else max(0.0, max_accuracy_drop)
        ),
    )
    study.set_user_attr(shared.CONFIG, config.to_dict())
    base = Baseline("salt", (1, 16, 16), False, "host", "accuracy", 0.95, 0.94)
    study.set_user_attr(shared.BASELINE, base.to_dict())
    for describe, baseline, acc, lat, size in TRIALS:
        constraints = {}
        if max_accuracy_drop is not None:
            constraints["accuracy_drop"] = 0.95 - max_accuracy_drop - acc
        numbers = {
            "latency_ms": {"value": lat, "provenance": "measured"},
            "size_mb": {"value": size, "provenance": "measured"},
        }
        study.add_trial(
            optuna.create_trial(
                values=[acc, lat, size],
                user_attrs={
                    "describe": describe,
                    "baseline": baseline,
                    "val_accuracy": acc,
                    "measurements": {"host-cpu": {"values": numbers}},
                },
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


def _report_pick(study: optuna.Study) -> int | None:
    """The trial the report of this study recommends."""
    records = study_records(study)
    assert records is not None
    pick = summarize(records).pick
    return None if pick is None else pick.number


def test_the_pick_is_the_one_the_report_recommends(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=None)
    event = trial_event(study, 3, OBJECTIVES, total=10, elapsed_s=40.0)
    # trial 3 finished 4th: its place, though trial 4 had also finished when this was asked
    assert (event.number, event.state, event.done, event.total) == (3, "COMPLETE", 4, 10)
    assert event.front_size == 4  # every complete trial is best at something
    # the knee of the front, as the report says; not trial 3, the fastest within 1 pt of
    # the original (the rule this line followed while the report recommended another)
    assert event.pick is not None and event.pick.number == _report_pick(study) == 1
    assert event.pick.values == {
        "val accuracy": 0.945,
        "latency ms host-cpu": 0.5,
        "size MB": 0.3,
    }
    # 5 trials finished during the last 40 s: 8 s each, 5 left
    assert event.eta_s == pytest.approx(40.0)


def test_within_an_accuracy_budget_the_pick_is_still_the_reports(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=0.06)
    event = trial_event(study, 4, OBJECTIVES, total=None, elapsed_s=5.0)
    assert event.state == "FAIL" and "failed in export: boom" in event.summary
    assert event.pick is not None and event.pick.number == _report_pick(study)
    assert event.eta_s is None  # no --trials: no trial-count ETA


def test_no_pick_within_a_tight_budget(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    study = _study(tmp_path / "a", max_accuracy_drop=0.0)  # only the original is within
    assert trial_event(study, 2, OBJECTIVES, total=5, elapsed_s=5.0).pick.number == 0
    study = _study(tmp_path / "b", max_accuracy_drop=-0.01)  # nothing is
    event = trial_event(study, 2, OBJECTIVES, total=5, elapsed_s=5.0)
    assert event.pick is None and _report_pick(study) is None
    (line,) = render(event, one_line=True)
    assert "pick: none yet (no complete trial meets every budget)" in line


def test_a_f1_run_names_its_metric_not_accuracy(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=None, metric="f1")
    (line,) = render(trial_event(study, 1, OBJECTIVES, total=5, elapsed_s=5.0), one_line=True)
    assert "accuracy" not in line and line.count("val macro F1 0.945") == 2


def _event(**kw: object) -> TrialEvent:
    base: dict = dict(
        number=7,
        state="COMPLETE",
        summary="int8_static: val accuracy 0.945, latency ms host-cpu 0.5, size MB 0.3",
        done=8,
        total=20,
        elapsed_s=125.0,
        front_size=3,
        pick=None,
        eta_s=190.0,
    )
    base.update(kw)
    return TrialEvent(**base)  # type: ignore[arg-type]


def test_rendered_line_for_a_log_is_one_line_per_trial(tmp_path: Path) -> None:
    study = _study(tmp_path, max_accuracy_drop=None)
    event = trial_event(study, 1, OBJECTIVES, total=20, elapsed_s=125.0)
    event = dataclasses.replace(event, eta_s=190.0)
    assert render(event, one_line=True) == [
        "[2/20] 2m05s trial 1 complete: int8_static: val accuracy 0.945, "
        "latency ms host-cpu 0.5, size MB 0.3 | front 4 | pick: trial 1 (int8_static: "
        "val accuracy 0.945, latency ms host-cpu 0.5, size MB 0.3) | ETA 3m10s"
    ]


def test_rendered_lines_for_a_terminal_and_the_eta_of_a_timeout() -> None:
    lines = render(_event(), timeout_s=150.0, one_line=False)
    assert lines == [
        "[8/20] 2m05s trial 7 complete: int8_static: val accuracy 0.945, "
        "latency ms host-cpu 0.5, size MB 0.3",
        "        front 3 | pick: none yet | ETA 25s",
    ]  # --timeout 150 s comes before the trial count's 3m10s
    assert render(_event(total=None, eta_s=None), one_line=True)[0].startswith("[8] 2m05s trial 7")
    assert "ETA" not in render(_event(total=None, eta_s=None), one_line=True)[0]


def test_duration() -> None:
    assert [duration(s) for s in (0, 42.4, 190, 3725)] == ["0s", "42s", "3m10s", "1h02m"]


def test_trials_finished_by_several_workers_keep_their_own_place(tmp_path: Path) -> None:
    """Two workers' trials that finish close together: each line has its own count, in the
    order they finished, not the study's count when the line was printed ([2/2] twice, D22)."""
    study = _study(tmp_path, max_accuracy_drop=None)
    first, second = study.ask(), study.ask()  # two workers, one trial each
    numbers = {
        "latency_ms": {"value": 0.5, "provenance": "measured"},
        "size_mb": {"value": 0.5, "provenance": "measured"},
    }
    for t in (first, second):
        t.set_user_attr("describe", "int8_static")
        t.set_user_attr("measurements", {"host-cpu": {"values": numbers}})
    study.tell(second, [0.9, 0.5, 0.5])  # the later-asked trial finishes first
    study.tell(first, [0.91, 0.5, 0.5])
    places = {
        n: trial_event(study, n, OBJECTIVES, total=7, elapsed_s=1.0).done
        for n in (first.number, second.number)
    }
    assert places == {second.number: 6, first.number: 7}
