"""Concurrency, resume and interruption through the real command line: two processes on one
new run directory, resumed runs that draw new candidates, settings that must match on resume,
Ctrl-C once and twice, lost baselines, and runs where nothing is feasible."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.loading import ModelSpec
from edgeopt.search.run.loop import Worker, run_search
from edgeopt.search.run.setup import prepare

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]


def _study(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{run / 'study.db'}")


def _cli(*args: object, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EDGEOPT, *(str(a) for a in args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[arg-type]
    )


def _optimize_args(model: Path, data: Path, out: Path, *extra: object) -> list[object]:
    return ["optimize", model, "--data", data, "--target", "mobile", "--out", out, *extra]


def test_two_processes_on_a_new_run_directory_share_it(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    args = _optimize_args(model_files["onnx"], tiny_data, out, "--trials", "3", "--no-report")
    procs = [_cli(*args), _cli(*args)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    trials = _study(out).get_trials()
    assert len(trials) == 3  # the second process joined the first one's study
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_resumed_run_draws_new_candidates(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    cfg = RunConfig(
        model=ModelSpec(path=str(model_files["onnx"])),
        data=str(tiny_data),
        targets=("mobile",),
        sampler="random",
    )
    prepare(cfg, run)
    run_search(run, n_trials=3, timeout_s=None)
    run_search(run, n_trials=5, timeout_s=None)
    params = [t.params for t in _study(run).get_trials()]
    assert len(params) == 5
    # before: every process re-seeded the sampler alike, so the resumed run's first draw
    # (trial 3) replayed the first run's (trial 2)
    assert params[3] != params[2]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    """A finished 2-trial run on the cpu target with the random sampler, made once; tests
    copy it before they resume it or change it."""
    out = tmp_path_factory.mktemp("cpu_run") / "run"
    base = ["optimize", model_files["onnx"], "--data", tiny_data, "--out", out, "--no-report"]
    first = _cli(*base, "--target", "cpu", "--trials", "2", "--sampler", "random")
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    return out


def test_resume_with_other_sampler_is_refused_but_an_alias_is_the_same_target(
    tmp_path: Path, model_files: dict, tiny_data: Path, cpu_run: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(cpu_run, out)  # ``base`` with --target cpu --trials 2 --sampler random
    base = ["optimize", model_files["onnx"], "--data", tiny_data, "--out", out, "--no-report"]
    other = _cli(*base, "--target", "cpu", "--trials", "2", "--sampler", "tpe")
    _, err = other.communicate(timeout=120)
    assert other.returncode == 2
    assert "holds a run with different sampler" in err
    assert "Traceback" not in err
    alias = _cli(*base, "--target", "host-cpu", "--trials", "2", "--sampler", "random")
    _, err = alias.communicate(timeout=300)
    assert alias.returncode == 0, err


def _wait_for_running_trial(run: Path, timeout_s: float = 120) -> None:
    """Until a trial child has its request (the trial is RUNNING). Polls files, not the
    study: opening a study while the command is still creating its tables races with it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if list((run / "trials").glob("*/request.json")):
            return
        time.sleep(0.2)
    raise AssertionError("no trial started")


