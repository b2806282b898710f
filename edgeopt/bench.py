"""Benchmark one model (optionally against a second) on a target profile: the library side of
``edgeopt bench`` and ``edgeopt check``. Returns a plain JSON-ready record; rendering is the
CLI's job.

On the host profile every model is timed interleaved with the others (``measure_latency``),
once per thread count, and its memory measured in its own process; on other profiles the
numbers are ``edgeopt.measure.service.estimate_on_profile``'s, the ones the search uses.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import DataBundle
from edgeopt.errors import ConfigError
from edgeopt.loading import LoadedModel, check_input_shape
from edgeopt.metrics import Metric, MetricValue

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark. ``models[1]``, when present, is the ``--vs`` comparison model.

    ``workdir`` receives the ONNX exports of torch models (a temporary folder when None).
    """

    models: list[LoadedModel]
    profile: Any  # edgeopt.profiles.HardwareProfile
    threads: list[int]
    workdir: Path | None = None
    data: DataBundle | None = None
    time_budget_s: float = 8.0


def run_bench(req: BenchRequest) -> dict[str, Any]:
    """Measure (host profile) or estimate (other profiles) every model; see module doc.

    Raises ConfigError when the data or the ``--vs`` model does not fit the first model.
    """
    if req.workdir is None:
        with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as tmp:
            return _run_bench(req, Path(tmp))
    return _run_bench(req, req.workdir)


def _run_bench(req: BenchRequest, workdir: Path) -> dict[str, Any]:
    from edgeopt.export import loaded_to_onnx
    from edgeopt.measure.runtime import host_description

    sample = None
    if req.data is not None:
        for m in req.models:
            check_input_shape(m, req.data.input_shape)
        sample = req.data.x_val[:8]
    else:
        for m in req.models:
            if m.module is not None:
                check_input_shape(m, m.input_shape)
    paths = []
    for i, m in enumerate(req.models):
        sub = workdir / f"m{i}"
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(loaded_to_onnx(m, sub, sample))
    if len({m.input_shape for m in req.models}) > 1:
        raise ConfigError(
            f"--vs model takes input {req.models[1].input_shape}, "
            f"but the first model takes {req.models[0].input_shape}",
            hint="compare two versions of the same model",
        )
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "target": req.profile.name,
        "measured": bool(req.profile.measured),
        "host": host_description(),
        "results": [],
        "comparisons": [],
    }
    accuracy = _accuracies(paths, req.data, req.threads[-1])
    if req.data is not None:
        report["accuracy_split"] = "test" if req.data.has_test else "val"
    if req.profile.measured:
        _measure(report, req, paths, req.models[0].input_shape, sample, accuracy)
    else:
        _estimate(report, req, paths, accuracy)
    return report


def _accuracies(paths: list[Path], data: DataBundle | None, threads: int) -> list[float | None]:
    if data is None:
        return [None for _ in paths]
    from edgeopt.measure.accuracy import onnx_accuracy

    x, y = data.split("test")
    return [onnx_accuracy(p, x, y, threads=threads) for p in paths]


def _mv(value: float, provenance: str, **extra: float) -> dict[str, Any]:
    return {"value": value, "provenance": provenance, **extra}


def _entry(v: MetricValue, *extra: str) -> dict[str, Any]:
    """A Measurement value as a bench entry: value, provenance and the ``extra`` fields."""
    return _mv(v.value, v.provenance.value, **{k: getattr(v, k) for k in extra})


def _row(
    path: Path, threads: int | None, numbers: dict[str, Any], acc: float | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"model": str(path), "threads": threads, **numbers}
    if acc is not None:
        row["accuracy"] = _mv(acc, "measured")
    return row


def _comparison(
    paths: Sequence[Path], threads: int | None, ratio: float, provenance: str, **extra: Any
) -> dict[str, Any]:
    # ratio = the second model's time / the first's: > 1 means the first model is faster
    return {
        "a": str(paths[0]),
        "b": str(paths[1]),
        "threads": threads,
        "ratio": ratio,
        **extra,
        "provenance": provenance,
    }


def _measure(
    report: dict[str, Any],
    req: BenchRequest,
    paths: list[Path],
    input_shape: tuple[int, ...],
    sample: np.ndarray | None,
    accuracy: list[float | None],
) -> None:
    from edgeopt.measure.runtime import measure_latency, measure_memory, size_mb

    memory = [
        measure_memory(p, threads=req.threads[-1], input_shape=input_shape, sample=sample)
        for p in paths
    ]
    for threads in req.threads:
        stats = measure_latency(
            paths,
            threads=threads,
            input_shape=input_shape,
            sample=sample,
            time_budget_s=req.time_budget_s,
        )
        for p, s, mem, acc in zip(paths, stats, memory, accuracy, strict=True):
            numbers = {
                "latency_ms": _mv(s.p50_ms, "measured", spread=s.p90_ms - s.p50_ms, cv=s.cv),
                "latency_p90_ms": _mv(s.p90_ms, "measured"),
                "latency_min_ms": _mv(s.min_ms, "measured"),
                "rounds": s.rounds,
                "runs_per_round": s.runs_per_round,
                "peak_memory_mb": _mv(mem.model_memory_mb, "measured"),
                "process_peak_rss_mb": _mv(mem.peak_rss_mb, "measured"),
                "size_mb": _mv(size_mb(p), "measured"),
            }
            report["results"].append(_row(p, threads, numbers, acc))
        if len(stats) > 1:
            b = stats[1]
            report["comparisons"].append(
                _comparison(
                    paths,
                    threads,
                    b.ratio_to_first,
                    "measured",
                    ratio_cv=b.ratio_cv,
                    rounds=b.rounds,
                )
            )


def _estimate(
    report: dict[str, Any], req: BenchRequest, paths: list[Path], accuracy: list[float | None]
) -> None:
    from edgeopt.measure.service import estimate_on_profile

    estimates = [estimate_on_profile(p, req.profile) for p in paths]
    for p, (m, est), acc in zip(paths, estimates, accuracy, strict=True):
        energy = m.get(Metric.ENERGY_MJ)
        assert energy is not None  # the cost model always estimates energy
        numbers = {
            "latency_ms": _entry(m.values[Metric.LATENCY_MS]),
            "peak_memory_mb": _entry(m.values[Metric.PEAK_MEMORY_MB]),
            "energy_mj": _entry(energy, "low", "high"),
            "fits": dict(est.fits),
            "size_mb": _entry(m.values[Metric.SIZE_MB]),
        }
        report["results"].append(_row(p, None, numbers, acc))
    if len(estimates) > 1:
        latency = [m[Metric.LATENCY_MS] for m, _ in estimates]
        report["comparisons"].append(_comparison(paths, None, latency[1] / latency[0], "estimated"))
    report["assumptions"] = list(estimates[0][1].assumptions)
