"""Signals and processes, through the real command line: SIGTERM (service managers, CI,
``timeout``, Kubernetes) and SIGHUP stop a search like a first Ctrl-C (the running trial
finishes or is aborted after a grace period, the report is written, exit 128 + the signal),
a second signal aborts at once, and no process edgeopt started outlives the one that
started it, even under ``kill -9``. Real processes, real signals; children are found in
/proc."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEOPT_MACHINE": "test"}


# ---------------------------------------------------------------------------- processes
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process; None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in "ZX" else (state, int(ppid))


def _descendants(root: int) -> set[int]:
    """Every live process below ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = st[1]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _mentioning(text: str) -> set[int]:
    """Live processes whose command line contains ``text`` (a run directory)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and _stat(int(entry.name)) is not None:
            out.add(int(entry.name))
    return out


def _alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if _stat(pid) is not None}


def _wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _kill_leftovers(run: Path) -> None:
    """Tidy up after a failing test: no orphan of it computes on."""
    for pid in _mentioning(str(run)):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def slow_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough training data that a fine-tune runs for many seconds (an epoch ~2 s)."""
    rng = np.random.default_rng(0)
    shape = (1, 16, 16)
    protos = rng.standard_normal((10, *shape)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = protos[y] + 0.3 * rng.standard_normal((n, *shape)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    path = tmp_path_factory.mktemp("slow") / "slow.npz"
    xtr, ytr = split(6000)
    xva, yva = split(100)
    xte, yte = split(100)
    np.savez(path, x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    return path


class Run:
    """One ``edgeopt optimize`` process, its stderr in a file (read while it runs)."""

    def __init__(self, out: Path, *args: object, env: dict[str, str] | None = None) -> None:
        self.out = out
        self.err_path = out.parent / f"{out.name}.{len(list(out.parent.glob('*.err')))}.err"
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [*EDGEOPT, "optimize", *(str(a) for a in args), "--out", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**ENV, **(env or {})},
            )

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout_s: float = 180) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            _kill_leftovers(self.out)

    def trial_in_stage(self, stage: str) -> int | None:
        """A trial whose child is in ``stage`` now (``stage.txt``), or None."""
        for path in (self.out / "trials").glob("*/stage.txt"):
            try:
                if path.read_text().strip() == stage and not (path.parent / "result.json").exists():
                    return int(path.parent.name)
            except (OSError, ValueError):
                continue
        return None

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="edgeopt", storage=f"sqlite:///{self.out / 'study.db'}")


def _args(model: Path, data: Path, *extra: object) -> list[object]:
    return [model, "--data", data, "--target", "mobile", "--threads", "1", *extra]


def _in_finetune(run: Run) -> int:
    """Wait until a trial's child fine-tunes (a step that lasts seconds here)."""
    found = _wait_for(lambda: run.trial_in_stage("finetune"), 150, "a trial in its fine-tune")
    return int(found)  # type: ignore[arg-type]


def _assert_stopped_cleanly(run: Run, code: int, signame: str) -> list[optuna.trial.FrozenTrial]:
    assert code == 128 + signal.Signals[signame].value, run.err
    assert "Traceback" not in run.err
    assert f"stopped by {signame}; re-run the same command to resume" in run.err
    assert (run.out / "report" / "report.md").exists()  # what was done is reported
    trials = run.study().get_trials()
    assert trials and not [t for t in trials if t.state == TrialState.RUNNING]
    assert not _mentioning(str(run.out))  # no trial child (or worker) left behind
    return trials


# ---------------------------------------------------------------------------- SIGTERM
def test_sigterm_finishes_the_running_trial_writes_the_report_and_exits_143(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = Run(tmp_path / "run", *_args(model_files["bundle"], tiny_data, "--trials", "50"))
    _wait_for(lambda: list((run.out / "trials").glob("*/request.json")), 150, "a trial")
    run.proc.send_signal(signal.SIGTERM)
    trials = _assert_stopped_cleanly(run, run.wait(), "SIGTERM")
    assert "SIGTERM: stopping after the running trial" in run.err
    # the trial running at the signal finished: nothing was aborted
    assert not [t for t in trials if t.user_attrs.get("fail_stage") == "interrupted"]


def test_sigterm_aborts_a_trial_still_running_after_the_grace_period(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *_args(model_files["bundle_wide"], slow_data, "--trials", "50"),
        env={"EDGEOPT_STOP_GRACE_S": "1"},
    )
    number = _in_finetune(run)
    run.proc.send_signal(signal.SIGTERM)
    trials = _assert_stopped_cleanly(run, run.wait(), "SIGTERM")
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
        *_args(model_files["bundle_wide"], slow_data, "--trials", "50"),
        env={"EDGEOPT_STOP_GRACE_S": "600"},  # the abort can only come from the second signal
    )
    number = _in_finetune(run)
    run.proc.send_signal(signal.SIGTERM)
    _wait_for(lambda: "stopping after the running trial" in run.err, 30, "the first SIGTERM")
    time.sleep(1.2)  # a SIGTERM within a second of the first is the same request
    run.proc.send_signal(signal.SIGTERM)
    trials = _assert_stopped_cleanly(run, run.wait(60), "SIGTERM")
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs["fail_reason"] == "aborted by a second SIGTERM"


