"""Parse one profile's TOML data into a validated :class:`HardwareProfile`, table by table.

Every error is a ConfigError naming the file, the key path and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.profiles.reader import (
    NONNEG_NUM,
    POS_NUM,
    Reader,
    boolean,
    did_you_mean,
    fraction,
    nonempty_str,
    nonneg,
    nonneg_int,
    one_of,
    pos,
    pos_int,
    signed_unit,
    str_list,
    string,
    subset_of,
)
from edgeopt.profiles.runner_spec import read_runner
from edgeopt.profiles.runtime_spec import IO_TYPES, PRECISION_HINTS, Runtime
from edgeopt.profiles.schema import (
    DTYPES,
    FUSIONS,
    MS_QUANT_OPS,
    MS_TRANSFORMER_OPS,
    OP_CLASSES,
    OPTIONAL_OP_CLASSES,
    QUANT_MODES,
    SCHEMA,
    UNIT_KINDS,
    Calibration,
    ComputeUnit,
    HardwareProfile,
    MemorySpec,
    PowerSpec,
    PruningSupport,
    QuantSupport,
    RuntimeSpec,
    TargetKind,
    ValueSource,
)

_TOP_KEYS = (
    "schema",
    "profile",
    "quantization",
    "pruning",
    "runtime",
    "memory",
    "energy",
    "units",
    "calibration",
    "runner",
    "sources",
)
_PROFILE_KEYS = ("name", "kind", "description", "aliases", "measured", "threads", "calibrated")
_PEAK_KEYS = tuple(f"peak_gops_{d}" for d in DTYPES)
_EFF_KEYS = tuple(f"efficiency_{d}" for d in DTYPES)
_UNIT_KEYS = (
    "kind",
    *_PEAK_KEYS,
    "bandwidth_gbs",
    "kernel_overhead_us",
    "kernel_overhead_us_int8",
    "supported_ops",
    "fallback",
    "link_bandwidth_gbs",
    "link_latency_us",
    "weight_cache_bytes",
    "efficiency",
    *_EFF_KEYS,
    "power",
)
_MEMORY_KEYS = (
    "dram_bytes",
    "sram_bytes",
    "flash_bytes",
    "activation_budget_bytes",
    "weights_in",
    "activations_in",
)
_CALIBRATION_KEYS = (
    "date",
    "method",
    "command",
    "machine",
    "kendall_tau",
    "median_rel_error",
    "n_models",
)


def parse_profile(data: dict[str, Any], file: str, source_path: Path | None) -> HardwareProfile:
    """The profile in ``data`` (parsed TOML of ``file``), every field validated."""
    prov: dict[str, ValueSource] = {}
    sources = _read_sources(data, file)
    top = Reader(file, "", data, _TOP_KEYS, prov, sources)
    schema = top.get("schema", string, f'"{SCHEMA}"')
    if schema != SCHEMA:
        raise ConfigError(f'{file}: schema: expected "{SCHEMA}", got {schema!r}')
    p = top.table("profile", _PROFILE_KEYS)
    kinds = [k.value for k in TargetKind]
    name = p.get("name", nonempty_str, "a non-empty string")
    kind = TargetKind(p.get("kind", one_of(kinds), f"one of {', '.join(kinds)}"))
    quant = _read_quantization(top)
    pr = top.table("pruning", ("channel_multiple",))
    pruning = PruningSupport(
        channel_multiple=pr.get("channel_multiple", pos_int, "a positive integer")
    )
    runtime = _read_runtime(top)
    memory = _read_memory(top)
    e = top.table("energy", ("pj_per_byte",))
    pj_per_byte = e.get("pj_per_byte", nonneg, f"{NONNEG_NUM} (pJ per byte)")
    units = _read_units(top)
    calibration = _read_calibration(top) if top.has("calibration") else None
    folder = source_path.parent if source_path is not None else None
    runner = read_runner(top, folder) if top.has("runner") else None
    measured = p.get("measured", boolean, "true or false")
    if runner is not None and not measured:
        raise ConfigError(
            f"{file}: profile.measured: a profile with [runner] is measured on its device",
            hint="set measured = true, or remove [runner] to estimate with this profile",
        )
    threads = p.get("threads", pos_int, "a positive integer")
    # [calibration] records results about the profile, not inputs that need a source.
    for key in [k for k in prov if k.startswith("calibration.")]:
        del prov[key]
    return HardwareProfile(
        name=name,
        kind=kind,
        description=p.get("description", nonempty_str, "a non-empty string"),
        measured=measured,
        threads=runner.threads if runner is not None and runner.threads else threads,
        quantization=quant,
        pruning=pruning,
        source_path=source_path,
        aliases=p.get("aliases", str_list, "a list of strings", default=()),
        calibrated=p.get("calibrated", boolean, "true or false", default=False),
        units=units,
        memory=memory,
        runtime=runtime,
        pj_per_byte=pj_per_byte,
        calibration=calibration,
        runner=runner,
        provenance=MappingProxyType(prov),
        sources=MappingProxyType(sources),
    )


def _read_sources(data: dict[str, Any], file: str) -> dict[str, str]:
    raw = data.get("sources", {})
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError(f'{file}: sources: expected a table of KEY = "document / URL"')
    return dict(raw)


def _read_quantization(top: Reader) -> QuantSupport:
    q = top.table(
        "quantization",
        (
            "modes",
            "activation_type",
            "weight_type",
            "per_channel",
            "int8_only",
            "activation_symmetric",
        ),
    )
    modes = q.get("modes", subset_of(QUANT_MODES), f"a list drawn from {', '.join(QUANT_MODES)}")
    if not modes:
        raise ConfigError(f"{q.file}: quantization.modes: expected at least one mode")
    quant = QuantSupport(
        modes=modes,
        activation_type=q.get("activation_type", one_of(("uint8", "int8")), '"uint8" or "int8"'),
        weight_type=q.get("weight_type", one_of(("uint8", "int8")), '"uint8" or "int8"'),
        per_channel=q.get("per_channel", boolean, "true or false"),
        int8_only=q.get("int8_only", boolean, "true or false"),
        activation_symmetric=q.get("activation_symmetric", boolean, "true or false", default=False),
    )
    if (quant.activation_type, quant.weight_type) == ("int8", "uint8"):
        raise ConfigError(
            f"{q.file}: quantization: int8 activations with uint8 weights is not an ONNX Runtime "
            "flavour",
            hint="use uint8/int8 (x86), uint8/uint8 (Qualcomm QNN) or int8/int8 (Arm, TensorRT)",
        )
    if quant.int8_only and set(modes) - {"int8_static"}:
        raise ConfigError(
            f'{q.file}: quantization.modes: an int8_only target runs only ["int8_static"], '
            f"got {list(modes)}"
        )
    return quant


def _read_runtime(top: Reader) -> RuntimeSpec:
    rt = top.table(
        "runtime",
        (
            "name",
            "precision_hint",
            "io_type",
            "partition_policy",
            "invoke_overhead_us",
            "fusions",
            "ort_providers",
        ),
    )
    names = [r.value for r in Runtime]
    name = rt.get("name", string, f"one of {', '.join(names)}", default=Runtime.ORT.value)
    if name not in names:
        raise ConfigError(
            f"{rt.file}: {rt.key_path('name')}: unknown runtime {name!r}"
            f"{did_you_mean(name, names)}",
            hint=f"[runtime] name is one of {', '.join(names)} (ort when left out)",
        )
    io_type = rt.get("io_type", one_of(IO_TYPES), f"one of {', '.join(IO_TYPES)}", default=None)
    if io_type is not None and name != Runtime.LITERT:
        raise ConfigError(
            f"{rt.file}: {rt.key_path('io_type')}: only a LiteRT runtime sets the file's "
            f"input/output type, and this one is {name!r}",
            hint='remove io_type, or set name = "litert"',
        )
    hints = PRECISION_HINTS
    return RuntimeSpec(
        name=Runtime(name),
        io_type=io_type,
        precision_hint=rt.get(
            "precision_hint", one_of(hints), f"one of {', '.join(hints)}", default="f32"
        ),
        partition_policy=rt.get(
            "partition_policy", one_of(("multi", "single_prefix")), '"multi" or "single_prefix"'
        ),
        invoke_overhead_us=rt.get("invoke_overhead_us", nonneg, f"{NONNEG_NUM} (us)"),
        fusions=frozenset(
            rt.get("fusions", subset_of(FUSIONS), f"a list drawn from {', '.join(FUSIONS)}")
        ),
        ort_providers=rt.get(
            "ort_providers", str_list, "a list of ORT execution provider names", default=()
        ),
    )


def _read_memory(top: Reader) -> MemorySpec:
    m = top.table("memory", _MEMORY_KEYS)
    bytes_ = f"{POS_NUM} (bytes)"
    memory = MemorySpec(
        dram_bytes=m.get("dram_bytes", pos, bytes_, default=None),
        sram_bytes=m.get("sram_bytes", pos, bytes_, default=None),
        flash_bytes=m.get("flash_bytes", pos, bytes_, default=None),
        activation_budget_bytes=m.get("activation_budget_bytes", pos, bytes_, default=None),
        weights_in=m.get("weights_in", one_of(("dram", "flash")), '"dram" or "flash"'),
        activations_in=m.get("activations_in", one_of(("dram", "sram")), '"dram" or "sram"'),
    )
    for level, attr in (
        (memory.weights_in, "weights_in"),
        (memory.activations_in, "activations_in"),
    ):
        if getattr(memory, f"{level}_bytes") is None:
            raise ConfigError(
                f'{m.file}: memory.{attr}: is "{level}" but memory.{level}_bytes is not given'
            )
    return memory


def _read_calibration(top: Reader) -> Calibration:
    c = top.table("calibration", _CALIBRATION_KEYS)
    return Calibration(
        date=c.get("date", string, "a date string"),
        method=c.get("method", string, "a string"),
        command=c.get("command", string, "a string", default=""),
        machine=c.get("machine", string, "a string", default=""),
        kendall_tau=c.get("kendall_tau", signed_unit, "a number in [-1, 1]", default=None),
        median_rel_error=c.get("median_rel_error", nonneg, NONNEG_NUM, default=None),
        n_models=c.get("n_models", nonneg_int, "an integer >= 0", default=0),
    )


# --------------------------------------------------------------------------------------------
# Compute units


def _read_units(top: Reader) -> tuple[ComputeUnit, ...]:
    raw = top.data.get("units")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{top.file}: units: expected at least one [units.ID] table")
    ids = list(raw)
    ur = Reader(top.file, "units", raw, ids, top.prov, top.sources)
    units = tuple(_read_unit(ur, uid, ids) for uid in ids)
    # A fallback chain must end (no cycles).
    by_id = {u.id: u for u in units}
    for u in units:
        seen = {u.id}
        f = u.fallback
        while f:
            if f in seen:
                raise ConfigError(
                    f"{top.file}: units.{u.id}.fallback: the fallback chain is a cycle"
                )
            seen.add(f)
            f = by_id[f].fallback
    return units


def _read_unit(r: Reader, uid: str, all_ids: list[str]) -> ComputeUnit:
    u = r.table(uid, _UNIT_KEYS)
    kind = u.get("kind", one_of(UNIT_KINDS), f"one of {', '.join(UNIT_KINDS)}")
    peak = _read_peaks(u)
    eff = _read_efficiencies(u)
    supported = _read_supported_ops(u)
    fallback = _read_fallback(u, uid, all_ids)
    link_bw = u.get("link_bandwidth_gbs", pos, f"{POS_NUM} (GB/s)", default=None)
    if fallback is not None and link_bw is None:
        raise ConfigError(
            f"{u.file}: {u.path}.link_bandwidth_gbs: missing required key "
            f"(GB/s to the fallback unit '{fallback}')"
        )
    power = _read_power(u)
    overhead = u.get("kernel_overhead_us", nonneg, f"{NONNEG_NUM} (us)")
    return ComputeUnit(
        id=uid,
        kind=kind,
        peak_gops=MappingProxyType(peak),
        efficiency=MappingProxyType({k: MappingProxyType(v) for k, v in eff.items()}),
        bandwidth_gbs=u.get("bandwidth_gbs", pos, f"{POS_NUM} (GB/s)"),
        kernel_overhead_us=overhead,
        kernel_overhead_us_int8=u.get(
            "kernel_overhead_us_int8", nonneg, f"{NONNEG_NUM} (us)", default=overhead
        ),
        supported_ops=supported,
        fallback=fallback,
        link_bandwidth_gbs=link_bw,
        link_latency_us=u.get("link_latency_us", nonneg, f"{NONNEG_NUM} (us)", default=0.0),
        weight_cache_bytes=u.get(
            "weight_cache_bytes", nonneg, f"{NONNEG_NUM} (bytes)", default=0.0
        ),
        power=power,
    )


def _read_peaks(u: Reader) -> dict[str, float]:
    peak = {
        d: u.get(k, pos, f"{POS_NUM} (1e9 ops/s)")
        for d, k in zip(DTYPES, _PEAK_KEYS, strict=True)
        if u.has(k)
    }
    if not peak:
        raise ConfigError(
            f"{u.file}: {u.path}: needs at least one of {', '.join(_PEAK_KEYS)} (1e9 ops/s)"
        )
    return peak


def _read_efficiencies(u: Reader) -> dict[str, dict[str, float]]:
    """The default table (every op class required) and per-dtype tables laid over it."""
    default = _read_efficiency(u, "efficiency", required=True)
    assert default is not None
    eff: dict[str, dict[str, float]] = {"default": default}
    for d, k in zip(DTYPES, _EFF_KEYS, strict=True):
        e = _read_efficiency(u, k, required=False)
        if e is not None:
            eff[d] = {**default, **e}
    return eff


def _read_efficiency(r: Reader, key: str, *, required: bool) -> dict[str, float] | None:
    if not required and not r.has(key):
        return None
    t = r.table(key, (*OP_CLASSES, *OPTIONAL_OP_CLASSES))
    return {
        c: t.get(c, fraction, "a fraction of peak in (0, 1]")
        for c in (*OP_CLASSES, *OPTIONAL_OP_CLASSES)
        if (required and c in OP_CLASSES) or t.has(c)
    }


def _read_supported_ops(u: Reader) -> frozenset[str] | None:
    """None when the unit runs every op (``"all"``)."""
    ops = u.get(
        "supported_ops",
        lambda x: x if x == "all" else str_list(x),
        '"all" or a list of ONNX op types',
        default="all",
    )
    if ops == "all":
        return None
    _check_op_names(u.file, u.key_path("supported_ops"), ops)
    return frozenset(ops)


def _read_fallback(u: Reader, uid: str, all_ids: list[str]) -> str | None:
    fallback = u.get("fallback", string, 'a unit id or ""', default="") or None
    if fallback is not None and (fallback not in all_ids or fallback == uid):
        others = [i for i in all_ids if i != uid]
        raise ConfigError(
            f"{u.file}: {u.path}.fallback: expected the id of another unit "
            f"({', '.join(others) or 'none defined'}), got {fallback!r}"
        )
    return fallback


def _read_power(u: Reader) -> PowerSpec:
    p = u.table("power", ("idle_w", "active_w", *(f"pj_per_op_{d}" for d in DTYPES)))
    pj = {
        d: p.get(f"pj_per_op_{d}", pos, f"{POS_NUM} (pJ)")
        for d in DTYPES
        if p.has(f"pj_per_op_{d}")
    }
    return PowerSpec(
        idle_w=p.get("idle_w", nonneg, f"{NONNEG_NUM} (W)"),
        active_w=p.get("active_w", pos, f"{POS_NUM} (W)"),
        pj_per_op=MappingProxyType(pj),
    )


def _check_op_names(file: str, path: str, ops: tuple[str, ...]) -> None:
    import onnx.defs

    ms_ops = {*MS_QUANT_OPS, *MS_TRANSFORMER_OPS}
    known = sorted({s.name for s in onnx.defs.get_all_schemas()} | ms_ops)
    known_set = set(known)
    for op in ops:
        if op not in known_set:
            raise ConfigError(
                f"{file}: {path}: '{op}' is not an ONNX operator{did_you_mean(op, known)}"
            )
