"""Build one candidate in a child process, bounded in time and memory.

The search writes a ``TrialRequest``; the child loads the model and data, builds the
candidate through the pipeline, scores it on the validation split and writes a
``TrialResult``. A stage that hangs or exhausts memory ends that child, never the study: the
parent turns it into a failed result naming the stage it was in.

    python -m edgeopt.search.child TRIAL_DIR/request.json
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeopt.search.protocol import Status, TrialRequest, TrialResult, scoring_inputs

# how running out of address space under RLIMIT_AS shows up in Python, torch and the loader
_OOM_SIGNS = (
    "memoryerror",
    "out of memory",
    "cannot allocate memory",
    "failed to map segment",
    "bad_alloc",
    "defaultcpuallocator: can't allocate",
)


class Hopeless(Exception):
    """Raised from the epoch callback when a trial cannot reach its accuracy budget."""


def run_child(request: TrialRequest, *, timeout_s: float, memory_gb: float) -> TrialResult:
    """Run ``request`` in ``python -m edgeopt.search.child`` and return its result."""
    trial_dir = Path(request.trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    req_path = trial_dir / "request.json"
    request.write(req_path)
    result_path = trial_dir / "result.json"
    result_path.unlink(missing_ok=True)
    limit = int(memory_gb * 2**30)

    def _limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with open(trial_dir / "trial.log", "w") as log:
        # own session: a Ctrl-C in the terminal reaches the search, which finishes this trial
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeopt.search.child", str(req_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_limits,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return TrialResult.failed(
                _stage(trial_dir), f"timed out after {timeout_s:.0f}s (--trial-timeout)"
            )
        except BaseException:  # interrupted while waiting: the child must not outlive us
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if result_path.exists():
        return TrialResult.read(result_path)
    tail = (trial_dir / "trial.log").read_text(errors="replace").strip().splitlines()[-3:]
    text = " ".join(tail)
    if any(sign in text.lower() for sign in _OOM_SIGNS):
        reason = f"exceeded the memory cap of {memory_gb:g} GiB (--trial-memory-gb)"
    elif code == -signal.SIGKILL:
        reason = (
            "the trial process was killed (SIGKILL): out of memory under the memory cap of "
            f"{memory_gb:g} GiB (--trial-memory-gb), or killed from outside"
        )
    else:
        reason = f"worker exited with code {code}: {tail[-1] if tail else 'no output'}"
    return TrialResult.failed(_stage(trial_dir), reason)


def _stage(trial_dir: Path) -> str:
    path = trial_dir / "stage.txt"
    return path.read_text().strip() if path.exists() else "start"


def _main(req_path: Path) -> None:
    import torch

    from edgeopt.candidate import Candidate
    from edgeopt.data import load_npz
    from edgeopt.errors import CandidateError, EdgeoptError
    from edgeopt.loading import ModelSpec
    from edgeopt.measure.accuracy import onnx_score
    from edgeopt.pipeline import PipelineInputs, build
    from edgeopt.profiles import load_profile, merge_profiles
    from edgeopt.search.halving import RUNGS_ATTR, below_bar

    req = TrialRequest.read(req_path)
    trial_dir = Path(req.trial_dir)
    stage_file = trial_dir / "stage.txt"
    torch.set_num_threads(req.threads)
    t0 = time.perf_counter()

    def write(result: TrialResult, **kw: Any) -> None:
        from dataclasses import replace

        replace(result, build_seconds=time.perf_counter() - t0, **kw).write(
            trial_dir / "result.json"
        )

    try:
        model = ModelSpec.from_dict(req.model).load()
        data = load_npz(req.data) if req.data else None
    except EdgeoptError as exc:  # e.g. the model file changed since the run was set up
        write(TrialResult.failed("load", exc.message))
        return
    inputs = PipelineInputs(
        model=model,
        data=data,
        profile=merge_profiles([load_profile(t) for t in req.targets]),
        seed=req.seed,
        cache_dir=Path(req.cache_dir),
        salt=req.salt,
    )

    stage = {"name": ""}
    history: list[float] = []  # the fine-tune's validation accuracy per epoch

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
        if stage["name"] != "finetune":
            return
        history.append(float(val_accuracy))
        why = below_bar(history, req.rung_bars)
        if why is not None:
            raise Hopeless(why)

    try:
        result = build(
            Candidate.from_dict(req.candidate),
            inputs,
            trial_dir,
            on_epoch=on_epoch,
            on_stage=on_stage,
        )
    except Hopeless as exc:
        write(TrialResult(Status.PRUNED, reason=str(exc), info={RUNGS_ATTR: history}))
        return
    except CandidateError as exc:
        write(TrialResult.failed(exc.stage, exc.reason))
        return
    stage_file.write_text("evaluate")
    t_eval = time.perf_counter()
    x, y = scoring_inputs(data, "val", model.input_shape)
    accuracy = onnx_score(
        result.onnx_path, x, y, reference=req.reference_onnx, threads=req.threads, metric=req.metric
    )
    info = dict(result.info)
    info.setdefault("seconds", {})["evaluate"] = time.perf_counter() - t_eval
    if history:
        info[RUNGS_ATTR] = history
    write(
        TrialResult(
            Status.OK,
            onnx=str(result.onnx_path),
            val_accuracy=accuracy,
            info=info,
            cache_hit=result.cache_hit,
        )
    )


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
