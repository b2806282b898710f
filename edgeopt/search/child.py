"""Run one candidate in a child process, bounded in time and memory.

The parent (the search) sends a JSON request; the child loads the model and data, builds the
candidate through the pipeline, scores it on the validation split and writes ``result.json``
in the trial directory. A stage that hangs or exhausts memory ends that child, never the
study: the parent turns it into a failed result naming the stage it was in.

    python -m edgeopt.search.child REQUEST.json
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SYNTHETIC_VAL_SEED = 1_000_001
SYNTHETIC_TEST_SEED = 2_000_003
SYNTHETIC_N = 256


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


def run_child(request: dict[str, Any], *, timeout_s: float, memory_gb: float) -> dict[str, Any]:
    """Run the request in ``python -m edgeopt.search.child`` and return its result dict.

    ``status`` is ``ok``, ``fail`` (with ``stage`` and ``reason``) or ``pruned`` (``reason``).
    """
    trial_dir = Path(request["trial_dir"])
    trial_dir.mkdir(parents=True, exist_ok=True)
    req_path = trial_dir / "request.json"
    req_path.write_text(json.dumps(request, indent=1))
    result_path = trial_dir / "result.json"
    result_path.unlink(missing_ok=True)
    stage_path = trial_dir / "stage.txt"
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
            stage = stage_path.read_text().strip() if stage_path.exists() else "start"
            return {
                "status": "fail",
                "stage": stage,
                "reason": f"timed out after {timeout_s:.0f}s (--trial-timeout)",
            }
    if result_path.exists():
        return json.loads(result_path.read_text())
    stage = stage_path.read_text().strip() if stage_path.exists() else "start"
    tail = (trial_dir / "trial.log").read_text(errors="replace").strip().splitlines()[-3:]
    text = " ".join(tail)
    if any(sign in text.lower() for sign in _OOM_SIGNS) or code == -signal.SIGKILL:
        reason = f"exceeded the memory cap of {memory_gb:g} GiB (--trial-memory-gb)"
    else:
        reason = f"worker exited with code {code}: {tail[-1] if tail else 'no output'}"
    return {"status": "fail", "stage": stage, "reason": reason}


def _main(req_path: Path) -> None:
    import numpy as np
    import torch

    from edgeopt.candidate import Candidate
    from edgeopt.data import load_npz, synthetic_inputs
    from edgeopt.errors import CandidateError
    from edgeopt.loading import ModelSpec
    from edgeopt.measure.accuracy import onnx_accuracy, onnx_logits
    from edgeopt.pipeline import PipelineInputs, build
    from edgeopt.profiles import load_profile
    from edgeopt.targets import merge_profiles

    req = json.loads(req_path.read_text())
    trial_dir = Path(req["trial_dir"])
    stage_file = trial_dir / "stage.txt"
    torch.set_num_threads(int(req.get("threads", 1)))
    t0 = time.perf_counter()

    def write(result: dict[str, Any]) -> None:
        result["build_seconds"] = time.perf_counter() - t0
        tmp = trial_dir / "result.json.tmp"
        tmp.write_text(json.dumps(result, default=str))
        tmp.replace(trial_dir / "result.json")

    model = ModelSpec.from_dict(req["model"]).load()
    data = load_npz(req["data"]) if req.get("data") else None
    profile = merge_profiles([load_profile(t) for t in req["targets"]])
    inputs = PipelineInputs(
        model=model,
        data=data,
        profile=profile,
        seed=int(req["seed"]),
        cache_dir=Path(req["cache_dir"]),
        salt=req["salt"],
    )
    hopeless_below = req.get("hopeless_below")

    def on_epoch(epoch: int, val_accuracy: float) -> None:
        if hopeless_below is not None and epoch == 1 and val_accuracy < hopeless_below:
            raise Hopeless(
                f"validation accuracy {val_accuracy:.4f} after the first fine-tune epoch is far "
                f"below the budget (needs >= {hopeless_below:.4f} to continue)"
            )

    candidate = Candidate.from_dict(req["candidate"])
    try:
        result = build(
            candidate,
            inputs,
            trial_dir,
            on_epoch=on_epoch,
            on_stage=lambda s: stage_file.write_text(s),
        )
    except Hopeless as exc:
        write({"status": "pruned", "reason": str(exc)})
        return
    except CandidateError as exc:
        write({"status": "fail", "stage": exc.stage, "reason": exc.reason})
        return
    stage_file.write_text("evaluate")
    t_eval = time.perf_counter()
    scores: dict[str, float] = {}
    for split in req.get("splits", ["val"]):
        if data is not None:
            x, y = data.split(split)
            scores[split] = onnx_accuracy(result.onnx_path, x, y, threads=req.get("threads", 1))
        else:
            seed = SYNTHETIC_VAL_SEED if split == "val" else SYNTHETIC_TEST_SEED
            x = synthetic_inputs(model.input_shape, SYNTHETIC_N, seed)
            ref = onnx_logits(req["reference_onnx"], x).argmax(axis=1)
            got = onnx_logits(result.onnx_path, x).argmax(axis=1)
            scores[split] = float(np.mean(ref == got))
    result.info.setdefault("seconds", {})["evaluate"] = time.perf_counter() - t_eval
    write(
        {
            "status": "ok",
            "onnx": str(result.onnx_path),
            "fp32_onnx": str(result.fp32_path),
            "accuracy": scores,
            "info": result.info,
            "cache_hit": result.cache_hit,
        }
    )


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
