"""Signals through the real command line: SIGTERM (service managers, CI, ``timeout``,
Kubernetes) and SIGHUP stop a search like a first Ctrl-C (the running trial finishes or is
aborted after a grace period, the report is written, exit 128 + the signal), a second
signal aborts at once, and no child dies of a signal meant for the search. Real processes,
real signals (``signal_runs``)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState
from signal_runs import (
    EDGEOPT,
    ENV,
    Run,
    assert_stopped_cleanly,
    descendants,
    in_finetune,
    kill_leftovers,
    mentioning,
    optimize_args,
    wait_for,
)


def test_sigterm_finishes_the_running_trial_writes_the_report_and_exits_143(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = Run(tmp_path / "run", *optimize_args(model_files["bundle"], tiny_data, "--trials", "50"))
    wait_for(lambda: list((run.out / "trials").glob("*/request.json")), 150, "a trial")
    run.proc.send_signal(signal.SIGTERM)
    trials = assert_stopped_cleanly(run, run.wait(), "SIGTERM")
    assert "SIGTERM: stopping after the running trial" in run.err
    # the trial running at the signal finished: nothing was aborted
    assert not [t for t in trials if t.user_attrs.get("fail_stage") == "interrupted"]


def test_sigterm_aborts_a_trial_still_running_after_the_grace_period(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *optimize_args(model_files["bundle_wide"], slow_data, "--trials", "50"),
        env={"EDGEOPT_STOP_GRACE_S": "1"},
    )
    number = in_finetune(run)
    run.proc.send_signal(signal.SIGTERM)
    trials = assert_stopped_cleanly(run, run.wait(), "SIGTERM")
    aborted = trials[number]
    assert aborted.state == TrialState.FAIL
    assert aborted.user_attrs["fail_stage"] == "interrupted"
    assert "still running 1s after SIGTERM" in aborted.user_attrs["fail_reason"]
    # not the candidate's failure: queued again, first to run on a resume (an expert seed
    # that failed would never be queued again)
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == number]
    assert retry.state == TrialState.WAITING
    assert retry.system_attrs["fixed_params"] == aborted.params
    assert retry.user_attrs.get("seed") == aborted.user_attrs.get("seed")


def test_a_second_sigterm_aborts_the_running_trial_at_once(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *optimize_args(model_files["bundle_wide"], slow_data, "--trials", "50"),
        env={"EDGEOPT_STOP_GRACE_S": "600"},  # the abort can only come from the second signal
    )
    number = in_finetune(run)
    run.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping after the running trial" in run.err, 30, "the first SIGTERM")
    time.sleep(1.2)  # a SIGTERM within a second of the first is the same request
    run.proc.send_signal(signal.SIGTERM)
    trials = assert_stopped_cleanly(run, run.wait(60), "SIGTERM")
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs["fail_reason"] == "aborted by a second SIGTERM"


def test_sigterm_to_every_process_at_once_lets_the_running_trial_finish(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    """systemd (KillMode=control-group) signals every process of the service at once: the
    trial child must not die of it (its trial would fail), the search decides."""
    run = Run(
        tmp_path / "run",
        *optimize_args(model_files["bundle_wide"], slow_data, "--trials", "50"),
        env={"EDGEOPT_STOP_GRACE_S": "300"},
    )
    number = in_finetune(run)
    for pid in {run.proc.pid, *descendants(run.proc.pid)}:
        os.kill(pid, signal.SIGTERM)
    trials = assert_stopped_cleanly(run, run.wait(), "SIGTERM")
    assert trials[number].state == TrialState.COMPLETE, trials[number].user_attrs


def test_a_closed_terminal_stops_it_like_sighup_and_the_report_is_still_written(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """Its terminal goes away (a closed window, a dropped ssh session): the kernel sends
    SIGHUP, and every later write to the terminal fails (EIO); the stop must not crash."""
    import fcntl
    import pty
    import termios

    out = tmp_path / "run"
    master, slave = pty.openpty()

    def controlling_terminal() -> None:  # a session whose terminal is the pty, as a shell's
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [
            *EDGEOPT,
            "optimize",
            *map(str, optimize_args(model_files["bundle"], tiny_data)),
            "--out",
            out,
        ]
        + ["--trials", "50"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=ENV,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(slave)
    try:
        while not list((out / "trials").glob("*/request.json")):  # read what it prints
            assert proc.poll() is None
            with contextlib.suppress(OSError):
                if select.select([master], [], [], 0.1)[0]:
                    os.read(master, 65536)
        os.close(master)  # the terminal goes away
        code = proc.wait(timeout=180)
    finally:
        kill_leftovers(out)
    assert code == 129
    assert (out / "report" / "report.md").exists()
    trials = optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{out / 'study.db'}")
    assert not trials.get_trials(states=(TrialState.RUNNING,))
    assert not [t for t in trials.get_trials() if t.user_attrs.get("fail_stage") == "internal"]


def test_sighup_is_left_ignored_under_nohup(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """``nohup`` starts it with SIGHUP ignored: a closed terminal must not stop it then."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *EDGEOPT,
            "optimize",
            *map(str, optimize_args(model_files["bundle"], tiny_data)),
            "--out",
            out,
        ]
        + ["--trials", "3", "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        wait_for(lambda: list((out / "trials").glob("*/request.json")), 150, "a trial")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=180)
    finally:
        kill_leftovers(out)
    assert proc.returncode == 0, err
    assert "stopping" not in err


def test_sighup_stops_like_sigterm_and_exits_129(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """A closed terminal (or an ssh session that dropped) sends SIGHUP."""
    run = Run(tmp_path / "run", *optimize_args(model_files["bundle"], tiny_data, "--trials", "50"))
    wait_for(lambda: list((run.out / "trials").glob("*/request.json")), 150, "a trial")
    run.proc.send_signal(signal.SIGHUP)
    assert_stopped_cleanly(run, run.wait(), "SIGHUP")


def test_sigterm_during_setup_exits_143_without_a_traceback(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    """Before any trial (loading, the baseline, the timed fine-tune epoch): stop at once."""
    run = Run(
        tmp_path / "run", *optimize_args(model_files["bundle_wide"], slow_data, "--trials", "5")
    )
    wait_for(lambda: (run.out / "run.json").exists(), 150, "setup to begin")
    run.proc.send_signal(signal.SIGTERM)
    code = run.wait(60)
    assert code == 143, run.err
    assert "Traceback" not in run.err
    assert "Terminated (SIGTERM)" in run.err
    assert not mentioning(str(run.out))


def test_sigterm_during_the_final_pass_still_writes_the_report(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """On a measured target the search ends with a final re-measure: a SIGTERM there skips
    it, and the report is still written."""
    run = Run(
        tmp_path / "run",
        model_files["bundle"],
        "--data",
        tiny_data,
        "--target",
        "cpu",
        "--threads",
        "1",
        "--trials",
        "2",
    )
    wait_for(lambda: "re-measuring its host latency" in run.err, 150, "the final pass")
    run.proc.send_signal(signal.SIGTERM)
    code = run.wait(60)
    assert code == 143, run.err
    assert "Traceback" not in run.err
    assert (run.out / "report" / "report.md").exists()
    assert not mentioning(str(run.out))


def test_sigterm_to_a_run_with_two_workers_stops_both_and_exits_143(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *optimize_args(model_files["bundle"], tiny_data, "--trials", "50", "--workers", "2"),
    )
    wait_for(lambda: list((run.out / "trials").glob("*/request.json")), 150, "a trial")
    run.proc.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(run, run.wait(), "SIGTERM")


def test_a_malformed_grace_period_is_a_usage_error_before_any_work(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *optimize_args(model_files["bundle"], tiny_data, "--trials", "2"),
        env={"EDGEOPT_STOP_GRACE_S": "soon"},
    )
    assert run.wait(60) == 2
    assert "Error: EDGEOPT_STOP_GRACE_S='soon' is not a number of seconds" in run.err
    assert not (run.out / "study.db").exists()
