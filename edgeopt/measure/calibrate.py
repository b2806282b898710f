"""Calibrate the host profile with ONNX Runtime micro-benchmarks, then check it on real models.

Micro-benchmarks are small generated graphs, each a chain of identical layers so that the
per-inference invoke overhead is amortised: a dense 3x3 conv, a 1x1 conv, a depthwise conv, a
gemm, an elementwise chain and a chain of tiny ops (per-kernel overhead), in fp32 and as int8
QDQ models (uint8 activations, int8 per-channel weights, the x86 fast path). All are timed in
one process, interleaved over rounds, and summarised by the median of per-round medians, since
this VM's speed drifts.

Fit, per dtype: ``peak`` = the best throughput any compute benchmark reached; per op class
``efficiency = achieved / peak``; ``kernel_overhead`` from the tiny-op chain; ``bandwidth`` from
the elementwise chain; the invoke overhead from a one-op graph.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.profiles import FUSIONS, HardwareProfile, load_profile, validate_profile_file

_CHAIN = 8


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


# --------------------------------------------------------------------------------------------
# Timing


def session(path: str | Path, threads: int) -> Any:
    """An ORT CPU session configured like the host measurements (sequential, ``threads``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_interleaved(
    models: Sequence[tuple[str | Path, np.ndarray]],
    *,
    threads: int,
    rounds: int = 7,
    round_ms: float = 15.0,
) -> list[float]:
    """Median latency (ms) of each model: ``rounds`` rounds that run every model in turn
    (order alternating), each model ~``round_ms`` per round; the median of round medians."""
    sessions = []
    for path, x in models:
        s = session(path, threads)
        feed = {s.get_inputs()[0].name: x}
        for _ in range(5):
            s.run(None, feed)
        t0 = time.perf_counter()
        s.run(None, feed)
        one = max(time.perf_counter() - t0, 1e-6)
        reps = int(min(max(round_ms / 1e3 / one, 3), 400))
        sessions.append((s, feed, reps))
    medians: list[list[float]] = [[] for _ in models]
    for r in range(rounds):
        idx = list(range(len(sessions)))
        if r % 2:
            idx.reverse()
        for i in idx:
            s, feed, reps = sessions[i]
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                s.run(None, feed)
                ts.append(time.perf_counter() - t0)
            medians[i].append(statistics.median(ts) * 1e3)
    return [statistics.median(m) for m in medians]


# --------------------------------------------------------------------------------------------
# Micro-benchmark graphs


def _save(
    nodes: list, x_shape: list[int], y: str, y_shape: list[int], inits: list, path: Path
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _conv_chain(path: Path, c: int, hw: int, k: int, group: int, n: int = _CHAIN) -> Path:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(n):
        w = rng.standard_normal((c, c // group, k, k)).astype(np.float32) * 0.1
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}"),
        ]
        pad = k // 2
        nodes.append(
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[pad] * 4, group=group)
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    return _save(nodes, [1, c, hw, hw], x, [1, c, hw, hw], inits, path)


def _gemm_chain(path: Path, d: int, n: int = _CHAIN) -> Path:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(n):
        w = rng.standard_normal((d, d)).astype(np.float32) * 0.05
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(d, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"]))
        nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"]))
        x = f"r{i}"
    return _save(nodes, [1, d], x, [1, d], inits, path)


def _qdq_single(path: Path, op: str, shape: list[int]) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    src, dst = (TensorProto.FLOAT, TensorProto.UINT8)
    if op == "DequantizeLinear":
        src, dst = dst, src
    graph = helper.make_graph(
        [helper.make_node(op, ["input", "s", "zp"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("input", src, shape)],
        [helper.make_tensor_value_info("y", dst, shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _eltwise_chain(path: Path, shape: list[int], n: int) -> Path:
    from onnx import helper

    nodes, x = [], "input"
    for i in range(n):
        op = "Sigmoid" if i % 2 else "Neg"  # never fused or removed by ORT
        nodes.append(helper.make_node(op, [x], [f"e{i}"]))
        x = f"e{i}"
    return _save(nodes, shape, x, shape, [], path)


def _quantize(src: Path, dst: Path, shape: list[int]) -> Path:
    """int8 QDQ: uint8 activations, int8 per-channel weights (the x86 VNNI path)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._it = iter(
                [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    import logging

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(
        str(src),
        str(dst),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


# --------------------------------------------------------------------------------------------
# Fit


_COMPUTE = {
    # op class: (builder, input shape)
    "dense_conv": (lambda p: _conv_chain(p, 32, 16, 3, 1), [1, 32, 16, 16]),
    "dense_conv_large": (lambda p: _conv_chain(p, 64, 32, 3, 1, 4), [1, 64, 32, 32]),
    "pointwise_conv": (lambda p: _conv_chain(p, 64, 16, 1, 1), [1, 64, 16, 16]),
    "depthwise_conv": (lambda p: _conv_chain(p, 64, 16, 3, 64), [1, 64, 16, 16]),
    "gemm": (lambda p: _gemm_chain(p, 256), [1, 256]),
}
_ELT_SHAPE = [1, 32, 32, 32]
_TINY_SHAPE = [1, 4, 2, 2]
_TINY_N = 64


def build_micro(tmp: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Micro-benchmark models and their inputs, keyed by name."""
    models: dict[str, tuple[Path, list[int]]] = {}
    for name, (build, shape) in _COMPUTE.items():
        fp = build(tmp / f"{name}.onnx")
        models[f"fp32/{name}"] = (fp, shape)
        models[f"int8/{name}"] = (_quantize(fp, tmp / f"{name}.int8.onnx", shape), shape)
    models["elementwise"] = (_eltwise_chain(tmp / "elt.onnx", _ELT_SHAPE, _CHAIN), _ELT_SHAPE)
    # Per-kernel overhead: chains of 1 and _TINY_N tiny 1x1 convs (real conv kernels, ~no work).
    models["tiny1"] = (_conv_chain(tmp / "tiny1.onnx", 4, 2, 1, 1, 1), _TINY_SHAPE)
    models["tinyN"] = (_conv_chain(tmp / "tinyN.onnx", 4, 2, 1, 1, _TINY_N), _TINY_SHAPE)
    for op in ("QuantizeLinear", "DequantizeLinear"):
        models[op] = (_qdq_single(tmp / f"{op}.onnx", op, _ELT_SHAPE), _ELT_SHAPE)
    rng = np.random.default_rng(0)
    out = {}
    for name, (p, shape) in models.items():
        x = rng.standard_normal(shape).astype(np.float32)
        if name == "DequantizeLinear":
            x = (x * 40 + 128).clip(0, 255).astype(np.uint8)
        out[name] = (p, x)
    return out


def fit(times: dict[str, float], paths: dict[str, Path], machine: str) -> CalibrationResult:
    # (times: median ms per micro-benchmark; paths: their ONNX files)
    """Fit peaks, efficiencies, bandwidth and overheads from micro-benchmark medians (ms)."""
    from edgeopt.measure import estimate as est

    ovh_s = max((times["tinyN"] - times["tiny1"]) / (_TINY_N - 1), 0.0) * 1e-3
    invoke_s = max(times["tiny1"] * 1e-3 - ovh_s, 0.0)
    elt_bytes = 2 * 4 * float(np.prod(_ELT_SHAPE))
    elt_per_op = max(times["elementwise"] * 1e-3 - invoke_s, 1e-9) / _CHAIN - ovh_s
    bandwidth_gbs = elt_bytes / max(elt_per_op, 1e-9) / 1e9

    achieved: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    for name in _COMPUTE:
        for dtype in ("fp32", "int8"):
            key = f"{dtype}/{name}"
            g = est._Graph(est._load(paths[key])[0])
            kernels = [k for k in est._build_kernels(g, frozenset(FUSIONS)) if k.ops]
            ops = sum(k.ops for k in kernels if k.op_class != "elementwise")
            n_kernels = len(est._build_kernels(g, frozenset(FUSIONS)))
            busy = times[key] * 1e-3 - invoke_s - n_kernels * ovh_s
            achieved[dtype][name] = ops / max(busy, 1e-9) / 1e9
    peak = {d: max(a.values()) for d, a in achieved.items()}
    # Quantize/DequantizeLinear: elements per second relative to the fp32 peak.
    numel = float(np.prod(_ELT_SHAPE))
    q_eff = statistics.median(
        numel / max(times[op] * 1e-3 - invoke_s - ovh_s, 1e-9) / 1e9 / peak["fp32"]
        for op in ("QuantizeLinear", "DequantizeLinear")
    )
    eff: dict[str, dict[str, float]] = {}
    for d, a in achieved.items():
        table = {
            c: min(a[c] / peak[d], 1.0)
            for c in ("dense_conv", "pointwise_conv", "depthwise_conv", "gemm")
        }
        eff[d] = {k: round(v, 4) for k, v in table.items()}
    eff["fp32"]["quantize"] = round(min(q_eff, 1.0), 5)
    return CalibrationResult(
        peak_gops={d: round(v, 2) for d, v in peak.items()},
        efficiency=eff,
        bandwidth_gbs=round(bandwidth_gbs, 2),
        kernel_overhead_us=round(ovh_s * 1e6, 3),
        invoke_overhead_us=round(invoke_s * 1e6, 2),
        machine=machine,
        bench_ms={k: round(v, 5) for k, v in times.items()},
    )


# --------------------------------------------------------------------------------------------
# Writing the profile


def render_host_toml(base: HardwareProfile, r: CalibrationResult, command: str) -> str:
    """The host profile TOML with the fitted numbers (everything else as in ``base``)."""
    today = _dt.date.today().isoformat()
    q = base.quantization
    cal = [
        "[calibration]",
        f'date = "{today}"',
        'method = "edgeopt profiles calibrate: ORT micro-benchmarks, interleaved medians"',
        f'command = "{command}"',
        f'machine = "{r.machine}"',
    ]
    if r.kendall_tau is not None and r.median_rel_error is not None:
        cal += [
            f"kendall_tau = {r.kendall_tau:.4f}",
            f"median_rel_error = {r.median_rel_error:.4f}",
            f"n_models = {r.n_models}",
        ]

    def m(v: float, note: str = "") -> str:
        extra = f', note = "{note}"' if note else ""
        return f'{{ v = {v}, kind = "measured", src = "CAL"{extra} }}'

    e32, e8 = r.efficiency["fp32"], r.efficiency["int8"]
    lines = [
        "# This host, measured: ONNX Runtime CPU EP, 1 intra-op thread.",
        "# Written by `edgeopt profiles calibrate`; every 'measured' value comes from the",
        "# micro-benchmarks described in edgeopt/measure/calibrate.py, run on the machine in",
        "# [calibration]. Re-run the command on a new machine.",
        'schema = "edgeopt-hw-profile/1"',
        "",
        "[profile]",
        'name = "host-cpu"',
        'kind = "cpu"',
        f'description = "This host ({r.machine.split(",")[0]}): ONNX Runtime CPU EP, 1 thread"',
        'aliases = ["cpu", "host"]',
        "measured = true",
        'threads = { v = 1, kind = "measured", src = "R24", note = "2 intra-op threads were '
        'slower than 1 on these 2-vCPU VMs" }',
        "calibrated = true",
        "",
        "[quantization]",
        f"modes = {list(q.modes)!r}".replace("'", '"'),
        f'activation_type = "{q.activation_type}"     # x86 u8s8 VNNI fast path',
        f'weight_type = "{q.weight_type}"',
        f"per_channel = {str(q.per_channel).lower()}",
        f"int8_only = {str(q.int8_only).lower()}",
        "",
        "[pruning]",
        'channel_multiple = { v = 8, kind = "assumption", note = "ORT NCHWc blocks of 8/16 '
        'channels" }',
        "",
        "[runtime]",
        'partition_policy = "multi"',
        f"invoke_overhead_us = {m(r.invoke_overhead_us, 'one-op graph minus one kernel')}",
        'fusions = ["conv_bn", "conv_act", "conv_add", "gemm_act", "qdq"]',
        'ort_providers = ["CPUExecutionProvider"]',
        "",
        "[memory]",
        f"dram_bytes = {m(_dram_bytes(), 'psutil total memory')}",
        'weights_in = "dram"',
        'activations_in = "dram"',
        "",
        "[energy]",
        'pj_per_byte = { v = 12.5, kind = "paper", src = "S15", note = "64b read from 1 MB SRAM '
        '= 100 pJ at 45 nm; small models stay in cache" }',
        "",
        "[units.cpu]",
        'kind = "cpu"',
        f"peak_gops_fp32 = {m(r.peak_gops['fp32'], 'best fp32 micro-benchmark throughput')}",
        "peak_gops_int8 = "
        + m(r.peak_gops["int8"], "best int8 QDQ u8s8 micro-benchmark / scale fitted on models"),
        f"bandwidth_gbs = {m(r.bandwidth_gbs, 'elementwise chain, 128 KB tensors (cache)')}",
        f"kernel_overhead_us = {m(r.kernel_overhead_us, '64 tiny 1x1 convs minus 1')}",
        "kernel_overhead_us_int8 = "
        + m(
            r.kernel_overhead_us_int8
            if r.kernel_overhead_us_int8 is not None
            else r.kernel_overhead_us,
            "QDQ graphs: fitted on 6 example int8 models (Q/DQ, NHWC transposes)",
        ),
        'supported_ops = "all"',
        "",
        "[units.cpu.efficiency]",
        *(f"{c} = {m(e32[c])}" for c in ("dense_conv", "pointwise_conv", "depthwise_conv", "gemm")),
        f"quantize = {m(e32['quantize'], 'one QuantizeLinear / DequantizeLinear, 128 KB')}",
        'elementwise = { v = 1.0, kind = "assumption", note = "memory-bound: the bandwidth term '
        'dominates" }',
        'pool = { v = 1.0, kind = "assumption", note = "memory-bound like elementwise" }',
        'data_movement = { v = 1.0, kind = "assumption", note = "memory-bound" }',
        "",
        "[units.cpu.efficiency_int8]",
        *(f"{c} = {m(e8[c])}" for c in ("dense_conv", "pointwise_conv", "depthwise_conv", "gemm")),
        "",
        "[units.cpu.power]",
        'idle_w = { v = 1.0, kind = "assumption" }',
        'active_w = { v = 3.5, kind = "assumption", note = "EPYC TDP / cores ~2.5-5 W per core; '
        'no RAPL in a VM" }',
        "",
        *cal,
        "",
        "[sources]",
        'CAL = "edgeopt profiles calibrate on this host (see [calibration])"',
        'R24 = "/work/shared/research/hardware.md §2.4 (host thread-scaling measurements)"',
        'S15 = "M. Horowitz, Computing\'s energy problem, ISSCC 2014 (45 nm energy table)"',
        "",
    ]
    return "\n".join(lines)


def _dram_bytes() -> float:
    import psutil

    return float(psutil.virtual_memory().total)


# --------------------------------------------------------------------------------------------
# Check against real models


FIT_WIDTH = 12  # example models used for fitting; the accuracy benchmark uses other widths


def fit_models(tmp: Path) -> list[tuple[str, Path, list[int]]]:
    """Example models for the second fitting step: the three zoo families at width 12, inputs
    16x16 and 32x32, fp32 and int8 QDQ: (name, path, input shape)."""
    from edgeopt.export import export_onnx
    from edgeopt.zoo import BUILDERS

    out = []
    for fam, build in BUILDERS.items():
        model = build(in_channels=1, width=FIT_WIDTH)
        for hw in (16, 32):
            name = f"{fam}-w{FIT_WIDTH}-{hw}x{hw}"
            shape = [1, 1, hw, hw]
            fp = export_onnx(model, (1, hw, hw), tmp / f"{name}.onnx")
            out.append((name, fp, shape))
            out.append((f"{name}-int8", _quantize(fp, tmp / f"{name}.int8.onnx", shape), shape))
    return out


def fit_quantized(
    profile: HardwareProfile,
    models: Sequence[tuple[str, Path, list[int]]],
    measured: Sequence[float],
) -> tuple[float, float]:
    """Fit quantized-graph kernels on real int8 models: ``(scale, overhead_us)`` such that
    each quantized kernel's time is ``scale * roofline + overhead``.

    Micro-benchmark chains run in one NHWC region; real QDQ models add layout transposes and
    float fallbacks per layer, which this absorbs. Weighted least squares on relative error.
    """
    from edgeopt.measure.estimate import estimate

    ovh_ms = profile.units[0].kernel_overhead_us_int8 * 1e-3
    rows, ys, ws = [], [], []
    for (_, path, _), meas in zip(models, measured, strict=True):
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


def calibrate_host(
    out: Path,
    *,
    rounds: int = 7,
    check: bool = True,
    command: str = "edgeopt profiles calibrate",
    log: Callable[[str], None] | None = None,
    extra: Sequence[tuple[Path, np.ndarray]] = (),
) -> CalibrationResult:
    """Fit the host profile on this machine and write it to ``out`` (atomically, validated).

    One interleaved timing run covers the micro-benchmarks, (with ``check``) twelve example
    models and any ``extra`` models (their medians come back in ``extra_ms``, so a caller's
    evaluation shares the calibration's machine state; this VM's speed drifts between runs).
    Step 1 fits peaks, efficiencies, bandwidth and overheads from the micro-benchmarks; step 2
    fits the quantized-kernel scale and overhead on the int8 example models; the agreement on
    all twelve (in-sample) is recorded in ``[calibration]``.
    """
    import dataclasses

    from edgeopt.measure.runtime import host_description

    base = load_profile("cpu")
    with tempfile.TemporaryDirectory(prefix="edgeopt-calibrate-") as td:
        tmp = Path(td)
        micro = build_micro(tmp)
        examples = fit_models(tmp) if check else []
        rng = np.random.default_rng(1)
        feeds = [*micro.values()]
        feeds += [(p, rng.standard_normal(s).astype(np.float32)) for _, p, s in examples]
        feeds += list(extra)
        if log:
            log(
                f"  timing {len(micro)} micro-benchmarks, {len(examples)} example models"
                + (f" and {len(extra)} more" if extra else "")
                + f", {rounds} interleaved rounds ..."
            )
        times = time_interleaved(feeds, threads=base.threads, rounds=rounds)
        micro_t = dict(zip(micro, times[: len(micro)], strict=True))
        ex_t = times[len(micro) : len(micro) + len(examples)]
        extra_t = times[len(micro) + len(examples) :]
        result = fit(micro_t, {k: v[0] for k, v in micro.items()}, host_description())
        _write(out, render_host_toml(base, result, command))
        if check:
            scale, o8 = fit_quantized(validate_profile_file(out), examples, ex_t)
            eff = {d: dict(t) for d, t in result.efficiency.items()}
            eff["fp32"]["quantize"] = round(min(eff["fp32"]["quantize"] / scale, 1.0), 5)
            peak = dict(result.peak_gops)
            peak["int8"] = round(peak["int8"] / scale, 2)
            result = dataclasses.replace(
                result, kernel_overhead_us_int8=o8, efficiency=eff, peak_gops=peak
            )
            _write(out, render_host_toml(base, result, command))
            tau, err = _agreement(validate_profile_file(out), examples, ex_t)
            result = dataclasses.replace(
                result, kendall_tau=tau, median_rel_error=err, n_models=len(examples)
            )
            _write(out, render_host_toml(base, result, command))
        result = dataclasses.replace(result, extra_ms=list(extra_t))
    validate_profile_file(out)
    return result


def _agreement(
    profile: HardwareProfile,
    models: Sequence[tuple[str, Path, list[int]]],
    measured: Sequence[float],
) -> tuple[float, float]:
    from scipy.stats import kendalltau

    from edgeopt.measure.estimate import estimate

    est = [estimate(p, profile).latency_ms for _, p, _ in models]
    tau = float(kendalltau(est, measured).statistic)
    err = statistics.median(abs(e - m) / m for e, m in zip(est, measured, strict=True))
    return tau, err


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
