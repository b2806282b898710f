"""Build one candidate in a child process, bounded in time and memory.

The search writes a ``TrialRequest``; the child loads the model and data, builds the
candidate through the pipeline, scores it on the validation split and writes a
``TrialResult``. A stage that hangs or exhausts memory ends that child, never the study: the
parent turns it into a failed result naming the stage it was in.

    python -m edgeopt.search.trial.builder RUN/trials --serve FD --parent PID  # one request a line
    python -m edgeopt.search.trial.builder TRIAL_DIR/request.json  # one request (debugging)
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeopt.candidate import Candidate
from edgeopt.data import DataSource, DataSpec, in_model_order, open_source
from edgeopt.data.cache import DATA_CACHE
from edgeopt.errors import CandidateError, EdgeoptError
from edgeopt.lifeline import die_with_parent, ignore_stop_signals
from edgeopt.loading import ModelSpec, load_spec
from edgeopt.measure.accuracy import onnx_score, source_task_metric
from edgeopt.pipeline import PipelineInputs, build
from edgeopt.profiles import Targets
from edgeopt.search.strategy.halving import below_bar, fidelity_stage
from edgeopt.search.trial.memory import RSS_POLL_S, death_reason, kernel_oom_kills, tree_rss_gib
from edgeopt.search.trial.protocol import (
    FailureKind,
    Status,
    TrialRequest,
    TrialResult,
    scoring_inputs,
)
from edgeopt.search.trial.runtimes import INFO_KEY as RUNTIME_FILES
from edgeopt.search.trial.runtimes import (
    TorchCandidate,
    litert_mode,
    needs_module,
    trial_conversions,
)
from edgeopt.training.device import child_env, device_label, resolve_in_child


class Hopeless(Exception):
    """Raised from the epoch callback when a trial cannot reach its accuracy budget."""


RESTART_EVERY = 50
"""A persistent child is replaced after this many trials (memory that torch keeps grows)."""


class TrialChild:
    """One worker's trial child: a persistent ``python -m edgeopt.search.trial.builder RUN/trials
    --serve`` that imports torch once and builds one candidate per request, instead of a
    fresh interpreter per trial (2.5 s of import each time).

    Each request still runs under the time limit and the memory cap; a timeout, a crash or
    a request cut short by an interrupt kills the child, and the next request starts a fresh
    one. Requests go down its stdin; it answers on a pipe of its own, one line per request,
    after writing ``result.json``. Its output goes to each trial's ``trial.log``.

    ``device``: the worker's training device (``"cpu"``, ``"cuda:K"``); a GPU is the only one
    the child sees (``CUDA_VISIBLE_DEVICES``). The memory cap is ``RLIMIT_AS``, set at start
    for the child's life, except under ``rss_watchdog`` (default: on a GPU, whose driver
    reserves far more address space than any cap): then this process polls the resident
    memory of the child and its children every ``RSS_POLL_S`` and kills it over the cap.
    ``data_ref``: the command line's ``--data module:callable``, passed on the child's
    command line (``request.json`` is a file, and never names code to run).
    """

    def __init__(
        self,
        trials_dir: Path,
        memory_gb: float,
        device: str = "cpu",
        *,
        rss_watchdog: bool | None = None,
        data_ref: str | None = None,
    ) -> None:
        self.trials_dir = Path(trials_dir)
        self.data_ref = data_ref
        self.memory_gb = memory_gb
        self.device, self.env = child_env(device)
        self.rss_watchdog = device.startswith("cuda") if rss_watchdog is None else rss_watchdog
        self.rss_over_gib: float | None = None  # what the watchdog saw when it killed
        self.proc: subprocess.Popen[bytes] | None = None
        self.replies: int | None = None  # read end of the answer pipe
        self.served = 0

    def run(self, request: TrialRequest, *, timeout_s: float) -> TrialResult:
        """Build ``request`` in the child; never raises for a problem of the candidate."""
        trial_dir = Path(request.trial_dir)
        trial_dir.mkdir(parents=True, exist_ok=True)
        req_path = trial_dir / "request.json"
        request = replace(request, train_device=self.device)
        request.write(req_path)
        result_path = trial_dir / "result.json"
        result_path.unlink(missing_ok=True)
        (trial_dir / "trial.log").write_text("")
        oom_before = kernel_oom_kills()
        try:
            answered = self._ask(req_path, timeout_s)
        except BaseException:  # interrupted while waiting: the child must not outlive us
            self.close(kill=True)
            raise
        if self.rss_over_gib is not None:
            over, self.rss_over_gib = self.rss_over_gib, None
            self.close(kill=True)
            return TrialResult.failed(
                _stage(trial_dir),
                f"exceeded the memory cap of {self.memory_gb:g} GiB (--trial-memory-gb): "
                f"{over:.2f} GiB resident",
                FailureKind.MEMORY,
            )
        if answered is None:
            self.close(kill=True)
            return TrialResult.failed(
                _stage(trial_dir),
                f"timed out after {timeout_s:.0f}s (--trial-timeout)",
                FailureKind.HANG,
            )
        if answered and result_path.exists():
            self.served += 1
            if self.served >= RESTART_EVERY:
                self.close()
            return TrialResult.read(result_path)
        code = self.close(kill=False)
        oom_after = kernel_oom_kills()
        by_kernel = None if oom_before is None or oom_after is None else oom_after > oom_before
        reason, failure = death_reason(trial_dir, code, self.memory_gb, by_kernel)
        return TrialResult.failed(_stage(trial_dir), reason, failure)

    def close(self, *, kill: bool = False) -> int | None:
        """Stop the child (politely: end of input, unless ``kill``); returns its exit code."""
        proc, self.proc = self.proc, None
        if self.replies is not None:
            os.close(self.replies)
            self.replies = None
        self.served = 0
        if proc is None:
            return None
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        else:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait()

    def _ask(self, req_path: Path, timeout_s: float) -> bool | None:
        """Send one request; True when answered, False when the child died, None on timeout."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None and self.replies is not None
        try:
            self.proc.stdin.write(f"{req_path}\n".encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            return False
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            wait = min(left, RSS_POLL_S) if self.rss_watchdog else left
            ready, _, _ = select.select([self.replies], [], [], wait)
            if ready:
                return os.read(self.replies, 64).endswith(b"\n")
            if self.rss_watchdog:
                rss = tree_rss_gib(self.proc.pid)
                if rss > self.memory_gb:
                    self.rss_over_gib = rss
                    return None
        return None

    def _start(self) -> None:
        self.close(kill=True)
        limit = int(self.memory_gb * 2**30)
        watched = self.rss_watchdog

        def _limits() -> None:
            if not watched:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        read_end, write_end = os.pipe()
        self.trials_dir.mkdir(parents=True, exist_ok=True)
        # output outside a request (start-up errors) goes beside trials/, not into it
        with open(self.trials_dir.parent / "trial_child.log", "ab") as log:
            # own session: a Ctrl-C in the terminal reaches the search, which finishes this
            # trial; it dies with this process (``lifeline``)
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edgeopt.search.trial.builder",
                    str(self.trials_dir),
                    "--serve",
                    str(write_end),
                    "--parent",
                    str(os.getpid()),
                    *(["--data-callable", self.data_ref] if self.data_ref else []),
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_limits,
                env={**os.environ, **self.env} if self.env else None,
                start_new_session=True,
                pass_fds=(write_end,),
            )
        os.close(write_end)
        self.replies = read_end


