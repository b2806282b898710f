"""Running ``edgeopt optimize`` under signals in tests: the process, its stderr read while it
runs, and its children found in /proc (test_signals, test_orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

EDGEOPT = [sys.executable, "-c", "from edgeopt.cli import main; main()"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEOPT_MACHINE": "test"}


def stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process; None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in "ZX" else (state, int(ppid))


def descendants(root: int) -> set[int]:
    """Every live process below ``root``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := stat(int(entry.name))) is not None:
            parents[int(entry.name)] = st[1]
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def mentioning(text: str) -> set[int]:
    """Live processes whose command line contains ``text`` (a run directory)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and stat(int(entry.name)) is not None:
            out.add(int(entry.name))
    return out


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if stat(pid) is not None}


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def kill_leftovers(run: Path) -> None:
    """Tidy up after a failing test: no orphan of it computes on."""
    for pid in mentioning(str(run)):
        os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- runs


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
            kill_leftovers(self.out)

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


def optimize_args(model: Path, data: Path, *extra: object) -> list[object]:
    return [model, "--data", data, "--target", "mobile", "--threads", "1", *extra]


def in_finetune(run: Run) -> int:
    """Wait until a trial's child fine-tunes (a step that lasts seconds here)."""
    found = wait_for(lambda: run.trial_in_stage("finetune"), 150, "a trial in its fine-tune")
    return int(found)  # type: ignore[arg-type]


def assert_stopped_cleanly(run: Run, code: int, signame: str) -> list[optuna.trial.FrozenTrial]:
    assert code == 128 + signal.Signals[signame].value, run.err
    assert "Traceback" not in run.err
    assert f"stopped by {signame}; re-run the same command to resume" in run.err
    assert (run.out / "report" / "report.md").exists()  # what was done is reported
    trials = run.study().get_trials()
    assert trials and not [t for t in trials if t.state == TrialState.RUNNING]
    assert not mentioning(str(run.out))  # no trial child (or worker) left behind
    return trials
