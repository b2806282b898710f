"""One way to get a model's numbers on its targets: measured where a runner can, estimated
elsewhere.

Every profile gets the cost model's estimate and the measured file size; a measured profile
then has its latency and peak memory replaced by numbers measured in an isolated process by
its runner (``edgeopt.measure.runners``: this host, or the device a ``[runner]`` table
names), and its energy too where that device exposes a power reading. Each measured number
carries the runner's ``device``. With a ``HostReference`` the latency is timed interleaved
with the original model and reported as ratio x the original's reference latency, so
candidates measured minutes apart on a drifting machine stay comparable; the raw p50 is kept
beside it under ``<profile>:raw``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.estimate import estimate
from edgeopt.fileio import file_lock
from edgeopt.measure.runners import runner_for
from edgeopt.measure.runtime import size_mb
from edgeopt.metrics import Measurement, Metric, MetricValue, Provenance
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime

if TYPE_CHECKING:
    from edgeopt.estimate import Estimate
    from edgeopt.profiles import HardwareProfile

RAW_SUFFIX = ":raw"


@dataclass(frozen=True)
class HostReference:
    """The model candidates are timed against, on each measured profile's runner.

    ``onnx``: the original model as ONNX, timed interleaved with each candidate.
    ``latency_ms``: its reference p50 per measured-profile name (measured once, at setup, by
    :func:`reference_latency_ms`). ``files``: the original converted for a measured profile
    whose runtime is not ONNX Runtime (``baseline/<profile>/original.xml``), per profile name:
    a candidate's file is timed against the original in the same runtime.
    """

    onnx: Path
    latency_ms: Mapping[str, float]
    files: Mapping[str, Path] = field(default_factory=dict)


def measure_on_targets(
    onnx_path: Path,
    profiles: Sequence[HardwareProfile],
    *,
    input_shape: tuple[int, ...],
    sample: np.ndarray | None,
    reference: HostReference | None = None,
    lock_path: Path | None = None,
    time_budget_s: float = 2.5,
    files: Mapping[str, Path] | None = None,
) -> dict[str, Measurement]:
    """Numbers of ``onnx_path`` on each profile, keyed by profile name.

    Size is measured; every profile gets ``estimate``'s latency, memory and energy. On a
    measured profile, latency and peak memory are measured by its runner (``sample``'s first
    row as input, or seeded synthetic inputs of ``input_shape``), and energy where the
    runner's device has a power reading, while holding an exclusive lock on ``lock_path``
    (when given) so that concurrent workers do not time each other. Latency is
    ``ratio x reference.latency_ms[name]`` with spread ``latency x ratio CV`` when
    ``reference`` is given, else the raw p50; ``f"{name}:raw"`` always holds the raw p50
    (spread p90 - p50). ``files``: per profile name, the file its runtime loads when that is
    not the ONNX file (an OpenVINO ``.xml``, a ``.ort``): its size is that file's, and a
    measured profile times it (in its runtime, against ``reference.files[name]``); the cost
    model reads a ``.tflite`` itself (the Edge TPU's or the MCU's full-integer file), any other
    runtime's file through the ONNX file. Raises EdgeoptError when measuring fails (DeviceError
    when the device cannot measure at all), or for a measured profile of another runtime
    than ONNX Runtime without its file.
    """
    onnx_size = MetricValue(size_mb(onnx_path), Provenance.MEASURED)
    out: dict[str, Measurement] = {}
    for profile in profiles:
        own = (files or {}).get(profile.name)
        size = MetricValue(size_mb(own), Provenance.MEASURED) if own else onnx_size
        # an estimated target's own .tflite is what its device runs: the estimate reads it
        source = own if own is not None and own.suffix == ".tflite" else onnx_path
        estimated, _ = estimate_on_profile(source, profile, size=size)
        if not profile.measured:
            out[profile.name] = estimated
            continue
        if own is None and profile.runtime_name != Runtime.ORT:
            raise EdgeoptError(
                f"no {RUNTIMES[profile.runtime_name].label} file to time on '{profile.name}'"
            )
        with file_lock(lock_path) if lock_path else contextlib.nullcontext():
            host, raw = _measured_numbers(
                own or onnx_path,
                profile,
                input_shape=input_shape,
                sample=sample,
                reference=reference,
                time_budget_s=time_budget_s,
            )
        out[profile.name] = Measurement(profile.name, {**estimated.values, **host})
        out[profile.name + RAW_SUFFIX] = Measurement(profile.name, {Metric.LATENCY_MS: raw})
    return out


def estimate_on_profile(
    onnx_path: Path,
    profile: HardwareProfile,
    *,
    size: MetricValue | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[Measurement, Estimate]:
    """The cost model's numbers on ``profile`` (labelled estimated) plus the measured file
    size (``size``, or measured here), and the ``Estimate`` itself (fits, assumptions);
    ``input_shapes`` fixes dynamic input dims (the sequence length) as ``estimate`` does."""
    est = estimate(onnx_path, profile, input_shapes)
    values = dict(est.to_measurement().values)
    values[Metric.SIZE_MB] = size or MetricValue(size_mb(onnx_path), Provenance.MEASURED)
    return Measurement(profile.name, values), est


def reference_latency_ms(
    onnx_path: Path,
    profile: HardwareProfile,
    *,
    input_shape: tuple[int, ...],
    sample: np.ndarray | None,
    time_budget_s: float,
) -> float:
    """The p50 latency of ``onnx_path`` (or the profile runtime's file) on a measured
    ``profile``'s runner (the reference candidates' ratios are scaled by). Raises
    EdgeoptError when measuring fails."""
    (stats,) = runner_for(profile).measure_latency(
        [onnx_path],
        threads=profile.threads,
        input_shape=input_shape,
        sample=sample,
        time_budget_s=time_budget_s,
        precision_hint=precision_hint(profile),
    )
    return stats.p50_ms


def _measured_numbers(
    onnx_path: Path,
    profile: HardwareProfile,
    *,
    input_shape: tuple[int, ...],
    sample: np.ndarray | None,
    reference: HostReference | None,
    time_budget_s: float,
) -> tuple[dict[Metric, MetricValue], MetricValue]:
    """Latency, peak memory (and energy where metered) measured by ``profile``'s runner,
    and the raw latency."""
    if reference is not None and profile.name not in reference.latency_ms:
        raise EdgeoptError(f"no reference latency for measured profile '{profile.name}'")
    runner = runner_for(profile)
    if reference is None:
        paths = [onnx_path]
    else:
        paths = [reference.files.get(profile.name, reference.onnx), onnx_path]
    threads = profile.threads
    shape, hint = input_shape, precision_hint(profile)
    *_, cand = runner.measure_latency(
        paths,
        threads=threads,
        input_shape=shape,
        sample=sample,
        time_budget_s=time_budget_s,
        precision_hint=hint,
    )
    mem = runner.measure_memory(
        onnx_path, threads=threads, input_shape=shape, sample=sample, precision_hint=hint
    )
    energy = runner.measure_energy(
        onnx_path, threads=threads, input_shape=shape, sample=sample, precision_hint=hint
    )
    measured, device = Provenance.MEASURED, runner.device
    load = cand.load  # the host's load meanwhile (None from a remote device)
    spread = cand.p90_ms - cand.p50_ms
    raw = MetricValue(cand.p50_ms, measured, spread=spread, device=device, load=load)
    latency = raw
    if reference is not None:
        # the ratio is what interleaving makes trustworthy; scaling it by the reference's
        # latency keeps candidates measured minutes apart comparable
        value = cand.ratio_to_first * float(reference.latency_ms[profile.name])
        latency = MetricValue(
            value, measured, spread=value * cand.ratio_cv, device=device, load=load
        )
    out = {
        Metric.LATENCY_MS: latency,
        Metric.PEAK_MEMORY_MB: MetricValue(mem.model_memory_mb, measured, device=device),
    }
    if energy is not None:
        out[Metric.ENERGY_MJ] = MetricValue(energy.energy_mj, measured, device=device)
    return out, raw


def precision_hint(profile: HardwareProfile) -> str:
    """OpenVINO's inference precision for ``profile`` (``f32`` when it names no runtime)."""
    return profile.runtime.precision_hint if profile.runtime else "f32"
