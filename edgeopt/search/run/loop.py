"""The search loop of one worker process, and the local process pool.

Every worker (a process here, or on another machine sharing the storage) runs the same
ask/tell loop: fail stale trials, count, ask, build and measure under a heartbeat, tell.
``python -m edgeopt.search.run.loop RUN_DIR [--trials N] [--timeout S] [--index I]`` is one
worker; ``run_search`` runs one in-process or a pool of them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from edgeopt.errors import EdgeoptError
from edgeopt.search.integrations.tracking import Tracker
from edgeopt.search.run.progress import TrialEvent, trial_event
from edgeopt.search.study.context import SearchContext, Trust
from edgeopt.search.study.lifecycle import (
    FINISHED,
    GRACE_BEATS,
    HEARTBEAT_S,
    ask_lock,
    counted_trials,
    enqueue_next,
    fail_stale_trials,
    first_heartbeat,
    heartbeat,
    open_study,
)
from edgeopt.search.trial.objective import TrialRunner

ProgressFn = Callable[[TrialEvent], None]


class Worker:
    """One process's loop over a study. ``stop`` (set by Ctrl-C) ends it after a trial."""

    def __init__(self, ctx: SearchContext, study: optuna.Study, storage: RDBStorage) -> None:
        self.ctx = ctx
        self.study = study
        self.storage = storage
        self.runner = TrialRunner(ctx, study)
        self.stop = False
        self.tracker: Tracker | None = None  # MLflow logging (--mlflow)

    @classmethod
    def open(
        cls,
        run_dir: Path,
        worker_index: int = 0,
        trust: Trust | None = None,
        mlflow: str | None = None,
        *,
        main: bool = False,
    ) -> Worker:
        """Join the study of the run that ``setup.prepare`` wrote; with ``mlflow`` (a tracking
        URI), log its trials there (``main``: the process that starts the search)."""
        ctx = SearchContext.open(run_dir, trust)
        study, storage = open_study(ctx, worker_index)
        worker = cls(ctx, study, storage)
        if mlflow is not None:
            worker.tracker = Tracker.join(mlflow, ctx, study, reopen=main)
        return worker

    def run(
        self, n_trials: int | None, timeout_s: float | None, progress: ProgressFn | None = None
    ) -> int:
        """Run trials until ``n_trials`` count in the study (all workers together),
        ``timeout_s`` passed, or ``stop`` was set. Returns the trials run here."""
        try:
            return self._run(n_trials, timeout_s, progress)
        finally:
            self.runner.close()

    def _run(
        self, n_trials: int | None, timeout_s: float | None, progress: ProgressFn | None
    ) -> int:
        start = time.monotonic()
        limit = self._limit(n_trials)
        ran = 0
        while not self.stop:
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                break
            trial = self._ask(limit)
            if trial is None:
                break
            with heartbeat(self.storage, self.study, trial.number):
                try:
                    self.runner.run(trial)
                except KeyboardInterrupt:  # a second Ctrl-C: the child is already killed
                    self.runner.abandon(trial, "aborted by a second Ctrl-C")
                    raise
                except Exception as exc:  # a full disk: record it if the storage still can
                    with contextlib.suppress(Exception):
                        self.runner.abandon(trial, f"{type(exc).__name__}: {exc}"[:300])
                    raise
            ran += 1
            if self.tracker is not None:
                self.tracker.log_trial(self.study, trial.number)
            if progress:
                progress(self.event(trial.number, limit, time.monotonic() - start))
        return ran

    def event(self, number: int, total: int | None, elapsed_s: float) -> TrialEvent:
        return trial_event(self.study, number, self.ctx.objectives, total, elapsed_s)

    def _limit(self, n_trials: int | None) -> int | None:
        if self.ctx.config.sampler != "grid":
            return n_trials
        from edgeopt.search.strategy.space import grid_space

        size = 1
        for values in grid_space(self.ctx.merged, self.runner.facts()).values():
            size *= len(values)
        return size if n_trials is None else min(n_trials, size)

    def _ask(self, limit: int | None) -> optuna.Trial | None:
        """The next trial, or None when the limit is reached. Before giving up while trials
        still run, wait out the heartbeat grace period: a dead worker's trial is then failed
        and re-queued, and this worker runs it."""
        deadline = time.monotonic() + HEARTBEAT_S * (GRACE_BEATS + 1)
        while True:
            # the lock makes "count, then ask" atomic for all workers: no extra trial
            with ask_lock(self.ctx, self.storage):
                fail_stale_trials(self.study, self.storage)
                if limit is None or counted_trials(self.study) < limit:
                    enqueue_next(self.study, self.ctx, self.runner.facts())
                    trial = self.study.ask()
                    first_heartbeat(self.storage, self.study, trial.number)
                    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
                    return trial
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or self.stop or time.monotonic() > deadline:
                return None
            time.sleep(min(2.0, HEARTBEAT_S))


