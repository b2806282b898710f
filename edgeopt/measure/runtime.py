"""Measure ONNX models on this host with ONNX Runtime, in a separate process.

Latency that can be trusted on a noisy shared VM: warm-up, rounds that run every model in turn
(interleaved, order alternating), the median of per-round medians as p50, and speed ratios taken
per round against the first model and summarized by their median. Absolute numbers drift with
the machine; the interleaved ratios do not (see benchmarks/RESULTS.md).

The requests the timing child takes and the stats made from its replies are built here
(``latency_request``, ``latency_stats``, ``memory_stats``, ``energy_stats``) and shared with
the runners that run the same child (``edgeopt.measure.runner_base``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
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
    load: dict[str, Any] | None = None
    """The host's load around the run (``edgeopt.measure.machine_load.MachineLoad.to_dict``); None
    where it was not recorded (a remote device)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryStats:
    """Peak RSS of an isolated process that loaded ORT and ran the model, and the model's part."""

    peak_rss_mb: float
    model_memory_mb: float


@dataclass(frozen=True)
class EnergyStats:
    """Energy per inference read from a device's power reading while the model ran back to
    back (``edgeopt.measure.power``): ``source`` names the reading, ``mean_w`` the mean power."""

    energy_mj: float
    runs: int
    mean_w: float
    source: str


RUNTIME_DISTRIBUTIONS = {
    "ort": "onnxruntime",
    "ort-format": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai-edge-litert",
}
"""Runtime name -> the installed distribution whose version a host line names."""


def host_description(runtime: str = "ort") -> str:
    """One line naming this machine: CPU model, logical cores, OS, and the version of the
    ``runtime`` that ran the models (read from its installed metadata: the runtime itself
    is not imported here)."""
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
    dist = RUNTIME_DISTRIBUTIONS.get(runtime, "onnxruntime")
    try:
        made = f"{dist} {version(dist)}"
    except PackageNotFoundError:
        made = f"{dist} not installed"
    return f"{cpu}, {os.cpu_count()} logical cores, {system}, {made}"


def run_child(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The timing child's reply to ``request``, run in a fresh process on this host.

    The child dies with this process and ignores stop signals (``edgeopt.lifeline``); in a
    session of its own, a Ctrl-C in the terminal reaches only this process, which decides:
    an exception here (a second Ctrl-C) kills the child."""
    request = {**request, "deadline_s": timeout_s + 5, "parent_pid": os.getpid()}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edgeopt.measure.child"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        raise EdgeoptError(f"measurement process timed out after {timeout_s:.0f}s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeoptError(f"measurement process failed: {last}")
    return json.loads(proc.stdout)


def input_row(input_shape: Sequence[int], sample: np.ndarray | None) -> np.ndarray:
    """The model input: ``sample``'s first row, else a seeded one (float32, contiguous; a
    structured ``sample``, several inputs, stays structured: the child feeds it by name)."""
    if sample is None:
        sample = synthetic_inputs(tuple(input_shape), 1, seed=0)
    if sample.dtype.names:
        return np.ascontiguousarray(sample[:1])
    return np.ascontiguousarray(sample[:1], dtype=np.float32)


def child_request(
    kind: str,
    paths: Sequence[str],
    input_path: str,
    *,
    threads: int,
    providers: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The timing child's ``memory`` or ``energy`` request for one model on one input."""
    request: dict[str, Any] = {
        "kind": kind,
        "paths": list(paths),
        "threads": threads,
        "input": input_path,
        **extra,
    }
    if providers:
        request["providers"] = list(providers)
    return request


def latency_request(
    paths: Sequence[str],
    inputs: Sequence[str],
    *,
    threads: int,
    providers: Sequence[str] | None = None,
    min_rounds: int = 5,
    max_rounds: int = 40,
    time_budget_s: float | None = 8.0,
    target_round_ms: float = 40.0,
    warmup: int = 10,
    min_runs: int = 5,
    max_runs: int = 500,
) -> dict[str, Any]:
    """The timing child's ``latency`` request: ``inputs`` holds one ``.npy`` path for all
    models or one per model; ``providers`` None means the CPU provider."""
    request: dict[str, Any] = {
        "kind": "latency",
        "paths": list(paths),
        "threads": threads,
        "warmup": warmup,
        "min_runs": min_runs,
        "max_runs": max_runs,
        "target_round_ms": target_round_ms,
        "min_rounds": min_rounds,
        "max_rounds": max_rounds,
        "time_budget_s": time_budget_s,
    }
    if len(inputs) == 1:
        request["input"] = inputs[0]
    else:
        request["inputs"] = list(inputs)
    if providers:
        request["providers"] = list(providers)
    return request


def latency_stats(paths: Sequence[str | Path], reply: dict[str, Any]) -> list[LatencyStats]:
    """Stats per model (in ``paths``' order) from the timing child's ``latency`` reply."""
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


def memory_stats(reply: dict[str, Any]) -> MemoryStats:
    """MemoryStats from the timing child's ``memory`` reply."""
    return MemoryStats(float(reply["peak_rss_mb"]), float(reply["model_memory_mb"]))


def energy_stats(reply: dict[str, Any]) -> EnergyStats:
    """EnergyStats from the timing child's ``energy`` reply."""
    return EnergyStats(
        float(reply["energy_mj"]), int(reply["runs"]), float(reply["mean_w"]), str(reply["source"])
    )


def size_mb(path: str | Path) -> float:
    """File size in MiB (ONNX weights included; external data files too; an OpenVINO IR
    ``.xml`` with its ``.bin``)."""
    p = Path(path)
    total = p.stat().st_size
    for extra in p.parent.glob(p.name + ".data"):
        total += extra.stat().st_size
    if p.suffix.lower() == ".xml" and p.with_suffix(".bin").is_file():
        total += p.with_suffix(".bin").stat().st_size
    return total / 2**20
