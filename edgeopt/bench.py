"""Benchmark one model (optionally against a second) on a target profile: the library side of
``edgeopt bench`` and ``edgeopt check``. Returns a plain JSON-ready record; rendering is the
CLI's job.

On a measured profile every model is timed interleaved with the others, once per thread
count, and its memory measured in its own process, by the profile's runner
(``edgeopt.measure.runners``: this host, or the device its ``[runner]`` names, whose
``device`` goes beside every measured number; a device with a power reading measures energy
too, else energy is the cost model's estimate); on other profiles the numbers are
``edgeopt.measure.service.estimate_on_profile``'s, the ones the search uses.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.bench_files import check_runtimes, estimable_onnx, target_file
from edgeopt.bench_seq import check_files_take, estimate_by_seq, measure_by_seq
from edgeopt.data import ScoringData
from edgeopt.data.folder_scoring import FolderScoring
from edgeopt.errors import ConfigError
from edgeopt.loading import LoadedModel, check_model_and_data
from edgeopt.measure.accuracy import onnx_batch_logits
from edgeopt.measure.runner_base import Runner
from edgeopt.measure.runners import runner_for
from edgeopt.measure.runtime import host_description, size_mb
from edgeopt.measure.service import estimate_on_profile
from edgeopt.measure.session import OUT_OF_PROCESS
from edgeopt.measure.task_metrics import task_metric
from edgeopt.metrics import Metric, MetricValue
from edgeopt.runtime_child import shared_runtime_child

# 2: latency_ms became latency_p50_ms, model paths are as passed (docs/bench-json.md)
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark. ``models[1]``, when present, is the ``--vs`` comparison model.

    ``workdir`` receives the ONNX exports of torch models (a temporary folder when None);
    ``data`` (an npz's arrays, or an image folder streamed in batches) is scored on its
    ``scored`` split; ``metric``, with ``data``, a task metric measured beside top-1 accuracy
    (``f1`` ...); ``seq_lens``, for a model with a sequence axis, the lengths it is also
    timed (or estimated) at, on synthetic inputs of each (``edgeopt.bench_seq``).
    """

    models: list[LoadedModel]
    profile: Any  # edgeopt.profiles.HardwareProfile
    threads: list[int]
    workdir: Path | None = None
    data: ScoringData | FolderScoring | None = None
    time_budget_s: float = 8.0
    metric: str = "accuracy"
    seq_lens: tuple[int, ...] = ()


def run_bench(req: BenchRequest) -> dict[str, Any]:
    """Measure (host profile) or estimate (other profiles) every model; see module doc.

    Raises ConfigError when the data or the ``--vs`` model does not fit the first model.
    """
    if req.workdir is None:
        with tempfile.TemporaryDirectory(prefix="edgeopt-bench-") as tmp:
            return _run_bench(req, Path(tmp))
    return _run_bench(req, req.workdir)


def _run_bench(req: BenchRequest, workdir: Path) -> dict[str, Any]:
    from edgeopt.onnx_export import loaded_to_onnx

    check_runtimes(req.models, req.profile)  # a file the target does not run: before any work
    runner = runner_for(req.profile) if req.profile.measured else None
    if runner is not None:
        runner.check()  # an unreachable or unfit device fails before any work
    sample = None
    if req.data is not None:
        for m in req.models:
            check_model_and_data(m, req.data)
        sample = req.data.sample(8)
    else:
        for m in req.models:
            if m.module is not None:
                check_model_and_data(m, None)
        if not req.models[0].inputs.is_single:  # token ids, masks: not standard normal
            sample = req.models[0].inputs.synthetic(8, seed=0)
    paths = []
    for i, m in enumerate(req.models):
        sub = workdir / f"m{i}"
        sub.mkdir(parents=True, exist_ok=True)
        given = m.artifact_path or loaded_to_onnx(m, sub, sample)
        paths.append(target_file(given, req.profile, sub, m))  # the file the target runs
    if len({m.input_shape for m in req.models}) > 1:
        raise ConfigError(
            f"--vs model takes input {req.models[1].input_shape}, "
            f"but the first model takes {req.models[0].input_shape}",
            hint="compare two versions of the same model",
        )
    names = [str(m.source) for m in req.models]  # as the user passed them, not the exports
    if req.seq_lens:  # a length a model does not take: before any timing
        check_files_take(paths, names, req.models[0].inputs, req.seq_lens)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "target": req.profile.name,
        "measured": bool(req.profile.measured),
        "device": runner.device if runner is not None else None,
        "host": _host(runner, req.profile.runtime_name.value),
        "runtime": req.profile.runtime_name.value,
        "results": [],
        "comparisons": [],
    }
    hint = req.profile.runtime.precision_hint if req.profile.runtime else "f32"
    accuracy, scored = _accuracies(paths, req.data, req.threads[-1], req.metric, hint)
    if req.data is not None:
        report["accuracy_split"] = req.data.scored
        report["accuracy_samples"] = scored
        report["metric"] = req.metric
    if runner is not None:
        _measure(report, req, runner, paths, names, req.models[0].input_shape, sample, accuracy)
    else:
        _estimate(report, req, paths, names, accuracy, _input_shapes(req.models[0]))
    if req.seq_lens:
        _by_seq(report, req, runner, paths)
    return report