def test_first_ctrl_c_finishes_the_trial_says_so_and_exits_130(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    proc = _cli(*_optimize_args(model_files["bundle"], tiny_data, out, "--trials", "50"))
    _wait_for_running_trial(out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130
    assert "stopping after the running trial (Ctrl-C again to abort)" in err
    assert "re-run the same command to resume" in err
    trials = _study(out).get_trials()
    assert trials and not [t for t in trials if t.state == TrialState.RUNNING]
    assert (out / "report" / "report.md").exists()  # what was done is reported


def test_second_ctrl_c_kills_the_trial_child_and_fails_its_trial(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    # a pruned + fine-tuned trial lasts long enough to be interrupted inside its child
    proc = _cli(
        *_optimize_args(model_files["bundle"], tiny_data, out, "--trials", "50"),
        "--sampler",
        "random",
        "--seed",
        "3",
    )
    _wait_for_running_trial(out)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    time.sleep(1.0)
    children = subprocess.run(
        ["pgrep", "-f", f"edgeopt.search.trial.builder {out}"], capture_output=True, text=True
    )
    assert children.stdout.strip() == ""  # no orphaned trial child
    trials = _study(out).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    aborted = [t for t in trials if t.user_attrs.get("fail_stage") == "interrupted"]
    assert len(aborted) == 1


def test_a_lost_baseline_trial_is_queued_again_on_resume(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = tmp_path / "run"
    cfg = RunConfig(
        model=ModelSpec(path=str(model_files["onnx"])), data=str(tiny_data), targets=("mobile",)
    )
    prepare(cfg, run)
    worker = Worker.open(run)
    trial = worker._ask(limit=None)
    assert trial is not None and trial.user_attrs["baseline"] == "unchanged"
    worker.runner._fail(trial, "internal", "database or disk is full")  # e.g. a full disk
    run_search(run, n_trials=4, timeout_s=None)
    trials = _study(run).get_trials()
    unchanged = [t for t in trials if t.user_attrs.get("baseline") == "unchanged"]
    assert [t.state for t in unchanged] == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_worker_dead_right_after_asking_leaves_no_trial_running_forever(
    tmp_path: Path, model_files: dict, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between asking a trial and its heartbeat thread's first beat: the
    trial was asked with its first heartbeat, so it goes stale and is failed and retried."""
    import edgeopt.search.study.lifecycle as study_mod
    from edgeopt.search.study.lifecycle import fail_stale_trials

    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    run = tmp_path / "run"
    cfg = RunConfig(
        model=ModelSpec(path=str(model_files["onnx"])), data=str(tiny_data), targets=("mobile",)
    )
    prepare(cfg, run)
    dead = Worker.open(run)
    asked = dead._ask(limit=None)  # ... and the worker dies here, before running it
    assert asked is not None
    time.sleep(study_mod.HEARTBEAT_S * (study_mod.GRACE_BEATS + 1) + 0.5)
    storage = study_mod.heartbeat_storage(f"sqlite:///{run / 'study.db'}")  # with heartbeats
    fail_stale_trials(optuna.load_study(study_name="edgeopt", storage=storage), storage)
    trials = _study(run).get_trials()
    assert trials[asked.number].state == TrialState.FAIL
    assert [t for t in trials if t.system_attrs.get("failed_trial") == asked.number]


def test_a_worker_dead_between_asking_and_its_first_heartbeat_is_found_at_the_next_ask(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """The window before ``first_heartbeat``: a worker killed right after ``study.ask()``
    leaves a RUNNING trial without any heartbeat row, which Optuna's stale check never
    finds. The next worker to ask (under the ask lock) fails it and runs its retry."""
    import edgeopt.search.study.lifecycle as study_mod

    run = tmp_path / "run"
    cfg = RunConfig(
        model=ModelSpec(path=str(model_files["onnx"])), data=str(tiny_data), targets=("mobile",)
    )
    prepare(cfg, run)
    storage = study_mod.heartbeat_storage(f"sqlite:///{run / 'study.db'}")
    orphan = optuna.load_study(study_name="edgeopt", storage=storage).ask()  # ... killed here
    storage.engine.dispose()
    worker = Worker.open(run)
    asked = worker._ask(limit=None)
    assert asked is not None
    trials = _study(run).get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
    # a trial that did beat once is left to Optuna's grace period, not failed at once
    assert trials[asked.number].state == TrialState.RUNNING
    assert worker._ask(limit=None) is not None
    assert _study(run).get_trials()[asked.number].state == TrialState.RUNNING


def test_a_baseline_lost_in_the_trial_that_fills_trials_is_not_left_queued(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """What ``kill -9`` at random left behind: the int8 baseline's trial child was killed in
    the trial that filled ``--trials`` (a FAIL, so the baseline is lost), and a worker died
    right after asking (RUNNING, no heartbeat). The final run with the same ``--trials``
    runs the dead trial's retry and leaves nothing queued or running, the count exact; a
    run with more trials queues the lost baseline again, after a retry."""
    import edgeopt.search.study.lifecycle as study_mod
    from edgeopt.search.study.lifecycle import counted_trials

    out = tmp_path / "run"

    def optimize(trials: int) -> None:
        args = _optimize_args(model_files["onnx"], tiny_data, out, "--trials", trials)
        proc = _cli(*args, "--no-report")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    def ask_and_die() -> int:
        """A worker killed between asking a trial and its first heartbeat."""
        storage = study_mod.heartbeat_storage(f"sqlite:///{out / 'study.db'}")
        number = optuna.load_study(study_name="edgeopt", storage=storage).ask().number
        storage.engine.dispose()
        return number

    optimize(1)  # the unchanged model
    worker = Worker.open(out)
    lost = worker._ask(limit=2)
    assert lost is not None and lost.user_attrs["baseline"] == "int8"
    lost.set_user_attr("fail_reason", "the trial process was killed (SIGKILL)")
    worker.study.tell(lost, state=TrialState.FAIL)  # its child was killed: not its fault
    worker.runner.close()
    worker.storage.engine.dispose()
    orphan = ask_and_die()
    assert counted_trials(_study(out)) == 3
    optimize(3)
    study = _study(out)
    assert counted_trials(study) == 3
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    trials = study.get_trials()
    assert [t.system_attrs.get("failed_trial") for t in trials[orphan + 1 :]] == [orphan]
    assert trials[-1].state == TrialState.COMPLETE
    # more trials: a retry still runs first, then the lost baseline is queued again
    orphan = ask_and_die()
    optimize(5)
    study = _study(out)
    assert counted_trials(study) == 5
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    new = study.get_trials()[len(trials) + 1 :]
    assert [t.system_attrs.get("failed_trial") for t in new] == [orphan, None]
    assert new[1].user_attrs["baseline"] == "int8"
    assert [t.state for t in new] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_nothing_feasible_exits_1_naming_the_budget_and_the_closest_trial(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    args = _optimize_args(model_files["onnx"], tiny_data, out, "--trials", "2")
    proc = _cli(*args, "--max-size-mb", "0.00001", "--no-report")
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Error: no trial met the budgets: the closest, trial" in err
    assert "is over size_mb by" in err
    assert "Hint: relax --max-size-mb" in err


def test_all_failed_exits_1_with_the_reason(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    args = _optimize_args(model_files["onnx"], tiny_data, out, "--trials", "2")
    proc = _cli(*args, "--trial-timeout", "0.2s", "--no-report")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "Error: no trial completed (2 failed or stopped early)" in err
    assert "timed out after" in err


def test_kill_9_at_random_points_in_10_resumes_loses_nothing(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """Fault injection: kill -9 the main process or the trial child at seeded random moments,
    resume ten times, then finish: completed trials never change and the count is exact."""
    import random

    out = tmp_path / "run"
    env = {**os.environ, "EDGEOPT_HEARTBEAT_S": "1"}
    # each fault (21 at most: the trial child, then the main process, per resume) may count
    # a failed trial toward --trials: 24 leaves the final run trials to complete even on a
    # loaded machine where no trial finishes between kills (a CI run: 13 failed of 8)
    args = [*_optimize_args(model_files["onnx"], tiny_data, out, "--trials", "24"), "--no-report"]
    rng = random.Random(11)
    # one fault for certain: the main process dies while a trial runs (the random kills
    # below may all land between trials on a fast machine)
    first = _cli(*args, env=env)
    _wait_for_running_trial(out)
    first.kill()
    first.communicate()
    done: dict[int, tuple[float, ...]] = {}
    for _ in range(10):
        proc = _cli(*args, env=env)
        time.sleep(rng.uniform(0.5, 6.0))
        children = subprocess.run(
            ["pgrep", "-f", f"edgeopt.search.trial.builder {out}"], capture_output=True, text=True
        ).stdout.split()
        if rng.random() < 0.5 and children:  # the trial child first, the main a bit later
            os.kill(int(children[0]), signal.SIGKILL)
            time.sleep(rng.uniform(0.1, 2.0))
        proc.kill()
        proc.communicate()
        if not (out / "study.db").exists():
            continue
        try:
            study = _study(out)
        except KeyError:  # killed after the tables were made, before the study was
            continue
        now = {t.number: tuple(t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}
        assert all(now.get(n) == v for n, v in done.items())  # nothing completed is lost
        done = now
    final = _cli(*args, env=env)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    from edgeopt.search.study.lifecycle import counted_trials

    study = _study(out)
    assert counted_trials(study) == 24
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    after = {t.number: tuple(t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert all(after.get(n) == v for n, v in done.items())
    # the faults were real: killed workers' trials went stale and were re-run once
    assert any(t.system_attrs.get("failed_trial") is not None for t in study.get_trials())


def test_run_from_an_older_search_space_is_refused_with_a_clear_error(
    tmp_path: Path, model_files: dict, tiny_data: Path, cpu_run: Path
) -> None:
    """A run.json without ``search_space`` was written before the wsd schedule existed: its
    study's choice lists differ, so resuming it is refused with exit 2, not an Optuna error."""
    import json

    out = tmp_path / "run"
    shutil.copytree(cpu_run, out)  # ``base`` with --target cpu --trials 2
    base = ["optimize", model_files["onnx"], "--data", tiny_data, "--out", out, "--no-report"]
    base += ["--sampler", "random"]  # the run's own sampler: only search_space differs
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["search_space"] == 2
    del run_json["search_space"]
    (out / "run.json").write_text(json.dumps(run_json))
    again = _cli(*base, "--target", "cpu", "--trials", "3")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2
    assert "older edgeopt whose search space differs" in err and "Traceback" not in err


def test_a_trial_child_killed_from_outside_does_not_block_its_config(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """A SIGKILL that neither the memory cap nor the kernel's OOM killer sent (a user, a kill
    -9 of the wrong pid) says nothing about the config: the trial FAILs with that reason and
    is not marked hung, so ``blocked_by_earlier_hang`` does not skip the setting later (in the
    kill -9 resume test such blocks left a run with no completed trial)."""
    from edgeopt.search.trial.memory import kernel_oom_kills
    from edgeopt.search.trial.policy import HUNG_ATTR

    out = tmp_path / "run"
    args = _optimize_args(model_files["onnx"], tiny_data, out, "--trials", "2", "--no-report")
    proc = _cli(*args)
    _wait_for_running_trial(out)
    oom_before = kernel_oom_kills()
    killed = False
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline:
        pids = subprocess.run(
            ["pgrep", "-f", f"edgeopt.search.trial.builder {out}"], capture_output=True, text=True
        ).stdout.split()
        if pids:
            os.kill(int(pids[0]), signal.SIGKILL)
            killed = True
        else:
            time.sleep(0.05)
    assert killed
    _, err = proc.communicate(timeout=300)
    assert oom_before is not None and kernel_oom_kills() == oom_before  # the test's premise
    failed = _study(out).get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1, err
    assert "killed from outside" in failed[0].user_attrs["fail_reason"]
    assert failed[0].user_attrs.get(HUNG_ATTR) is False
