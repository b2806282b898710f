"""Fitting host cost-model numbers to measured medians.

Step 1, per dtype, from the micro-benchmarks: ``peak`` = the best throughput any compute
benchmark reached; per op class ``efficiency = achieved / peak``; ``kernel_overhead`` from the
tiny-op chain; ``bandwidth`` from the elementwise chain; the invoke overhead from a one-op
graph. Step 2, on real int8 example models: a scale and per-kernel overhead for quantized
kernels (:func:`fit_quantized`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeopt.estimate import estimate, kernel_work
from edgeopt.measure.calibrate.micro import CHAIN, COMPUTE, ELT_SHAPE, TINY_N
from edgeopt.profiles import FUSIONS, HardwareProfile

# (ONNX file, measured median latency in ms)
Timed = tuple[Path, float]

_CLASSES = ("dense_conv", "pointwise_conv", "depthwise_conv", "gemm")


@dataclass(frozen=True)
class CalibrationResult:
    """Fitted host numbers (GOP/s, GB/s, us, fractions of peak per op class and dtype)."""

    peak_gops: dict[str, float]
    efficiency: dict[str, dict[str, float]]
    bandwidth_gbs: float
    kernel_overhead_us: float
    invoke_overhead_us: float
    machine: str
    kernel_overhead_us_int8: float | None = None
    bench_ms: dict[str, float] = field(default_factory=dict)
    kendall_tau: float | None = None
    median_rel_error: float | None = None
    n_models: int = 0
    extra_ms: list[float] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Human-readable lines (all measured on this host)."""
        lines = [
            f"machine: {self.machine}",
            "peak (measured): "
            + ", ".join(f"{d} {g:.1f} GOP/s" for d, g in self.peak_gops.items()),
            f"bandwidth (measured, cache-resident tensors): {self.bandwidth_gbs:.1f} GB/s",
            f"per-kernel overhead (measured): {self.kernel_overhead_us:.2f} us; "
            f"invoke overhead {self.invoke_overhead_us:.1f} us",
        ]
        if self.kernel_overhead_us_int8 is not None:
            lines.append(
                f"per-kernel overhead in quantized graphs (fitted on example models): "
                f"{self.kernel_overhead_us_int8:.2f} us"
            )
        for d, t in self.efficiency.items():
            lines.append(f"efficiency {d}: " + ", ".join(f"{k} {v:.3f}" for k, v in t.items()))
        if self.kendall_tau is not None and self.median_rel_error is not None:
            lines.append(
                f"fit check on {self.n_models} example models: Kendall tau {self.kendall_tau:.3f}, "
                f"median relative error {self.median_rel_error:.1%}"
            )
        return lines


def fit(times: dict[str, float], paths: dict[str, Path], machine: str) -> CalibrationResult:
    """Fit peaks, efficiencies, bandwidth and overheads from micro-benchmark medians.

    ``times`` maps each micro-benchmark name (see ``build_micro``) to its median in ms and
    ``paths`` to its ONNX file, whose work the cost model counts.
    """
    ovh_s = max((times["tinyN"] - times["tiny1"]) / (TINY_N - 1), 0.0) * 1e-3
    invoke_s = max(times["tiny1"] * 1e-3 - ovh_s, 0.0)
    elt_bytes = 2 * 4 * float(np.prod(ELT_SHAPE))
    elt_per_op = max(times["elementwise"] * 1e-3 - invoke_s, 1e-9) / CHAIN - ovh_s
    bandwidth_gbs = elt_bytes / max(elt_per_op, 1e-9) / 1e9
    achieved = _achieved_gops(times, paths, invoke_s, ovh_s)
    peak = {d: max(a.values()) for d, a in achieved.items()}
    eff = {
        d: {c: round(min(a[c] / peak[d], 1.0), 4) for c in _CLASSES} for d, a in achieved.items()
    }
    eff["fp32"]["quantize"] = round(
        min(_quantize_eff(times, invoke_s, ovh_s, peak["fp32"]), 1.0), 5
    )
    return CalibrationResult(
        peak_gops={d: round(v, 2) for d, v in peak.items()},
        efficiency=eff,
        bandwidth_gbs=round(bandwidth_gbs, 2),
        kernel_overhead_us=round(ovh_s * 1e6, 3),
        invoke_overhead_us=round(invoke_s * 1e6, 2),
        machine=machine,
        bench_ms={k: round(v, 5) for k, v in times.items()},
    )


