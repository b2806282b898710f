"""Benchmark one model (optionally against a second) on a target profile: the library side of
``edgeopt bench``. Returns a plain JSON-ready record; rendering is the CLI's job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.data import DataBundle
from edgeopt.loading import LoadedModel, check_input_shape

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark. ``models[1]``, when present, is the ``--vs`` comparison model."""

    models: list[LoadedModel]
    profile: Any  # edgeopt.profiles.HardwareProfile
    threads: list[int]
    workdir: Path
    data: DataBundle | None = None
    time_budget_s: float = 8.0


def run_bench(req: BenchRequest) -> dict[str, Any]:
    """Measure (host profile) or estimate (other profiles) every model; see module doc."""
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
        sub = req.workdir / f"m{i}"
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(loaded_to_onnx(m, sub, sample))
    shapes = {m.input_shape for m in req.models}
    if len(shapes) > 1:
        from edgeopt.errors import ConfigError

        raise ConfigError(
            f"--vs model takes input {req.models[1].input_shape}, "
            f"but the first model takes {req.models[0].input_shape}",
            hint="compare two versions of the same model",
        )
    input_shape = req.models[0].input_shape
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "target": req.profile.name,
        "measured": bool(req.profile.measured),
        "host": host_description(),
        "results": [],
        "comparisons": [],
    }
    accuracy = _accuracies(paths, req.data, req.threads[-1])
    if accuracy:
        report["accuracy_split"] = "test" if req.data and req.data.has_test else "val"
    if req.profile.measured:
        _measure(report, req, paths, input_shape, sample, accuracy)
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


def _measure(
    report: dict[str, Any],
    req: BenchRequest,
    paths: list[Path],
    input_shape: tuple[int, ...],
    sample: Any,
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
            row: dict[str, Any] = {
                "model": str(p),
                "threads": threads,
                "latency_ms": _mv(s.p50_ms, "measured", spread=s.p90_ms - s.p50_ms, cv=s.cv),
                "latency_p90_ms": _mv(s.p90_ms, "measured"),
                "latency_min_ms": _mv(s.min_ms, "measured"),
                "rounds": s.rounds,
                "runs_per_round": s.runs_per_round,
                "peak_memory_mb": _mv(mem.model_memory_mb, "measured"),
                "process_peak_rss_mb": _mv(mem.peak_rss_mb, "measured"),
                "size_mb": _mv(size_mb(p), "measured"),
            }
            if acc is not None:
                row["accuracy"] = _mv(acc, "measured")
            report["results"].append(row)
        if len(stats) > 1:
            report["comparisons"].append(
                {
                    "a": str(paths[0]),
                    "b": str(paths[1]),
                    "threads": threads,
                    # > 1: the first model is faster
                    "ratio": stats[1].ratio_to_first,
                    "ratio_cv": stats[1].ratio_cv,
                    "rounds": stats[1].rounds,
                    "provenance": "measured",
                }
            )


def _estimate(
    report: dict[str, Any], req: BenchRequest, paths: list[Path], accuracy: list[float | None]
) -> None:
    from edgeopt.measure.estimate import estimate
    from edgeopt.measure.runtime import size_mb

    estimates = [estimate(p, req.profile) for p in paths]
    for p, e, acc in zip(paths, estimates, accuracy, strict=True):
        row: dict[str, Any] = {
            "model": str(p),
            "threads": None,
            "latency_ms": _mv(e.latency_ms, "estimated"),
            "peak_memory_mb": _mv(e.peak_memory_mb, "estimated"),
            "energy_mj": _mv(
                (e.energy_mj_low + e.energy_mj_high) / 2,
                "estimated",
                low=e.energy_mj_low,
                high=e.energy_mj_high,
            ),
            "fits": dict(e.fits),
            "size_mb": _mv(size_mb(p), "measured"),
        }
        if acc is not None:
            row["accuracy"] = _mv(acc, "measured")
        report["results"].append(row)
    if len(estimates) > 1:
        report["comparisons"].append(
            {
                "a": str(paths[0]),
                "b": str(paths[1]),
                "threads": None,
                "ratio": estimates[1].latency_ms / estimates[0].latency_ms,
                "provenance": "estimated",
            }
        )
    report["assumptions"] = list(estimates[0].assumptions)
