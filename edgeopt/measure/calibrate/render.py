"""The profile TOML written by ``edgeopt profiles calibrate``: fitted numbers marked
``measured``, everything else as in the shipped host profile (``render_host_toml``) or, for a
device reached by a ``[runner]``, as in that device's own profile (``render_device_toml``)."""

from __future__ import annotations

import datetime as _dt
import json

import psutil

from edgeopt.measure.calibrate.fit import CalibrationResult
from edgeopt.profiles import RUNNER_SPECS, HardwareProfile, RunnerSpec, ValueSource

_CLASSES = ("dense_conv", "pointwise_conv", "depthwise_conv", "gemm")
# Public documents only: the file is read on machines that have none of this project's notes.
S15 = (
    'M. Horowitz, "Computing\'s energy problem (and what we can do about it)", IEEE ISSCC 2014, '
    "doi:10.1109/ISSCC.2014.6757323 (45 nm energy table)"
)
THREADS_NOTE = (
    "a setting: timing uses 1 intra-op thread, the steadiest; 2 threads were slower than 1 on "
    "the 2-vCPU VMs edgeopt was developed on"
)


def render_host_toml(base: HardwareProfile, r: CalibrationResult, command: str) -> str:
    """The host profile TOML with the fitted numbers (everything else as in ``base``)."""
    lines = [
        *_head_lines(base, r),
        *_unit_lines(r),
        *_host_power_lines(),
        "",
        *_calibration_lines(r, command),
        "",
        "[sources]",
        'CAL = "edgeopt profiles calibrate on this host (see [calibration])"',
        f"S15 = {_s(S15)}",
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
        "# Written by `edgeopt profiles calibrate`: every 'measured' value comes from its",
        "# micro-benchmarks, run on the machine in [calibration]; every 'assumption' says why",
        "# in its note. Re-run the command on a new machine.",
        'schema = "edgeopt-hw-profile/1"',
        "",
        "[profile]",
        'name = "host-cpu"',
        'kind = "cpu"',
        f'description = "This host ({r.machine.split(",")[0]}): ONNX Runtime CPU EP, 1 thread"',
        'aliases = ["cpu", "host"]',
        "measured = true",
        f'threads = {{ v = 1, kind = "assumption", note = {_s(THREADS_NOTE)} }}',
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


def _unit_lines(r: CalibrationResult, uid: str = "cpu", kind: str = "cpu") -> list[str]:
    """[units.UID] and its efficiency tables, then the host's power table (``uid`` "cpu")."""
    e32, e8 = r.efficiency["fp32"], r.efficiency["int8"]
    ovh8 = r.kernel_overhead_us_int8
    return [
        f"[units.{uid}]",
        f'kind = "{kind}"',
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
        f"[units.{uid}.efficiency]",
        *(f"{c} = {_m(e32[c])}" for c in _CLASSES),
        f"quantize = {_m(e32['quantize'], 'one QuantizeLinear / DequantizeLinear, 128 KB')}",
        'elementwise = { v = 1.0, kind = "assumption", note = "memory-bound: the bandwidth term '
        'dominates" }',
        'pool = { v = 1.0, kind = "assumption", note = "memory-bound like elementwise" }',
        'data_movement = { v = 1.0, kind = "assumption", note = "memory-bound like elementwise" }',
        "",
        f"[units.{uid}.efficiency_int8]",
        *(f"{c} = {_m(e8[c])}" for c in _CLASSES),
    ]


def _host_power_lines() -> list[str]:
    return [
        "",
        "[units.cpu.power]",
        'idle_w = { v = 1.0, kind = "assumption", note = "no power reading in a VM; a guess '
        "at one core's idle share\" }",
        'active_w = { v = 3.5, kind = "assumption", note = "EPYC TDP / cores ~2.5-5 W per core; '
        'no RAPL in a VM" }',
    ]


def _calibration_lines(r: CalibrationResult, command: str) -> list[str]:
    lines = [
        "[calibration]",
        f'date = "{_dt.date.today().isoformat()}"',
        'method = "edgeopt profiles calibrate: ORT micro-benchmarks, interleaved medians"',
        f"command = {_s(command)}",
        f"machine = {_s(r.machine)}",
    ]
    if r.kendall_tau is not None and r.median_rel_error is not None:
        lines += [
            f"kendall_tau = {r.kendall_tau:.4f}",
            f"median_rel_error = {r.median_rel_error:.4f}",
            f"n_models = {r.n_models}",
        ]
    return lines


def _dram_bytes() -> float:
    return float(psutil.virtual_memory().total)


# --------------------------------------------------------------------------------------------
# A device's profile (calibrated through its [runner])


def _s(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _sourced(value: object, src: ValueSource | None) -> str:
    """``value`` with its source as in the base profile (bare when it had none)."""
    v = json.dumps(value)
    if src is None or src.kind == "unstated":
        return v
    parts = [f"v = {v}", f"kind = {_s(src.kind)}"]
    if src.src:
        parts.append(f"src = {_s(src.src)}")
    if src.note:
        parts.append(f"note = {_s(src.note)}")
    return "{ " + ", ".join(parts) + " }"


def render_device_toml(
    base: HardwareProfile, r: CalibrationResult, command: str, *, dram_bytes: float
) -> str:
    """``base`` (a profile with a ``[runner]``) with one compute unit (the first of
    ``base``'s, as the device's runtime with its providers behaves) fitted on the device;
    settings, power and sources as in ``base``; ``dram_bytes`` as the device reports it."""
    assert base.runner is not None and base.memory is not None and base.runtime is not None
    prov, q, rt, u = base.provenance, base.quantization, base.runtime, base.units[0]
    dram = (
        _m(dram_bytes, "physical memory the device reports")
        if dram_bytes
        else _sourced(base.memory.dram_bytes, prov.get("memory.dram_bytes"))
    )
    lines = [
        f"# {base.name}, measured on {base.runner.device}: ONNX Runtime "
        f"({', '.join(base.runner.providers)}), {base.threads} intra-op thread(s).",
        "# Written by `edgeopt profiles calibrate --target ...`: every 'measured' value comes from",
        "# its micro-benchmarks, timed on the device in [calibration].",
        'schema = "edgeopt-hw-profile/1"',
        "",
        "[profile]",
        f"name = {_s(base.name)}",
        f'kind = "{base.kind.value}"',
        f"description = {_s(base.description)}",
        f"aliases = {json.dumps(list(base.aliases))}",
        "measured = true",
        f"threads = {_sourced(base.threads, prov.get('profile.threads'))}",
        "calibrated = true",
        "",
        "[quantization]",
        f"modes = {json.dumps(list(q.modes))}",
        f'activation_type = "{q.activation_type}"',
        f'weight_type = "{q.weight_type}"',
        f"per_channel = {json.dumps(q.per_channel)}",
        f"int8_only = {json.dumps(q.int8_only)}",
        "",
        "[pruning]",
        "channel_multiple = "
        + _sourced(base.pruning.channel_multiple, prov.get("pruning.channel_multiple")),
        "",
        "[runtime]",
        f'partition_policy = "{rt.partition_policy}"',
        f"invoke_overhead_us = {_m(r.invoke_overhead_us, 'one-op graph minus one kernel')}",
        f"fusions = {json.dumps(sorted(rt.fusions))}",
        f"ort_providers = {json.dumps(list(base.runner.providers))}",
        "",
        "[memory]",
        f"dram_bytes = {dram}",
        'weights_in = "dram"',
        'activations_in = "dram"',
        "",
        "[energy]",
        f"pj_per_byte = {_sourced(base.pj_per_byte, prov.get('energy.pj_per_byte'))}",
        "",
        *_unit_lines(r, u.id, u.kind),
        "",
        f"[units.{u.id}.power]",
        f"idle_w = {_sourced(u.power.idle_w, prov.get(f'units.{u.id}.power.idle_w'))}",
        f"active_w = {_sourced(u.power.active_w, prov.get(f'units.{u.id}.power.active_w'))}",
        *(
            f"pj_per_op_{d} = {_sourced(v, prov.get(f'units.{u.id}.power.pj_per_op_{d}'))}"
            for d, v in u.power.pj_per_op.items()
        ),
        "",
        *_calibration_lines(r, command),
        "",
        *_runner_lines(base.runner),
        "",
        "[sources]",
        f"CAL = {_s(f'edgeopt profiles calibrate on {base.runner.device} (see [calibration])')}",
        *(f"{k} = {_s(v)}" for k, v in base.sources.items() if k != "CAL"),
        "",
    ]
    return "\n".join(lines)


def _runner_lines(spec: RunnerSpec) -> list[str]:
    """The ``[runner]`` table, local paths absolute (the new file may live elsewhere)."""
    lines = ["[runner]", f'kind = "{spec.kind}"']
    for key in RUNNER_SPECS[spec.kind].KEYS:
        value = getattr(spec, key)
        if value is not None:
            lines.append(f"{key} = {value if isinstance(value, int) else _s(str(value))}")
    lines.append(f"providers = {json.dumps(list(spec.providers))}")
    if spec.threads is not None:
        lines.append(f"threads = {spec.threads}")
    lines.append(f"timeout_s = {spec.timeout_s}")
    return lines
