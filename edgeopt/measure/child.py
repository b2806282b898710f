"""Subprocess entry point that times ONNX models with ONNX Runtime.

Run as ``python -m edgeopt.measure.child`` with a JSON request on stdin; prints a JSON reply.
Imports nothing beyond the standard library, numpy, psutil, onnxruntime and the two
stdlib-only edgeopt modules it shares with the rest of edgeopt (``session``: how a session is
built; ``timing``: the interleaved timer), so the measured process holds nothing but the
runtime and the models: no torch, no optuna.
"""

from __future__ import annotations

import json
import resource
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from edgeopt.measure.session import ort_session
from edgeopt.measure.timing import time_interleaved


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would carry over the (larger) parent's
    # peak across fork+exec and report the parent's memory as ours
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(sess: Any, feed: dict[str, np.ndarray]) -> Callable[[], object]:
    return lambda: sess.run(None, feed)


def memory(req: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of this process while one model is loaded and run, and the part it added."""
    import onnxruntime  # noqa: F401  (imported before the baseline so it is not counted)

    x = np.load(req["input"])
    base = _rss_mb()
    sess = ort_session(req["paths"][0], threads=req["threads"])
    run = _run(sess, {sess.get_inputs()[0].name: x})
    for _ in range(5):
        run()
    peak = _peak_rss_mb()
    return {"peak_rss_mb": peak, "model_memory_mb": max(peak - base, _rss_mb() - base, 0.0)}


def latency(req: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timing (``edgeopt.measure.timing``): each round runs every model in turn."""
    x = np.load(req["input"])
    sessions = [ort_session(p, threads=req["threads"]) for p in req["paths"]]
    times = time_interleaved(
        [_run(s, {s.get_inputs()[0].name: x}) for s in sessions],
        warmup=req["warmup"],
        target_round_ms=req["target_round_ms"],
        min_runs=req["min_runs"],
        max_runs=req["max_runs"],
        min_rounds=req["min_rounds"],
        max_rounds=req["max_rounds"],
        time_budget_s=req["time_budget_s"],
    )
    return {
        "round_medians_ms": times.round_medians_ms,
        "samples_ms": times.samples_ms,
        "runs_per_round": times.runs_per_round,
    }


def main() -> None:
    req = json.load(sys.stdin)
    reply = {"memory": memory, "latency": latency}[req["kind"]](req)
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
