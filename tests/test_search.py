"""Real Optuna studies in temp SQLite files, on a tiny model: baselines, resume, workers,
failures as data, budgets as constraints, seeded reproducibility."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.config import Budgets, RunConfig
from edgeopt.loading import ModelSpec
from edgeopt.search.run.collect import load_run
from edgeopt.search.run.loop import run_search
from edgeopt.search.run.setup import prepare


def _config(model: Path, data: Path | None, **kw: object) -> RunConfig:
    base = {"targets": ("mobile",), "seed": 0, "trial_timeout_s": 120.0}
    base.update(kw)
    return RunConfig(model=ModelSpec(path=str(model)), data=str(data) if data else None, **base)


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run_dir / 'study.db'}")


def test_study_runs_baselines_first_and_records_provenance(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    prepare(_config(model_files["bundle_wide"], tiny_data), run)
    run_search(run, n_trials=4, timeout_s=None)
    trials = [t for t in _study(run).get_trials() if t.state != TrialState.WAITING]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert trials[0].user_attrs["baseline"] == "unchanged"
    assert trials[0].user_attrs["candidate"]["quantize"]["mode"] == "fp32"
    assert trials[1].user_attrs["baseline"] == "int8"
    assert trials[1].user_attrs["candidate"]["quantize"]["mode"] == "int8_static"
    records = load_run(run)
    for rec in records["trials"]:
        m = rec["measurements"]["mobile-sd8gen2"]
        assert m["latency_ms"]["provenance"] == "estimated"
        assert m["size_mb"]["provenance"] == "measured"
        assert (run / rec["onnx"]).exists()
    # the unchanged candidate is the original model: same validation accuracy as the baseline
    assert records["trials"][0]["val_accuracy"] == pytest.approx(
        records["baseline"]["val_accuracy"]
    )


def test_host_target_latency_is_measured_against_the_baseline(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    prepare(_config(model_files["bundle_wide"], tiny_data, targets=("cpu",)), run)
    run_search(run, n_trials=2, timeout_s=None)
    records = load_run(run)
    host = records["targets"][0]
    unchanged = records["trials"][0]
    lat = unchanged["measurements"][host]["latency_ms"]
    assert lat["provenance"] == "measured"
    # the unchanged model timed against itself: ratio ~1, so ~ the reference latency
    ref = records["baseline"]["host_latency_ms"][host]
    assert 0.5 * ref < lat["value"] < 2.0 * ref
    assert unchanged["measurements"][host]["peak_memory_mb"]["provenance"] == "measured"


def _start_worker(run: Path, model_files: dict, tiny_data: Path, **env: str) -> subprocess.Popen:
    """A prepared run with one worker process started on it (up to 50 trials)."""
    prepare(_config(model_files["bundle_wide"], tiny_data), run)
    return subprocess.Popen(
        [sys.executable, "-m", "edgeopt.search.run.loop", str(run), "--trials", "50"],
        env={**os.environ, **env},
    )


def test_interrupted_run_resumes_without_losing_trials(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    worker = _start_worker(run, model_files, tiny_data)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if len(_study(run).get_trials(states=(TrialState.COMPLETE,))) >= 1:
            break
    worker.send_signal(signal.SIGINT)  # like Ctrl-C: finish the running trial, then stop
    assert worker.wait(timeout=120) == 0
    before = {t.number: t.values for t in _study(run).get_trials(states=(TrialState.COMPLETE,))}
    assert 1 <= len(before) < 50
    assert not _study(run).get_trials(states=(TrialState.RUNNING,))
    run_search(run, n_trials=len(before) + 1, timeout_s=None)
    # queued expert seeds and sibling variants not yet run stay WAITING for the next resume
    after = {t.number: t for t in _study(run).get_trials() if t.state != TrialState.WAITING}
    assert len(after) == len(before) + 1
    for n, values in before.items():
        assert after[n].values == values


def test_killed_worker_trial_is_failed_by_heartbeat_and_retried_once(
    tmp_path: Path, model_files: dict, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgeopt.search.run.loop as loop
    import edgeopt.search.study.lifecycle as study_mod

    # heartbeats every second: a trial is stale 3 s after its worker died
    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    monkeypatch.setattr(loop, "HEARTBEAT_S", 1)
    run = tmp_path / "run"
    worker = _start_worker(run, model_files, tiny_data, EDGEOPT_HEARTBEAT_S="1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = _study(run).get_trials(states=(TrialState.RUNNING,))
        if running and "worker" in running[0].user_attrs:
            break
        time.sleep(0.2)
    killed = running[0].number
    worker.kill()
    worker.wait()
    run_search(run, n_trials=2, timeout_s=None)
    trials = _study(run).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # the retry replaces the dead trial in the count: 2 trials counted, 3 in the study
    assert len(trials) == 3
    rec = next(t for t in load_run(run)["trials"] if t["number"] == killed)
    assert rec["fail_stage"] == "worker" and "heartbeats" in rec["fail_reason"]


def test_two_workers_share_one_storage_without_lost_or_extra_trials(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    prepare(_config(model_files["bundle_wide"], tiny_data), run)
    run_search(run, n_trials=6, timeout_s=None, workers=2)
    # queued expert seeds and sibling variants not yet run stay WAITING
    trials = [t for t in _study(run).get_trials() if t.state != TrialState.WAITING]
    assert len(trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes ran trials
    dirs = {t.user_attrs["onnx"] for t in trials}
    assert len(dirs) == 6  # each trial built its own model


def test_failing_candidate_is_a_fail_trial_with_reason(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    # a time cap no child process can meet: every trial ends as FAIL, the study goes on
    prepare(_config(model_files["bundle_wide"], tiny_data, trial_timeout_s=0.2), run)
    run_search(run, n_trials=2, timeout_s=None)
    records = load_run(run)
    assert [t["state"] for t in records["trials"]] == ["fail", "fail"]
    for t in records["trials"]:
        assert "timed out after" in t["fail_reason"]
        assert t["fail_stage"]


def test_budgets_are_constraints_that_mark_infeasible_trials(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    cfg = _config(model_files["bundle_wide"], tiny_data, budgets=Budgets(max_size_mb=1e-4))
    prepare(cfg, run)
    run_search(run, n_trials=2, timeout_s=None)
    study = _study(run)
    for t in study.get_trials():
        assert t.constraints["size_mb"] > 0
    assert study.best_trials == []  # nothing feasible: the front is empty
    assert not any(t["on_front"] for t in load_run(run)["trials"])


def test_same_seed_reproduces_the_first_trials(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    params = []
    for name in ("a", "b"):
        run = tmp_path / name
        prepare(_config(model_files["bundle_wide"], tiny_data, seed=7), run)
        run_search(run, n_trials=3, timeout_s=None)
        params.append([t.params for t in _study(run).get_trials()])
    assert params[0] == params[1]
    assert params[0][2] != {}  # the sampled trials really drew parameters


@pytest.mark.parametrize("sampler", ["grid", "nsga2", "random", "gp"])
def test_every_sampler_runs_a_study(
    tmp_path: Path, model_files: dict, tiny_data: Path, sampler: str
) -> None:
    run = tmp_path / sampler
    # an ONNX input keeps this fast: only the quantize stage's space is searched
    prepare(_config(model_files["onnx"], tiny_data, sampler=sampler), run)
    run_search(run, n_trials=4, timeout_s=None)
    trials = _study(run).get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials), [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    assert len(trials) == 4
    assert all(t.params.get("prune.ratio", 0.0) == 0.0 for t in trials)


def test_memory_cap_ends_the_trial_not_the_study(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    prepare(_config(model_files["bundle_wide"], tiny_data, trial_memory_gb=0.3), run)
    run_search(run, n_trials=2, timeout_s=None)
    records = load_run(run)
    assert [t["state"] for t in records["trials"]] == ["fail", "fail"]
    assert all("memory cap of 0.3 GiB" in t["fail_reason"] for t in records["trials"])


def test_hopeless_trial_stops_after_the_first_epoch(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    # the tiny untrained model cannot reach 99 %: a pruned + fine-tuned trial is abandoned
    # after its first epoch instead of training all its epochs
    cfg = _config(model_files["bundle_wide"], tiny_data, budgets=Budgets(min_accuracy=0.99))
    prepare(cfg, run)
    run_search(run, n_trials=3, timeout_s=None)
    records = load_run(run)
    sampled = records["trials"][2]
    assert sampled["candidate"]["prune"]["ratio"] > 0
    assert sampled["state"] == "stopped"
    assert "after the first fine-tune epoch is far below the budget" in sampled["stopped_reason"]


def test_unexpected_error_in_a_trial_is_recorded_not_raised(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    from edgeopt.search.run.loop import Worker

    run = tmp_path / "run"
    prepare(_config(model_files["bundle_wide"], tiny_data), run)
    worker = Worker.open(run)
    trial = worker._ask(limit=None)
    assert trial is not None
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        worker.runner._internal_failure(trial, exc)
    t = _study(run).get_trials()[trial.number]
    assert t.state == TrialState.FAIL
    assert t.user_attrs["fail_stage"] == "internal"
    assert "unexpected RuntimeError: boom" in t.user_attrs["fail_reason"]
    assert "RuntimeError: boom" in (run / "trials" / "0" / "error.txt").read_text()