def run_child(
    request: TrialRequest, *, timeout_s: float, memory_gb: float, device: str = "cpu"
) -> TrialResult:
    """Run ``request`` in a child of its own (started and stopped for this one request)."""
    child = TrialChild(Path(request.trial_dir).parent, memory_gb, device)
    try:
        return child.run(request, timeout_s=timeout_s)
    finally:
        child.close()


def _stage(trial_dir: Path) -> str:
    path = trial_dir / "stage.txt"
    return path.read_text().strip() if path.exists() else "start"


def _main(req_path: Path) -> None:
    import torch

    req = TrialRequest.read(req_path)
    trial_dir = Path(req.trial_dir)
    stage_file = trial_dir / "stage.txt"
    torch.set_num_threads(req.threads)
    t0 = time.perf_counter()

    def write(result: TrialResult, **kw: Any) -> None:
        replace(result, build_seconds=time.perf_counter() - t0, **kw).write(
            trial_dir / "result.json"
        )

    try:
        device = resolve_in_child(req.train_device)
        model = load_spec(ModelSpec.from_dict(req.model))
        data = in_model_order(_open_data(req), model.inputs)
    except EdgeoptError as exc:  # e.g. the model file changed since the run was set up
        write(TrialResult.failed("load", exc.message))
        return
    if model.module is not None:  # the teacher and every candidate start on the device
        model.module.to(device)
    inputs = PipelineInputs(
        model=model,
        data=data,
        profile=Targets.from_texts(req.profiles).merged,
        seed=req.seed,
        cache_dir=Path(req.cache_dir),
        salt=req.salt,
        round_samples=req.round_samples,
    )

    stage = {"name": ""}
    history: list[float] = []  # the budgeted stage's validation accuracy per epoch
    found = fidelity_stage()
    budgeted, rungs_key = (found[0], found[1].history_key) if found else (None, "")

    def on_stage(name: str) -> None:
        stage["name"] = name
        stage_file.write_text(name)

    def on_epoch(epoch: int, val_accuracy: float) -> None:
        bar = req.hopeless_below
        if bar is not None and epoch == 1 and val_accuracy < bar:
            raise Hopeless(
                f"validation accuracy {val_accuracy:.4f} after the first fine-tune epoch is far "
                f"below the budget (needs >= {bar:.4f} to continue)"
            )
        if stage["name"] != budgeted:
            return
        history.append(float(val_accuracy))
        why = below_bar(history, req.rung_bars)
        if why is not None:
            raise Hopeless(why)

    candidate = Candidate.from_dict(req.candidate)
    # a LiteRT target converts the candidate's torch module (none for an ONNX model)
    keep = model.module is not None and needs_module(Targets.from_texts(req.profiles).profiles)
    try:
        result = build(
            candidate, inputs, trial_dir, on_epoch=on_epoch, on_stage=on_stage, keep_module=keep
        )
    except Hopeless as exc:
        info = {rungs_key: history} if rungs_key else {}
        write(TrialResult(Status.STOPPED, reason=str(exc), info=info))
        return
    except CandidateError as exc:
        write(TrialResult.failed(exc.stage, exc.reason))
        return
    try:  # the files the targets' runtimes load, beside the ONNX candidate
        torch_candidate = None
        if result.module is not None:
            torch_candidate = TorchCandidate(
                result.module,
                tuple(model.input_shape),
                result.calibration,
                litert_mode(candidate),
            )
        files = trial_conversions(
            req, result.onnx_path, data, model.input_shape, on_stage, torch_candidate
        )
    except CandidateError as exc:
        write(TrialResult.failed(exc.stage, exc.reason))
        return
    stage_file.write_text("evaluate")
    t_eval = time.perf_counter()
    if data is not None:
        accuracy = source_task_metric(
            result.onnx_path, data, "val", req.metric, threads=req.threads
        )
    else:
        x, y = scoring_inputs(None, "val", model.inputs)
        accuracy = onnx_score(
            result.onnx_path,
            x,
            y,
            reference=req.reference_onnx,
            threads=req.threads,
            metric=req.metric,
        )
    info = dict(result.info)
    info.setdefault("seconds", {})["evaluate"] = time.perf_counter() - t_eval
    info["train_device"] = device_label(device)
    if files:
        info[RUNTIME_FILES] = files
    if history:
        info[rungs_key] = history
    write(
        TrialResult(
            Status.OK,
            onnx=str(result.onnx_path),
            val_accuracy=accuracy,
            info=info,
            cache_hit=result.cache_hit,
        )
    )


