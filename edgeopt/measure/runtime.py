"""Measure ONNX models on this host with ONNX Runtime, in a separate process.

Latency that can be trusted on a noisy shared VM: warm-up, rounds that run every model in turn
(interleaved, order alternating), the median of per-round medians as p50, and speed ratios taken
per round against the first model and summarized by their median. Absolute numbers drift with
the machine; the interleaved ratios do not (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import synthetic_inputs
from edgeopt.errors import EdgeoptError


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model from one interleaved run (milliseconds, batch 1).

    ``p50_ms`` is the median of per-round medians; ``p90_ms`` the 90th percentile of all timed
    runs; ``cv`` the coefficient of variation of the round medians. ``ratio_to_first`` is the
    median over rounds of (this model's round median / the first model's): > 1 means slower.
    """

    path: str
    p50_ms: float
    p90_ms: float
    min_ms: float
    cv: float
    rounds: int
    runs_per_round: int
    ratio_to_first: float
    ratio_cv: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryStats:
    """Peak RSS of an isolated process that loaded ORT and ran the model, and the model's part."""

    peak_rss_mb: float
    model_memory_mb: float


def host_description() -> str:
    """One line naming this machine: CPU model, logical cores, OS, ORT version."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    system = platform.system()
    return f"{cpu}, {os.cpu_count()} logical cores, {system}, onnxruntime {ort.__version__}"


def _run_worker(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeopt.measure.child"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        raise EdgeoptError(f"measurement process timed out after {timeout_s:.0f}s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeoptError(f"measurement process failed: {last}")
    return json.loads(proc.stdout)


def _input_file(tmp: Path, input_shape: Sequence[int], sample: np.ndarray | None) -> str:
    if sample is None:
        sample = synthetic_inputs(tuple(input_shape), 1, seed=0)
    path = tmp / "input.npy"
    np.save(path, np.ascontiguousarray(sample[:1], dtype=np.float32))
    return str(path)


def measure_latency(
    paths: Sequence[str | Path],
    *,
    threads: int,
    input_shape: Sequence[int],
    sample: np.ndarray | None = None,
    min_rounds: int = 5,
    max_rounds: int = 40,
    time_budget_s: float = 8.0,
    target_round_ms: float = 40.0,
) -> list[LatencyStats]:
    """Time ``paths`` interleaved in one isolated process; stats in the order given.

    ``sample`` is a real input (its first row is used) or None for a seeded random one. Rounds
    stop once every model's median is stable (and at least ``min_rounds`` ran) or when
    ``time_budget_s`` is spent.
    """
    if not paths:
        return []
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as tmp:
        request = {
            "kind": "latency",
            "paths": [str(p) for p in paths],
            "threads": threads,
            "input": _input_file(Path(tmp), input_shape, sample),
            "warmup": 10,
            "min_runs": 5,
            "max_runs": 500,
            "target_round_ms": target_round_ms,
            "min_rounds": min_rounds,
            "max_rounds": max_rounds,
            "time_budget_s": time_budget_s,
        }
        reply = _run_worker(request, timeout_s=120 + 4 * time_budget_s)
    rounds: list[list[float]] = reply["round_medians_ms"]
    first = rounds[0]
    out = []
    for path, rs, samples, runs in zip(
        paths, rounds, reply["samples_ms"], reply["runs_per_round"], strict=True
    ):
        ratios = [a / b for a, b in zip(rs, first, strict=True)]
        out.append(
            LatencyStats(
                path=str(path),
                p50_ms=statistics.median(rs),
                p90_ms=float(np.percentile(samples, 90)),
                min_ms=min(rs),
                cv=_cv(rs),
                rounds=len(rs),
                runs_per_round=runs,
                ratio_to_first=statistics.median(ratios),
                ratio_cv=_cv(ratios),
            )
        )
    return out


def _cv(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if mean else 0.0


def measure_memory(
    path: str | Path, *, threads: int, input_shape: Sequence[int], sample: np.ndarray | None = None
) -> MemoryStats:
    """Peak memory of a fresh process that loads the model in ORT and runs it."""
    with tempfile.TemporaryDirectory(prefix="edgeopt-mem-") as tmp:
        request = {
            "kind": "memory",
            "paths": [str(path)],
            "threads": threads,
            "input": _input_file(Path(tmp), input_shape, sample),
        }
        reply = _run_worker(request, timeout_s=120)
    return MemoryStats(reply["peak_rss_mb"], reply["model_memory_mb"])


def size_mb(path: str | Path) -> float:
    """File size in MiB (ONNX weights included; external data files too)."""
    p = Path(path)
    total = p.stat().st_size
    for extra in p.parent.glob(p.name + ".data"):
        total += extra.stat().st_size
    return total / 2**20