def _by_seq(
    report: dict[str, Any], req: BenchRequest, runner: Runner | None, paths: list[Path]
) -> None:
    """Each result row's latency per ``req.seq_lens`` (``latency_by_seq``), and each
    comparison's ratio per length (``ratio_by_seq``)."""
    inputs = req.models[0].inputs
    report["seq_len"] = inputs.seq_len
    report["seq_lens"] = list(req.seq_lens)
    rows = iter(report["results"])
    for threads in req.threads if runner is not None else [None]:
        if runner is not None:
            hint = req.profile.runtime.precision_hint if req.profile.runtime else "f32"
            per_model, ratios = measure_by_seq(
                runner,
                paths,
                inputs,
                req.seq_lens,
                threads=threads or 1,
                time_budget_s=req.time_budget_s,
                precision_hint=hint,
            )
        else:
            per_model, ratios = estimate_by_seq(paths, inputs, req.seq_lens, req.profile)
        for by_seq in per_model:
            next(rows)["latency_by_seq"] = by_seq
        for cmp in report["comparisons"]:
            if cmp["threads"] == threads and ratios:
                cmp["ratio_by_seq"] = ratios


def _input_shapes(model: LoadedModel) -> dict[str, tuple[int, ...]] | None:
    """One sample's shape per input of a model with several: the cost model fixes a graph's
    dynamic dims (the sequence length) from them; None for one float input (as before)."""
    if model.inputs.is_single:
        return None
    return {s.name: s.shape for s in model.inputs.specs}


def measured_on(device: str | None) -> str:
    """``measured on this host`` for this host's runner, else ``measured on DEVICE``."""
    if device is None or device.startswith("local://"):
        return "measured on this host"
    return f"measured on {device}"


def _host(runner: Runner | None, runtime: str) -> str:
    """The host line: the runner's (ORT: its execution providers) or, for a runtime edgeopt
    runs in a child of this host (OpenVINO, LiteRT), this host with that runtime's version."""
    if runner is not None and runtime not in OUT_OF_PROCESS:
        return runner.describe()
    return host_description(runtime)


Scores = dict[str, float]  # task metric name -> value on the accuracy split


def _accuracies(
    paths: list[Path],
    data: ScoringData | FolderScoring | None,
    threads: int,
    metric: str,
    precision_hint: str = "f32",
) -> tuple[list[Scores | None], int]:
    """Top-1 accuracy and ``metric`` of each model on the scored split (from one pass over
    its batches per model), and the number of samples scored (an image that fails to
    decode is skipped)."""
    if data is None:
        return [None for _ in paths], 0

    out: list[Scores | None] = []
    n = 0
    with shared_runtime_child(threads):  # one for every OpenVINO/LiteRT file scored
        for p in paths:
            logits, y = onnx_batch_logits(
                p, data.scoring_batches(), threads=threads, precision_hint=precision_hint
            )
            scores = {m: task_metric(m, logits, y) for m in dict.fromkeys(("accuracy", metric))}
            out.append(scores)
            n = len(y)
    return out, n


def _mv(value: float, provenance: str, **extra: float | str | None) -> dict[str, Any]:
    return {"value": value, "provenance": provenance, **extra}


def _entry(v: MetricValue, *extra: str) -> dict[str, Any]:
    """A Measurement value as a bench entry: value, provenance and the ``extra`` fields."""
    return _mv(v.value, v.provenance.value, **{k: getattr(v, k) for k in extra})


def _row(
    name: str, threads: int | None, numbers: dict[str, Any], acc: Scores | None
) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "threads": threads, **numbers}
    for metric, value in (acc or {}).items():
        row[metric] = _mv(value, "measured")
    return row


def _comparison(
    names: Sequence[str], threads: int | None, ratio: float, provenance: str, **extra: Any
) -> dict[str, Any]:
    # ratio = the second model's time / the first's: > 1 means the first model is faster
    return {
        "a": names[0],
        "b": names[1],
        "threads": threads,
        "ratio": ratio,
        **extra,
        "provenance": provenance,
    }


