"""Subprocess entry point that times ONNX models with ONNX Runtime.

Run as ``python -m edgeopt.measure.child`` with a JSON request on stdin; prints a JSON reply.
Kept free of edgeopt imports beyond the standard library, numpy and onnxruntime so the
measured process holds nothing but the runtime and the models.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np


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


def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _timed(sess: Any, feed: dict[str, np.ndarray], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sess.run(None, feed)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def memory(req: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of this process while one model is loaded and run, and the part it added."""
    import onnxruntime  # noqa: F401  (imported before the baseline so it is not counted)

    x = np.load(req["input"])
    base = _rss_mb()
    sess = _session(req["paths"][0], req["threads"])
    feed = {sess.get_inputs()[0].name: x}
    _timed(sess, feed, 5)
    peak = _peak_rss_mb()
    return {"peak_rss_mb": peak, "model_memory_mb": max(peak - base, _rss_mb() - base, 0.0)}


def latency(req: dict[str, Any]) -> dict[str, Any]:
    """Interleaved timing: each round runs every model in turn (order alternating per round)."""
    x = np.load(req["input"])
    sessions = [_session(p, req["threads"]) for p in req["paths"]]
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    per_run: list[float] = []
    for s, f in zip(sessions, feeds, strict=True):
        _timed(s, f, req["warmup"])
        per_run.append(statistics.median(_timed(s, f, 5)))
    # enough runs per round that a round of the slowest model lasts ~target_round_ms
    runs = [
        max(req["min_runs"], min(req["max_runs"], int(req["target_round_ms"] / max(t, 1e-3))))
        for t in per_run
    ]
    n_models = len(sessions)
    rounds: list[list[float]] = [[] for _ in range(n_models)]
    samples: list[list[float]] = [[] for _ in range(n_models)]
    t_start = time.perf_counter()
    for r in range(req["max_rounds"]):
        order = range(n_models) if r % 2 == 0 else reversed(range(n_models))
        for i in order:
            ts = _timed(sessions[i], feeds[i], runs[i])
            samples[i].extend(ts)
            rounds[i].append(statistics.median(ts))
        done = r + 1 >= req["min_rounds"]
        if done and time.perf_counter() - t_start > req["time_budget_s"]:
            break
        if done and r + 1 >= 2 * req["min_rounds"] and _stable(rounds):
            break
    return {"round_medians_ms": rounds, "samples_ms": samples, "runs_per_round": runs}


def _stable(rounds: list[list[float]]) -> bool:
    """True when each model's median of round medians moved < 1 % over the last 3 rounds."""
    for rs in rounds:
        now, before = statistics.median(rs), statistics.median(rs[:-3])
        if abs(now - before) > 0.01 * before:
            return False
    return True


def main() -> None:
    req = json.load(sys.stdin)
    reply = {"memory": memory, "latency": latency}[req["kind"]](req)
    json.dump(reply, sys.stdout)


if __name__ == "__main__":
    main()
