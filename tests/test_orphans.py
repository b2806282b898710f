"""No process a search starts outlives the one that started it, even under ``kill -9``
(trial children, timing children, worker processes), and a search killed in an expert seed
runs that seed again on resume without the progress counter passing its total. Real
processes found in /proc (``signal_runs``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from optuna.trial import TrialState
from signal_runs import (
    ENV,
    Run,
    alive,
    descendants,
    in_finetune,
    kill_leftovers,
    optimize_args,
    wait_for,
)


def test_kill_9_of_the_search_takes_its_trial_child_with_it(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(
        tmp_path / "run", *optimize_args(model_files["bundle_wide"], slow_data, "--trials", "50")
    )
    in_finetune(run)
    below = descendants(run.proc.pid)
    assert below  # the trial child, fine-tuning
    run.proc.kill()
    run.proc.wait()
    try:
        wait_for(lambda: not alive(below), 3, "the trial child to die with its parent")
    finally:
        kill_leftovers(run.out)


def test_kill_9_of_a_two_worker_search_takes_workers_and_trial_children_with_it(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *optimize_args(model_files["bundle_wide"], slow_data, "--trials", "50", "--workers", "2"),
    )
    in_finetune(run)
    below = descendants(run.proc.pid)
    assert len(below) >= 3  # two workers and a trial child at least
    run.proc.kill()
    run.proc.wait()
    try:
        wait_for(lambda: not alive(below), 5, "workers and trial children to die")
    finally:
        kill_leftovers(run.out)


def test_kill_9_of_a_worker_takes_its_timing_child_with_it(
    tmp_path: Path, model_files: dict
) -> None:
    """A process timing a model (as a worker does for each trial) killed mid-measurement:
    its timing child, which would otherwise run to its own deadline, dies with it."""
    script = (
        "import sys\n"
        "from edgeopt.measure.runtime import latency_request, run_child\n"
        "import numpy as np\n"
        f"np.save({str(tmp_path / 'x.npy')!r}, np.zeros((1, 1, 16, 16), np.float32))\n"
        f"req = latency_request([{str(model_files['onnx'])!r}], [{str(tmp_path / 'x.npy')!r}],"
        " threads=1, time_budget_s=120, min_rounds=10**6, max_rounds=10**6)\n"
        "run_child(req, timeout_s=300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env=ENV)
    try:
        timing = wait_for(lambda: descendants(parent.pid), 60, "the timing child")
        time.sleep(0.5)  # it has read its request and set itself up
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(timing), 3, "the timing child to die with its parent")
    finally:
        for pid in alive(timing if "timing" in locals() else set()):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_seeds_retry_runs_and_the_counter_never_passes_its_total(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """The search is killed while an expert seed runs, and resumed at once. The dead trial
    goes stale only after the resumed search ran a new seed, whose sibling variants were
    queued before the retry: the retry must still run (it stayed queued for ever, a sibling
    ran in its place) and the counter must not read [5/4]."""
    out = tmp_path / "run"
    env = {"EDGEOPT_HEARTBEAT_S": "8"}  # stale 24 s after the last beat
    args = optimize_args(model_files["bundle_wide"], tiny_data, "--trials", "4", "--no-report")
    first = Run(out, *args, env=env)
    wait_for(lambda: (out / "trials" / "2" / "request.json").exists(), 150, "trial 2")
    first.proc.kill()
    first.wait()
    seed = first.study().get_trials()[2]
    assert seed.state == TrialState.RUNNING and "seed" in seed.user_attrs  # killed mid-seed
    again = Run(out, *args, env=env)
    assert again.wait(240) == 0, again.err
    counters = [(int(a), int(b)) for a, b in re.findall(r"^\[(\d+)/(\d+)\]", again.err, re.M)]
    assert counters and all(done <= total for done, total in counters), again.err
    trials = again.study().get_trials()
    assert trials[2].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].user_attrs["seed"] == seed.user_attrs["seed"]