def _measure(
    report: dict[str, Any],
    req: BenchRequest,
    runner: Any,
    paths: list[Path],
    names: list[str],
    input_shape: tuple[int, ...],
    sample: np.ndarray | None,
    accuracy: list[Scores | None],
) -> None:
    """Numbers measured by ``runner`` (an ``edgeopt.measure.runner_base.Runner``)."""
    dev = runner.device
    threads = req.threads[-1]
    hint = req.profile.runtime.precision_hint if req.profile.runtime else "f32"
    memory = [
        runner.measure_memory(
            p, threads=threads, input_shape=input_shape, sample=sample, precision_hint=hint
        )
        for p in paths
    ]
    energy = [_energy(runner, req.profile, p, threads, input_shape, sample) for p in paths]
    for threads in req.threads:
        stats = runner.measure_latency(
            paths,
            threads=threads,
            input_shape=input_shape,
            sample=sample,
            time_budget_s=req.time_budget_s,
            precision_hint=hint,
        )
        rows = zip(paths, names, stats, memory, energy, accuracy, strict=True)
        for p, name, s, mem, e, acc in rows:
            spread = s.p90_ms - s.p50_ms
            numbers = {
                "latency_p50_ms": _mv(s.p50_ms, "measured", spread=spread, cv=s.cv, device=dev),
                "latency_p90_ms": _mv(s.p90_ms, "measured", device=dev),
                "latency_min_ms": _mv(s.min_ms, "measured", device=dev),
                "rounds": s.rounds,
                "runs_per_round": s.runs_per_round,
                "peak_memory_mb": _mv(mem.model_memory_mb, "measured", device=dev),
                "process_peak_rss_mb": _mv(mem.peak_rss_mb, "measured", device=dev),
                "size_mb": _mv(size_mb(p), "measured"),
                **({"energy_mj": e} if e is not None else {}),
            }
            report["results"].append(_row(name, threads, numbers, acc))
        if len(stats) > 1:
            b = stats[1]
            report["comparisons"].append(
                _comparison(
                    names,
                    threads,
                    b.ratio_to_first,
                    "measured",
                    ratio_cv=b.ratio_cv,
                    rounds=b.rounds,
                    device=dev,
                )
            )


def _energy(
    runner: Any,
    profile: Any,
    path: Path,
    threads: int,
    input_shape: tuple[int, ...],
    sample: np.ndarray | None,
) -> dict[str, Any] | None:
    """Energy per inference on a ``[runner]`` profile: measured where the device has a power
    reading, else the cost model's estimate (labelled so); None for the plain host profile,
    and for a file the cost model cannot read without a power reading."""
    if profile.runner is None:
        return None
    hint = profile.runtime.precision_hint if profile.runtime else "f32"
    e = runner.measure_energy(
        path, threads=threads, input_shape=input_shape, sample=sample, precision_hint=hint
    )
    if e is not None:
        return _mv(e.energy_mj, "measured", device=runner.device, source=e.source)

    onnx_path = estimable_onnx(path)
    if onnx_path is None:  # an OpenVINO IR: the cost model reads ONNX graphs only
        return None
    estimated = estimate_on_profile(onnx_path, profile)[0].get(Metric.ENERGY_MJ)
    assert estimated is not None  # the cost model always estimates energy
    return _entry(estimated, "low", "high")


def _estimate(
    report: dict[str, Any],
    req: BenchRequest,
    paths: list[Path],
    names: list[str],
    accuracy: list[Scores | None],
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> None:
    sources = [estimable_onnx(p) for p in paths]  # check_runtimes refused the others
    estimates = [
        estimate_on_profile(p, req.profile, input_shapes=input_shapes)
        for p in sources
        if p is not None
    ]
    rows = zip(names, paths, sources, estimates, accuracy, strict=True)
    for name, p, src, (m, est), acc in rows:
        energy = m.get(Metric.ENERGY_MJ)
        assert energy is not None  # the cost model always estimates energy
        numbers = {
            "latency_p50_ms": _entry(m.values[Metric.LATENCY_MS]),
            "peak_memory_mb": _entry(m.values[Metric.PEAK_MEMORY_MB]),
            "energy_mj": _entry(energy, "low", "high"),
            "fits": dict(est.fits),
            # a .ort is estimated on its source ONNX, but the file that ships is its own
            "size_mb": _entry(m.values[Metric.SIZE_MB])
            if p == src
            else _mv(size_mb(p), "measured"),
        }
        report["results"].append(_row(name, None, numbers, acc))
    if len(estimates) > 1:
        latency = [m[Metric.LATENCY_MS] for m, _ in estimates]
        report["comparisons"].append(_comparison(names, None, latency[1] / latency[0], "estimated"))
    report["assumptions"] = list(estimates[0][1].assumptions)
