"""The search loop of one worker process, and the local process pool.

Every worker (a process here, or on another machine sharing the storage) runs the same
ask/tell loop: fail stale trials, count, ask, build and measure under a heartbeat, tell.
``python -m edgeopt.search.run.loop RUN_DIR [--trials N] [--timeout S] [--index I]`` is one
worker; ``run_search`` runs one in-process or a pool of them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from edgeopt.errors import EdgeoptError, environment_error
from edgeopt.lifeline import die_with_parent
from edgeopt.profiles import Targets
from edgeopt.rundir import RunDir
from edgeopt.search.integrations.tracking import Tracker
from edgeopt.search.run.progress import TrialEvent, trial_event
from edgeopt.search.strategy.space import grid_space
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
    missing_baselines,
    open_study,
    pop_retry,
)
from edgeopt.search.trial.objective import TrialRunner
from edgeopt.stopping import STOP_SIGNALS, Interrupted, Stopper, current
from edgeopt.training.device import assign_devices, cuda_device_count

log = logging.getLogger(__name__)

ProgressFn = Callable[[TrialEvent], None]


class Worker:
    """One process's loop over a study. A stop signal (``stopper``) ends it after a trial,
    or aborts the trial (``edgeopt.stopping``)."""

    def __init__(
        self,
        ctx: SearchContext,
        study: optuna.Study,
        storage: RDBStorage,
        device: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.study = study
        self.storage = storage
        self.runner = TrialRunner(ctx, study, device)
        self.stopper = Stopper(grace_s=0.0)  # a real one is handed in by whoever runs it
        self.tracker: Tracker | None = None  # MLflow logging (--mlflow)
        # queued one at a time while the search needs trials: a baseline queued up front
        # stayed queued for ever when a resume found it lost and --trials already reached
        self.baselines = missing_baselines(study, ctx)

    @property
    def stop(self) -> bool:
        """True once a stop signal asked this worker to end."""
        return self.stopper.requested

    @classmethod
    def open(
        cls,
        run_dir: Path,
        worker_index: int = 0,
        trust: Trust | None = None,
        mlflow: str | None = None,
        *,
        main: bool = False,
        targets: Targets | None = None,
        device: str | None = None,
    ) -> Worker:
        """Join the study of the run that ``setup.prepare`` wrote; with ``mlflow`` (a tracking
        URI), log its trials there (``main``: the process that starts the search);
        ``targets``: the run's profiles as this process's entry point resolved them;
        ``device``: where its trials train (``"cpu"``, ``"cuda:K"``; None: the run's
        ``--train-device`` for one worker on this machine)."""
        ctx = SearchContext.open(run_dir, trust, targets)
        if trust is not None and ctx.config.data is not None:
            ctx.config.data.check_named()  # its trials could not open their data
        study, storage = open_study(ctx, worker_index)
        worker = cls(ctx, study, storage, device)
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
                    with self.stopper.abortable():
                        self.runner.run(trial)
                except KeyboardInterrupt as exc:  # aborted: its children are killed already
                    reason = getattr(exc, "reason", "aborted by Ctrl-C")
                    self.runner.abandon(trial, reason, requeue=True)
                    if not isinstance(exc, Interrupted):
                        raise  # not one of ours: nothing else stops this loop
                except Exception as exc:  # a full disk: record it if the storage still can
                    with contextlib.suppress(Exception):  # and re-queue it: not its fault
                        self.runner.abandon(
                            trial,
                            f"{type(exc).__name__}: {exc}"[:300],
                            requeue=environment_error(exc) is not None,
                        )
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
                    trial = pop_retry(self.study, self.storage)
                    if trial is None:
                        enqueue_next(self.study, self.ctx, self.runner.facts(), self.baselines)
                        trial = self.study.ask()
                    first_heartbeat(self.storage, self.study, trial.number)
                    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
                    return trial
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running or self.stop or time.monotonic() > deadline:
                return None
            time.sleep(min(2.0, HEARTBEAT_S))


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
    stopper: Stopper | None = None,
    targets: Targets | None = None,
    devices: Sequence[str] | None = None,
) -> bool:
    """Run the search on a prepared run directory with ``workers`` processes.

    ``trust`` carries the command line's opt-ins to running code from the model file;
    ``mlflow``, a tracking URI to log the study and its trials to (``integrations.tracking``).

    With one worker the trials run in this process and ``progress`` sees each one; with
    more, worker processes join the same storage and this process reports their progress.
    A first stop signal (Ctrl-C, SIGTERM, SIGHUP) calls ``on_stop`` and stops after the
    running trial(s), which SIGTERM and SIGHUP give a grace period; a second one, or the
    grace period running out, aborts them (their trials are FAIL with the reason), and the
    search returns. Everything finished is kept. ``stopper``: the installed one
    (``edgeopt.stopping``; by default ``current()``, else one installed while the search runs).
    ``targets``: the run's profiles as the entry point resolved them (worker processes
    resolve theirs and are refused if a profile file changed since the run started).
    ``devices``: each worker's training device (``edgeopt.training.device.assign_devices``);
    None: from the run's ``--train-device`` and the GPUs this machine has.
    Returns True when a stop signal stopped the search.
    """
    stopper = stopper or current()
    own = stopper is None
    stopper = stopper or Stopper()
    if devices is None:
        spec = RunDir(run_dir).read_config().train_device
        count = 0 if spec == "cpu" else cuda_device_count()
        plan = assign_devices(spec, workers, count)
        if plan.warning:
            log.warning("%s", plan.warning)
        devices = plan.devices
    with stopper.installed() if own else contextlib.nullcontext(stopper):
        if workers > 1:
            return _run_pool(
                run_dir,
                n_trials,
                timeout_s,
                workers,
                progress,
                on_stop,
                trust,
                mlflow,
                stopper,
                targets,
                devices,
            )
        worker = Worker.open(
            run_dir, trust=trust, mlflow=mlflow, main=True, targets=targets, device=devices[0]
        )
        worker.stopper = stopper
        _catch_up(worker)
        with stopper.finishing(lambda signum, first: on_stop() if first and on_stop else None):
            worker.run(n_trials, timeout_s, progress)
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
    mlflow: str | None,
    stopper: Stopper,
    targets: Targets | None,
    devices: Sequence[str],
) -> bool:
    args = [sys.executable, "-m", "edgeopt.search.run.loop", str(run_dir)]
    args += (trust or Trust()).argv()
    if n_trials is not None:
        args += ["--trials", str(n_trials)]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    if mlflow is not None:
        args += ["--mlflow", mlflow]
    args += ["--parent", str(os.getpid())]
    # opened first: it creates the MLflow parent run the workers then log under
    watcher = Worker.open(run_dir, mlflow=mlflow, main=True, targets=targets)
    watcher.stopper = stopper
    _catch_up(watcher)
    procs: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, first: bool) -> None:
        """Each worker stops (or aborts) its trial as this process was told to."""
        if first and on_stop:
            on_stop()
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    seen = {t.number for t in watcher.study.get_trials(deepcopy=False, states=FINISHED)}
    start = time.monotonic()
    # the workers keep their own grace timers; their sessions are their own, so a Ctrl-C
    # in the terminal reaches them only through ``forward``
    with stopper.finishing(forward, grace=False):
        for i in range(workers):
            if stopper.requested:
                break  # stopped before all had started: the rest are not needed
            argv = [*args, "--index", str(i), "--train-device", devices[i]]
            procs.append(subprocess.Popen(argv, start_new_session=True))
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            seen = _report_new(watcher, seen, n_trials, start, progress)
    _report_new(watcher, seen, n_trials, start, progress)
    _catch_up(watcher, finish=True)
    stopped = {0, *(128 + s for s in STOP_SIGNALS), *(-s for s in STOP_SIGNALS)}
    bad = [p.returncode for p in procs if p.returncode not in stopped]
    if bad:
        raise EdgeoptError(f"{len(bad)} worker process(es) failed (exit codes {bad})")
    return watcher.stop


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
    parser.add_argument("--data", default=None, help="the run's module:callable data source")
    parser.add_argument("--mlflow", help="MLflow tracking URI to log this worker's trials to")
    parser.add_argument("--parent", type=int, help="die with this process (its parent)")
    parser.add_argument("--train-device", help="cpu or cuda:K (default: the run's setting)")
    args = parser.parse_args()
    if args.parent is not None:
        die_with_parent(args.parent)
    trust = Trust(args.trust_pickle, args.trust_arch, args.arch, data_ref=args.data)
    stopper = Stopper()
    try:
        with stopper.installed():
            worker = Worker.open(
                args.run_dir, args.index, trust, args.mlflow, device=args.train_device
            )
            worker.stopper = stopper
            with stopper.finishing():
                worker.run(args.trials, args.timeout)
    except Interrupted as exc:  # before its first trial
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
