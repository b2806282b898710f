"""The measurement service: host numbers measured (latency interleaved vs a reference and
scaled by its reference latency, raw p50 kept beside it), other profiles estimated, on a real
tiny ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.data import load_npz
from edgeopt.estimate import estimate
from edgeopt.measure.service import HostReference, measure_on_targets
from edgeopt.metrics import Metric, Provenance
from edgeopt.profiles import load_profile

SHAPE = (1, 16, 16)


def test_host_measured_against_a_reference_and_a_profile_estimated(
    model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    onnx_path: Path = model_files["onnx"]
    cpu, mobile = load_profile("cpu"), load_profile("mobile")
    # the model against itself: the ratio is ~1, so latency ~ the reference latency given
    reference = HostReference(onnx_path, {cpu.name: 1000.0})
    lock = tmp_path / "locks" / ".measure.lock"
    out = measure_on_targets(
        onnx_path,
        [cpu, mobile],
        input_shape=SHAPE,
        sample=load_npz(tiny_data).x_val[:1],
        reference=reference,
        lock_path=lock,
        time_budget_s=0.5,
    )
    assert set(out) == {cpu.name, f"{cpu.name}:raw", mobile.name}
    host = out[cpu.name]
    latency = host.get(Metric.LATENCY_MS)
    assert latency is not None and latency.provenance is Provenance.MEASURED
    assert 600 < latency.value < 1600 and latency.spread is not None
    raw = out[f"{cpu.name}:raw"].get(Metric.LATENCY_MS)
    assert raw is not None and raw.provenance is Provenance.MEASURED
    assert 0 < raw.value < 100 and raw.spread is not None and raw.spread >= 0
    assert host.values[Metric.PEAK_MEMORY_MB].provenance is Provenance.MEASURED
    assert host.values[Metric.ENERGY_MJ].provenance is Provenance.ESTIMATED
    size = onnx_path.stat().st_size / 2**20
    assert host[Metric.SIZE_MB] == out[mobile.name][Metric.SIZE_MB] == size
    assert lock.exists()

    est = estimate(onnx_path, mobile)
    on_mobile = out[mobile.name]
    assert on_mobile[Metric.LATENCY_MS] == est.latency_ms
    assert on_mobile[Metric.PEAK_MEMORY_MB] == est.peak_memory_mb
    assert all(
        v.provenance is Provenance.ESTIMATED
        for m, v in on_mobile.values.items()
        if m is not Metric.SIZE_MB
    )


def test_without_a_reference_latency_is_the_raw_p50(model_files: dict) -> None:
    cpu = load_profile("cpu")
    out = measure_on_targets(
        model_files["onnx"], [cpu], input_shape=SHAPE, sample=None, time_budget_s=0.3
    )
    latency = out[cpu.name].values[Metric.LATENCY_MS]
    assert latency == out[f"{cpu.name}:raw"].values[Metric.LATENCY_MS]
    assert 0 < latency.value < 100
    assert np.isfinite(out[cpu.name][Metric.PEAK_MEMORY_MB])