def _stop_handler(worker: Worker, on_stop: Callable[[], None] | None) -> Any:
    """First Ctrl-C: finish the running trial, then stop. Second: abort it now."""

    def _stop(signum: int, frame: Any) -> None:
        if worker.stop:
            raise KeyboardInterrupt
        worker.stop = True
        if on_stop:
            on_stop()

    return _stop


def run_search(
    run_dir: Path,
    *,
    n_trials: int | None,
    timeout_s: float | None,
    workers: int = 1,
    progress: ProgressFn | None = None,
    on_stop: Callable[[], None] | None = None,
    trust: Trust | None = None,
    mlflow: str | None = None,
) -> bool:
    """Run the search on a prepared run directory with ``workers`` processes.

    ``trust`` carries the command line's opt-ins to running code from the model file;
    ``mlflow``, a tracking URI to log the study and its trials to (``search.tracking``).

    With one worker the trials run in this process and ``progress`` sees each one; with
    more, worker processes join the same storage and this process reports their progress.
    A first Ctrl-C calls ``on_stop`` and stops after the running trial(s); a second aborts
    them (KeyboardInterrupt; the aborted trials are FAIL). Everything finished is kept.
    Returns True when a Ctrl-C stopped the search.
    """
    if workers > 1:
        return _run_pool(run_dir, n_trials, timeout_s, workers, progress, on_stop, trust, mlflow)
    worker = Worker.open(run_dir, trust=trust, mlflow=mlflow, main=True)
    _catch_up(worker)
    old = signal.signal(signal.SIGINT, _stop_handler(worker, on_stop))
    try:
        worker.run(n_trials, timeout_s, progress)
    finally:
        signal.signal(signal.SIGINT, old)
    _catch_up(worker, finish=True)
    return worker.stop


def _catch_up(worker: Worker, *, finish: bool = False) -> None:
    """Log finished trials that have no MLflow run yet; ``finish`` closes the parent run."""
    if worker.tracker is not None:
        worker.tracker.catch_up(worker.study)
        if finish:
            worker.tracker.finish(stopped=worker.stop)


def _run_pool(
    run_dir: Path,
    n_trials: int | None,
    timeout_s: float | None,
    workers: int,
    progress: ProgressFn | None,
    on_stop: Callable[[], None] | None,
    trust: Trust | None,
    mlflow: str | None = None,
) -> bool:
    args = [sys.executable, "-m", "edgeopt.search.run.loop", str(run_dir)]
    args += (trust or Trust()).argv()
    if n_trials is not None:
        args += ["--trials", str(n_trials)]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    if mlflow is not None:
        args += ["--mlflow", mlflow]
    # opened first: it creates the MLflow parent run the workers then log under
    watcher = Worker.open(run_dir, mlflow=mlflow, main=True)
    _catch_up(watcher)
    procs = [
        subprocess.Popen([*args, "--index", str(i)], start_new_session=True) for i in range(workers)
    ]
    seen = {t.number for t in watcher.study.get_trials(deepcopy=False, states=FINISHED)}
    start = time.monotonic()
    stopped = False
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            seen = _report_new(watcher, seen, n_trials, start, progress)
    except KeyboardInterrupt:
        stopped = True
        if on_stop:
            on_stop()
        _interrupt(procs)  # each finishes its running trial
        try:
            for p in procs:
                p.wait()
        except KeyboardInterrupt:
            _interrupt(procs)  # a second Ctrl-C: each aborts its trial now
            for p in procs:
                p.wait()
            raise
    _report_new(watcher, seen, n_trials, start, progress)
    watcher.stop = stopped
    _catch_up(watcher, finish=True)
    bad = [p.returncode for p in procs if p.returncode not in (0, 130, -signal.SIGINT)]
    if bad:
        raise EdgeoptError(f"{len(bad)} worker process(es) failed (exit codes {bad})")
    return stopped


def _interrupt(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGINT)


def _report_new(
    watcher: Worker, seen: set[int], total: int | None, start: float, progress: ProgressFn | None
) -> set[int]:
    finished = {t.number for t in watcher.study.get_trials(deepcopy=False, states=FINISHED)}
    if progress:
        for n in sorted(finished - seen):
            progress(watcher.event(n, total, time.monotonic() - start))
    return seen | finished


def main() -> None:
    """Entry point of one worker process."""
    parser = argparse.ArgumentParser(prog="python -m edgeopt.search.run.loop")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--trust-pickle", action="store_true")
    parser.add_argument("--trust-arch", action="store_true")
    parser.add_argument("--arch", default=None)
    parser.add_argument("--mlflow", help="MLflow tracking URI to log this worker's trials to")
    args = parser.parse_args()
    trust = Trust(pickle=args.trust_pickle, arch=args.trust_arch, arch_ref=args.arch)
    worker = Worker.open(args.run_dir, args.index, trust, args.mlflow)
    signal.signal(signal.SIGINT, _stop_handler(worker, None))
    try:
        worker.run(args.trials, args.timeout)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
