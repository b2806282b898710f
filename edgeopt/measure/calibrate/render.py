"""The host profile TOML written by ``edgeopt profiles calibrate``: fitted numbers marked
``measured``, everything else as in the shipped host profile."""

from __future__ import annotations

import datetime as _dt

from edgeopt.measure.calibrate.fit import CalibrationResult
from edgeopt.profiles import HardwareProfile

_CLASSES = ("dense_conv", "pointwise_conv", "depthwise_conv", "gemm")


def render_host_toml(base: HardwareProfile, r: CalibrationResult, command: str) -> str:
    """The host profile TOML with the fitted numbers (everything else as in ``base``)."""
    lines = [
        *_head_lines(base, r),
        *_unit_lines(r),
        "",
        *_calibration_lines(r, command),
        "",
        "[sources]",
        'CAL = "edgeopt profiles calibrate on this host (see [calibration])"',
        'R24 = "/work/shared/research/hardware.md §2.4 (host thread-scaling measurements)"',
        'S15 = "M. Horowitz, Computing\'s energy problem, ISSCC 2014 (45 nm energy table)"',
        "",
    ]
    return "\n".join(lines)


def _m(v: float, note: str = "") -> str:
    """A measured value with its source (the calibration)."""
    extra = f', note = "{note}"' if note else ""
    return f'{{ v = {v}, kind = "measured", src = "CAL"{extra} }}'


def _head_lines(base: HardwareProfile, r: CalibrationResult) -> list[str]:
    """Everything before the compute unit: [profile] to [energy]."""
    q = base.quantization
    return [
        "# This host, measured: ONNX Runtime CPU EP, 1 intra-op thread.",
        "# Written by `edgeopt profiles calibrate`; every 'measured' value comes from the",
        "# micro-benchmarks described in edgeopt/measure/calibrate/, run on the machine in",
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
        f"invoke_overhead_us = {_m(r.invoke_overhead_us, 'one-op graph minus one kernel')}",
        'fusions = ["conv_bn", "conv_act", "conv_add", "gemm_act", "qdq"]',
        'ort_providers = ["CPUExecutionProvider"]',
        "",
        "[memory]",
        f"dram_bytes = {_m(_dram_bytes(), 'psutil total memory')}",
        'weights_in = "dram"',
        'activations_in = "dram"',
        "",
        "[energy]",
        'pj_per_byte = { v = 12.5, kind = "paper", src = "S15", note = "64b read from 1 MB SRAM '
        '= 100 pJ at 45 nm; small models stay in cache" }',
        "",
    ]


def _unit_lines(r: CalibrationResult) -> list[str]:
    """[units.cpu] and its efficiency and power tables."""
    e32, e8 = r.efficiency["fp32"], r.efficiency["int8"]
    ovh8 = r.kernel_overhead_us_int8
    return [
        "[units.cpu]",
        'kind = "cpu"',
        f"peak_gops_fp32 = {_m(r.peak_gops['fp32'], 'best fp32 micro-benchmark throughput')}",
        "peak_gops_int8 = "
        + _m(r.peak_gops["int8"], "best int8 QDQ u8s8 micro-benchmark / scale fitted on models"),
        f"bandwidth_gbs = {_m(r.bandwidth_gbs, 'elementwise chain, 128 KB tensors (cache)')}",
        f"kernel_overhead_us = {_m(r.kernel_overhead_us, '64 tiny 1x1 convs minus 1')}",
        "kernel_overhead_us_int8 = "
        + _m(
            ovh8 if ovh8 is not None else r.kernel_overhead_us,
            "QDQ graphs: fitted on 6 example int8 models (Q/DQ, NHWC transposes)",
        ),
        'supported_ops = "all"',
        "",
        "[units.cpu.efficiency]",
        *(f"{c} = {_m(e32[c])}" for c in _CLASSES),
        f"quantize = {_m(e32['quantize'], 'one QuantizeLinear / DequantizeLinear, 128 KB')}",
        'elementwise = { v = 1.0, kind = "assumption", note = "memory-bound: the bandwidth term '
        'dominates" }',
        'pool = { v = 1.0, kind = "assumption", note = "memory-bound like elementwise" }',
        'data_movement = { v = 1.0, kind = "assumption", note = "memory-bound" }',
        "",
        "[units.cpu.efficiency_int8]",
        *(f"{c} = {_m(e8[c])}" for c in _CLASSES),
        "",
        "[units.cpu.power]",
        'idle_w = { v = 1.0, kind = "assumption" }',
        'active_w = { v = 3.5, kind = "assumption", note = "EPYC TDP / cores ~2.5-5 W per core; '
        'no RAPL in a VM" }',
    ]


def _calibration_lines(r: CalibrationResult, command: str) -> list[str]:
    lines = [
        "[calibration]",
        f'date = "{_dt.date.today().isoformat()}"',
        'method = "edgeopt profiles calibrate: ORT micro-benchmarks, interleaved medians"',
        f'command = "{command}"',
        f'machine = "{r.machine}"',
    ]
    if r.kendall_tau is not None and r.median_rel_error is not None:
        lines += [
            f"kendall_tau = {r.kendall_tau:.4f}",
            f"median_rel_error = {r.median_rel_error:.4f}",
            f"n_models = {r.n_models}",
        ]
    return lines


def _dram_bytes() -> float:
    import psutil

    return float(psutil.virtual_memory().total)
