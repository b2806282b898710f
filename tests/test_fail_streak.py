"""A stage that fails for a reason of the draw (not of the model: it stays on) must not fill a
study: Optuna's samplers learn nothing from a FAIL trial and draw the same setting again
(issue 23: 22 of 48 trials were one failure). After ``FAIL_STREAK`` failed trials in a row in
one stage, the stage rests for a bounded number of trials, said once in the output and the
report."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import groupby
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from edgeopt.report.summary import summarize
from edgeopt.search.run.collect import load_run
from edgeopt.search.trial.policy import (
    FAIL_STREAK,
    REST_TRIALS,
    culprit,
    rest_after_streak,
    rest_note,
    rested_stages,
)

EDGEOPT = [str(Path(sys.executable).parent / "edgeopt")]
TESTS = Path(__file__).resolve().parent

# registers the toy stage in every process of the run (the CLI and its trial child), as a
# ``register`` line in edgeopt/stages/__init__.py would
_SITE = f"""
import sys

sys.path.insert(0, {str(TESTS)!r})
from toy_flaky import FlakyStage

from edgeopt.stages import register

register(FlakyStage())
"""
FAILING = {"prune.ratio": 0.0, "qat.epochs": 0, "quantize.mode": "fp32", "flaky.level": 2}


def _failing_setting(t: FrozenTrial) -> object:
    """What a FAIL trial failed on (its stage and that stage's config); None otherwise."""
    if t.state != TrialState.FAIL:
        return None
    stage = t.user_attrs.get("fail_stage")
    return stage, str(t.user_attrs.get("candidate", {}).get(stage))


def test_a_streak_of_failures_rests_the_stage(
    tmp_path: Path, model_files: dict[str, Path], tiny_data: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    run = tmp_path / "run"
    base = [*EDGEOPT, "optimize", str(model_files["bundle"]), "--data", str(tiny_data)]
    base += ["--target", "cpu", "--sampler", "random", "--plain-search", "--out", str(run)]
    first = subprocess.run([*base, "--trials", "2"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.load_study(study_name="edgeopt", storage=storage)
    assert "flaky.level" in study.trials[0].params  # the toy stage is in the search
    # a sampler that keeps drawing the failing level, as TPE does after FAIL trials
    for _ in range(FAIL_STREAK + 3):
        study.enqueue_trial(FAILING)
    total = 2 + FAIL_STREAK + 3
    done = subprocess.run([*base, "--trials", str(total)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    trials = optuna.load_study(study_name="edgeopt", storage=storage).get_trials()
    assert len(trials) == total
    streaks = [len(list(run_)) for setting, run_ in groupby(trials, _failing_setting) if setting]
    assert streaks and max(streaks) <= FAIL_STREAK, [_failing_setting(t) for t in trials]
    failed = trials[2 : 2 + FAIL_STREAK]
    assert all(t.user_attrs["fail_stage"] == "flaky" for t in failed)
    # then the stage rests: the same enqueued draw is the unchanged model, taken from the
    # baseline that built it
    for t in trials[2 + FAIL_STREAK :]:
        assert "flaky.level" not in t.params and t.state == TrialState.COMPLETE
        assert t.user_attrs["same_as_baseline"] == 0
    last = 2 + FAIL_STREAK - 1
    note = (
        f"Flaky toy stage is off for trials {last + 1}-{last + REST_TRIALS}: "
        f"{FAIL_STREAK} trials in a row failed in it (level 2 is too coarse for this draw)"
    )
    assert done.stderr.count(note) == 1, done.stderr[-3000:]
    records = load_run(run)
    assert [(r["stage"], r["after"], r["until"]) for r in records["rested_stages"]] == [
        ("flaky", last, last + REST_TRIALS)
    ]
    # (this process did not register the toy stage: the record names it by its name)
    assert (
        f"flaky was off for trials {last + 1}-{last + REST_TRIALS} (rest 1): "
        f"{FAIL_STREAK} trials in a row failed in it (level 2 is too coarse for this draw)."
    ) in summarize(records).notes


def _finished(study: optuna.Study, candidate: dict, fail_stage: str | None = None) -> int:
    attrs: dict = {"candidate": candidate}
    if fail_stage is not None:
        attrs |= {"fail_stage": fail_stage, "fail_reason": "the converter choked"}
    state = TrialState.COMPLETE if fail_stage is None else TrialState.FAIL
    values = [0.9, 1.0] if fail_stage is None else None
    study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs=attrs))
    return study.trials[-1].number


def test_a_streak_failing_in_a_conversion_rests_the_one_stage_never_seen_complete(
    tmp_path: Path,
) -> None:
    # 18 of 27 trials of a litert-host search failed converting QAT models: the failing step
    # is no stage, so the stage to rest is the drawn one no complete trial had
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize", "minimize"]
    )
    pruned = {"prune": {"ratio": 0.5}, "finetune": {"epochs": 2}}
    with_qat = pruned | {"qat": {"epochs": 2}}
    _finished(study, {})
    _finished(study, pruned)
    step = "convert:litert-host"
    # an unknown step, several suspects: nothing to blame
    assert culprit(study, step, with_qat | {"quantize": {"mode": "int8_static"}}) is None
    assert culprit(study, "qat", with_qat) is None  # a stage's own failure: the stage's streak
    rest = None
    for i in range(FAIL_STREAK):
        number = _finished(study, with_qat, step)
        assert culprit(study, step, with_qat) == "qat"
        rest = rest_after_streak(study, "qat", number, with_qat, "the converter choked", step)
        assert (rest is None) == (i < FAIL_STREAK - 1)
    assert rest is not None and rest["failed_in"] == step
    assert rested_stages(study.user_attrs, number + 1) == {"qat": "the converter choked"}
    assert "3 trials in a row with it failed in convert:litert-host" in rest_note("qat", rest)
    # a streak broken by a trial that failed elsewhere rests nothing
    other = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'other.db'}", directions=["maximize", "minimize"]
    )
    _finished(other, pruned)
    for i in range(FAIL_STREAK):
        number = _finished(other, with_qat, "evaluate" if i == 1 else step)
        assert rest_after_streak(other, "qat", number, with_qat, "x", step) is None