_OPENED: dict[str, DataSource] = {}
"""The data this child opened, by its spec: opened once per child, not per request."""
_DATA_REF: list[str] = []
"""The ``--data-callable`` this child's command line named (a request never names one)."""


def _open_data(req: TrialRequest) -> DataSource | None:
    if not req.data:
        return None
    key = json.dumps([req.data, req.cache_dir, req.data_cache_bytes, req.data_workers])
    if key not in _OPENED:
        _OPENED.clear()  # one run's data at a time
        named = DataSpec.from_dict(req.data).with_ref(_DATA_REF[0] if _DATA_REF else None)
        _OPENED[key] = open_source(
            named,
            verify=False,  # set-up checked it
            cache_dir=Path(req.cache_dir) / DATA_CACHE,
            cache_bytes=req.data_cache_bytes,
            loader_workers=req.data_workers,
        )
    return _OPENED[key]


def _serve(reply_fd: int, parent_pid: int) -> None:
    """The persistent child's loop: one request path per input line, its output in that
    trial's ``trial.log``, one answer line per request; ends at the end of input. An
    unexpected error ends the process (with the traceback in the log): the parent then
    reports it and starts a fresh child. It dies with ``parent_pid``, and leaves stopping
    to it (``edgeopt.lifeline``)."""
    die_with_parent(parent_pid)
    ignore_stop_signals()
    replies = os.fdopen(reply_fd, "w", buffering=1)
    for line in sys.stdin:
        req_path = Path(line.strip())
        with open(req_path.parent / "trial.log", "ab", buffering=0) as log:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                _main(req_path)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
            sys.stdout.flush()
            sys.stderr.flush()
        replies.write("done\n")


if __name__ == "__main__":
    if len(sys.argv) in (6, 8) and sys.argv[2] == "--serve" and sys.argv[4] == "--parent":
        if len(sys.argv) == 8 and sys.argv[6] == "--data-callable":
            _DATA_REF.append(sys.argv[7])
        _serve(int(sys.argv[3]), int(sys.argv[5]))
    else:
        _main(Path(sys.argv[1]))