def _achieved_gops(
    times: dict[str, float], paths: dict[str, Path], invoke_s: float, ovh_s: float
) -> dict[str, dict[str, float]]:
    """GOP/s each compute micro-benchmark reached, per dtype, net of fixed overheads."""
    achieved: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    for name in COMPUTE:
        for dtype in ("fp32", "int8"):
            key = f"{dtype}/{name}"
            work = kernel_work(paths[key], frozenset(FUSIONS))
            ops = sum(k.ops for k in work if k.op_class != "elementwise")
            busy = times[key] * 1e-3 - invoke_s - len(work) * ovh_s
            achieved[dtype][name] = ops / max(busy, 1e-9) / 1e9
    return achieved


def _quantize_eff(times: dict[str, float], invoke_s: float, ovh_s: float, peak: float) -> float:
    """Quantize/DequantizeLinear: elements per second relative to the fp32 peak."""
    numel = float(np.prod(ELT_SHAPE))
    return statistics.median(
        numel / max(times[op] * 1e-3 - invoke_s - ovh_s, 1e-9) / 1e9 / peak
        for op in ("QuantizeLinear", "DequantizeLinear")
    )


def fit_quantized(profile: HardwareProfile, timed: Sequence[Timed]) -> tuple[float, float]:
    """Fit quantized-graph kernels on real int8 models: ``(scale, overhead_us)`` such that
    each quantized kernel's time is ``scale * roofline + overhead``.

    Micro-benchmark chains run in one NHWC region; real QDQ models add layout transposes and
    float fallbacks per layer, which this absorbs. Weighted least squares on relative error.
    Only models whose file name contains ``.int8.`` count.
    """
    ovh_ms = profile.units[0].kernel_overhead_us_int8 * 1e-3
    rows, ys, ws = [], [], []
    for path, meas in timed:
        if ".int8." not in path.name:
            continue
        e = estimate(path, profile)
        quant = [
            c
            for c in e.nodes
            if c.dtype == "int8" or c.op in ("QuantizeLinear", "DequantizeLinear")
        ]
        c_ms = sum(c.time_ms - ovh_ms for c in quant)
        rest = e.latency_ms - c_ms - len(quant) * ovh_ms
        rows.append([c_ms, float(len(quant))])
        ys.append(meas - rest)
        ws.append(1.0 / meas)
    if len(rows) < 2:
        return 1.0, profile.units[0].kernel_overhead_us_int8
    a_mat = np.array(rows) * np.array(ws)[:, None]
    y = np.array(ys) * np.array(ws)
    (scale, o_ms), *_ = np.linalg.lstsq(a_mat, y, rcond=None)
    scale = float(np.clip(scale, 0.5, 4.0))
    o_ms = float(np.dot(a_mat[:, 1], y - scale * a_mat[:, 0]) / np.dot(a_mat[:, 1], a_mat[:, 1]))
    return round(scale, 4), round(max(o_ms * 1e3, 0.0), 3)


def agreement(profile: HardwareProfile, timed: Sequence[Timed]) -> tuple[float, float]:
    """``(Kendall tau, median relative error)`` of the cost model's latency against ``timed``."""
    from scipy.stats import kendalltau

    est = [estimate(p, profile).latency_ms for p, _ in timed]
    measured = [m for _, m in timed]
    tau = float(kendalltau(est, measured).statistic)
    err = statistics.median(abs(e - m) / m for e, m in zip(est, measured, strict=True))
    return tau, err