def test_sigterm_to_every_process_at_once_lets_the_running_trial_finish(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    """systemd (KillMode=control-group) signals every process of the service at once: the
    trial child must not die of it (its trial would fail), the search decides."""
    run = Run(
        tmp_path / "run",
        *_args(model_files["bundle_wide"], slow_data, "--trials", "50"),
        env={"EDGEOPT_STOP_GRACE_S": "300"},
    )
    number = _in_finetune(run)
    for pid in {run.proc.pid, *_descendants(run.proc.pid)}:
        os.kill(pid, signal.SIGTERM)
    trials = _assert_stopped_cleanly(run, run.wait(), "SIGTERM")
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
        [*EDGEOPT, "optimize", *map(str, _args(model_files["bundle"], tiny_data)), "--out", out]
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
        _kill_leftovers(out)
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
        [*EDGEOPT, "optimize", *map(str, _args(model_files["bundle"], tiny_data)), "--out", out]
        + ["--trials", "3", "--no-report"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        _wait_for(lambda: list((out / "trials").glob("*/request.json")), 150, "a trial")
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=180)
    finally:
        _kill_leftovers(out)
    assert proc.returncode == 0, err
    assert "stopping" not in err


def test_sighup_stops_like_sigterm_and_exits_129(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """A closed terminal (or an ssh session that dropped) sends SIGHUP."""
    run = Run(tmp_path / "run", *_args(model_files["bundle"], tiny_data, "--trials", "50"))
    _wait_for(lambda: list((run.out / "trials").glob("*/request.json")), 150, "a trial")
    run.proc.send_signal(signal.SIGHUP)
    _assert_stopped_cleanly(run, run.wait(), "SIGHUP")


def test_sigterm_during_setup_exits_143_without_a_traceback(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    """Before any trial (loading, the baseline, the timed fine-tune epoch): stop at once."""
    run = Run(tmp_path / "run", *_args(model_files["bundle_wide"], slow_data, "--trials", "5"))
    _wait_for(lambda: (run.out / "run.json").exists(), 150, "setup to begin")
    run.proc.send_signal(signal.SIGTERM)
    code = run.wait(60)
    assert code == 143, run.err
    assert "Traceback" not in run.err
    assert "Terminated (SIGTERM)" in run.err
    assert not _mentioning(str(run.out))


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
    _wait_for(lambda: "re-measuring its host latency" in run.err, 150, "the final pass")
    run.proc.send_signal(signal.SIGTERM)
    code = run.wait(60)
    assert code == 143, run.err
    assert "Traceback" not in run.err
    assert (run.out / "report" / "report.md").exists()
    assert not _mentioning(str(run.out))


def test_sigterm_to_a_run_with_two_workers_stops_both_and_exits_143(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *_args(model_files["bundle"], tiny_data, "--trials", "50", "--workers", "2"),
    )
    _wait_for(lambda: list((run.out / "trials").glob("*/request.json")), 150, "a trial")
    run.proc.send_signal(signal.SIGTERM)
    _assert_stopped_cleanly(run, run.wait(), "SIGTERM")


def test_a_malformed_grace_period_is_a_usage_error_before_any_work(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *_args(model_files["bundle"], tiny_data, "--trials", "2"),
        env={"EDGEOPT_STOP_GRACE_S": "soon"},
    )
    assert run.wait(60) == 2
    assert "Error: EDGEOPT_STOP_GRACE_S='soon' is not a number of seconds" in run.err
    assert not (run.out / "study.db").exists()


# ---------------------------------------------------------------------------- kill -9
def test_kill_9_of_the_search_takes_its_trial_child_with_it(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(tmp_path / "run", *_args(model_files["bundle_wide"], slow_data, "--trials", "50"))
    _in_finetune(run)
    below = _descendants(run.proc.pid)
    assert below  # the trial child, fine-tuning
    run.proc.kill()
    run.proc.wait()
    try:
        _wait_for(lambda: not _alive(below), 3, "the trial child to die with its parent")
    finally:
        _kill_leftovers(run.out)


def test_kill_9_of_a_two_worker_search_takes_workers_and_trial_children_with_it(
    tmp_path: Path, model_files: dict, slow_data: Path
) -> None:
    run = Run(
        tmp_path / "run",
        *_args(model_files["bundle_wide"], slow_data, "--trials", "50", "--workers", "2"),
    )
    _in_finetune(run)
    below = _descendants(run.proc.pid)
    assert len(below) >= 3  # two workers and a trial child at least
    run.proc.kill()
    run.proc.wait()
    try:
        _wait_for(lambda: not _alive(below), 5, "workers and trial children to die")
    finally:
        _kill_leftovers(run.out)


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
        timing = _wait_for(lambda: _descendants(parent.pid), 60, "the timing child")
        time.sleep(0.5)  # it has read its request and set itself up
        parent.kill()
        parent.wait()
        _wait_for(lambda: not _alive(timing), 3, "the timing child to die with its parent")
    finally:
        for pid in _alive(timing if "timing" in locals() else set()):
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
    args = _args(model_files["bundle_wide"], tiny_data, "--trials", "4", "--no-report")
    first = Run(out, *args, env=env)
    _wait_for(lambda: (out / "trials" / "2" / "request.json").exists(), 150, "trial 2")
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
