"""Hardware target profiles: typed dataclasses and a strict TOML loader.

One TOML file per target lives beside this module (``edgeopt/profiles/*.toml``). Every number in
a profile carries where it came from, either as a bare value (then the file says why in a
comment and ``[profile] sources`` lists the documents) or as an inline table
``{ v = 1.8e2, kind = "measured", src = "S14", note = "..." }`` whose ``kind`` is one of
datasheet, paper, derived, 3rd-party, measured, assumption. Values of kind ``assumption`` are
listed by :attr:`HardwareProfile.assumptions` and printed under every estimate.

The loader is strict: an unknown key, a wrong type or unit, or a missing required field raises
:class:`edgeopt.errors.ConfigError` naming the file, the key path and what was expected.

Layout of a profile file (units are part of the key names)::

    schema = "edgeopt-hw-profile/1"
    [profile]      name, kind, description, aliases, measured, threads, calibrated
    [quantization] modes, activation_type, weight_type, per_channel, int8_only
    [pruning]      channel_multiple
    [runtime]      partition_policy ("multi" | "single_prefix"), invoke_overhead_us, fusions,
                   ort_providers
    [memory]       dram_bytes, sram_bytes, flash_bytes, activation_budget_bytes,
                   weights_in ("dram" | "flash"), activations_in ("dram" | "sram")
    [energy]       pj_per_byte (memory traffic, lower-bound model)
    [units.ID]     kind, peak_gops_fp32 / _fp16 / _int8, bandwidth_gbs, kernel_overhead_us,
                   kernel_overhead_us_int8 (default: kernel_overhead_us),
                   supported_ops, fallback, link_bandwidth_gbs, link_latency_us,
                   weight_cache_bytes
    [units.ID.efficiency]        one fraction of peak per op class (OP_CLASSES; optional
                                 "quantize" for Quantize/DequantizeLinear, else elementwise)
    [units.ID.efficiency_int8]   optional per-dtype overrides (also _fp16, _fp32)
    [units.ID.power]             idle_w, active_w, pj_per_op_fp32 / _fp16 / _int8
    [calibration]  date, method, command, machine, kendall_tau, median_rel_error, n_models
    [sources]      KEY = "document / URL"

The first unit is the preferred one; an op it cannot run goes to its ``fallback`` unit.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from edgeopt.errors import ConfigError

SCHEMA = "edgeopt-hw-profile/1"
PROFILE_DIR = Path(__file__).resolve().parent

QUANT_MODES = ("fp32", "fp32_opt", "fp16", "int8_static", "int8_dynamic")
DTYPES = ("fp32", "fp16", "int8")
OP_CLASSES = (
    "dense_conv",
    "pointwise_conv",
    "depthwise_conv",
    "gemm",
    "elementwise",
    "pool",
    "data_movement",
)
# Optional op classes: a table may give them; otherwise ``elementwise`` applies.
OPTIONAL_OP_CLASSES = ("quantize",)
FUSIONS = ("conv_bn", "conv_act", "conv_add", "gemm_act", "qdq")
SOURCE_KINDS = ("datasheet", "paper", "derived", "3rd-party", "measured", "assumption")
UNIT_KINDS = ("cpu", "gpu", "npu", "dpu", "tpu", "dsp", "mcu")

_T = TypeVar("_T")

# com.microsoft quantized operators that ONNX Runtime's quantizer emits (QOperator format).
_MS_QUANT_OPS = (
    "QLinearAdd",
    "QLinearMul",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearSoftmax",
    "QGemm",
    "MatMulIntegerToFloat",
)


class TargetKind(StrEnum):
    """The class of device a profile describes."""

    CPU = "cpu"
    GPU = "gpu"
    MOBILE = "mobile"
    NPU = "npu"
    FPGA = "fpga"
    MCU = "mcu"


@dataclass(frozen=True, kw_only=True)
class QuantSupport:
    """What quantization a target can run; the search proposes only these modes."""

    modes: tuple[str, ...]
    activation_type: str
    weight_type: str
    per_channel: bool
    int8_only: bool

    def supports(self, mode: str) -> bool:
        """Whether ``mode`` (one of QUANT_MODES) runs on the target."""
        return mode in self.modes


@dataclass(frozen=True, kw_only=True)
class PruningSupport:
    """Structured-pruning constraints: channel counts are rounded to ``channel_multiple``."""

    channel_multiple: int


@dataclass(frozen=True, kw_only=True)
class ValueSource:
    """Where one profile value came from.

    ``kind`` is one of SOURCE_KINDS, or ``"unstated"`` for a bare number in the file.
    """

    kind: str
    src: str | None = None
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class PowerSpec:
    """Power of one unit: ``active_w`` while it computes, ``idle_w`` while it waits.

    ``pj_per_op`` is the lower-bound energy per operation for each dtype (vendor TOPS/W at peak
    or Horowitz-scaled); dtypes missing here are derived as ``active_w / peak``.
    """

    idle_w: float
    active_w: float
    pj_per_op: Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class ComputeUnit:
    """One compute engine of a target (CPU cluster, GPU, NPU, DPU, TPU, MCU core).

    ``peak_gops`` is dense whole-unit throughput per dtype in 1e9 ops/s (one MAC = 2 ops);
    ``efficiency`` maps (dtype, op class) to the attainable fraction of that peak.
    ``kernel_overhead_us_int8`` is the fixed cost of kernels in quantized graphs (int8 ops and
    Quantize/DequantizeLinear), which runtimes often pay more for than float kernels.
    ``supported_ops`` is None when every ONNX op runs here.
    """

    id: str
    kind: str
    peak_gops: Mapping[str, float]
    efficiency: Mapping[str, Mapping[str, float]]
    bandwidth_gbs: float
    kernel_overhead_us: float
    kernel_overhead_us_int8: float
    supported_ops: frozenset[str] | None
    fallback: str | None
    link_bandwidth_gbs: float | None
    link_latency_us: float
    weight_cache_bytes: float
    power: PowerSpec

    def eff(self, dtype: str, op_class: str) -> float:
        """Efficiency for ``op_class`` at ``dtype`` (per-dtype table, else the default one)."""
        default = self.efficiency["default"]
        table = self.efficiency.get(dtype) or default
        if op_class in table:
            return table[op_class]
        if op_class in default:
            return default[op_class]
        return table["elementwise"]  # optional classes (quantize)

    def supports(self, op_type: str, dtype: str) -> bool:
        """Whether this unit runs ``op_type`` at ``dtype``."""
        if dtype not in self.peak_gops:
            return False
        return self.supported_ops is None or op_type in self.supported_ops

    def pj_per_op(self, dtype: str) -> float:
        """Lower-bound energy per op at ``dtype`` in pJ."""
        if dtype in self.power.pj_per_op:
            return self.power.pj_per_op[dtype]
        peak = self.peak_gops.get(dtype)
        if not peak:
            return 0.0
        return self.power.active_w / (peak * 1e9) * 1e12


@dataclass(frozen=True, kw_only=True)
class MemorySpec:
    """Memory levels of the target in bytes; None where the profile does not state one.

    ``weights_in`` and ``activations_in`` say which level must hold them (an MCU keeps weights
    in flash and activations in SRAM).
    """

    dram_bytes: float | None
    sram_bytes: float | None
    flash_bytes: float | None
    activation_budget_bytes: float | None
    weights_in: str
    activations_in: str


@dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    """How the target's runtime executes a graph."""

    partition_policy: str
    invoke_overhead_us: float
    fusions: frozenset[str]
    ort_providers: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """How well the cost model matched real measurements of this target (empty if never)."""

    date: str
    method: str
    command: str
    machine: str
    kendall_tau: float | None
    median_rel_error: float | None
    n_models: int


@dataclass(frozen=True, kw_only=True)
class HardwareProfile:
    """One hardware target: what it supports (narrows the search) and its cost-model numbers.

    Built only by the loader, which has validated every field.
    """

    name: str
    kind: TargetKind
    description: str
    measured: bool
    threads: int
    quantization: QuantSupport
    pruning: PruningSupport
    source_path: Path | None
    aliases: tuple[str, ...] = ()
    calibrated: bool = False
    units: tuple[ComputeUnit, ...] = ()
    memory: MemorySpec | None = None
    runtime: RuntimeSpec | None = None
    pj_per_byte: float = 0.0
    calibration: Calibration | None = None
    provenance: Mapping[str, ValueSource] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def assumptions(self) -> list[str]:
        """Key paths whose value is an unsourced assumption (printed under estimates)."""
        return sorted(p for p, s in self.provenance.items() if s.kind == "assumption")

    @property
    def unstated(self) -> list[str]:
        """Key paths holding a bare number with no stated source."""
        return sorted(p for p, s in self.provenance.items() if s.kind == "unstated")

    @property
    def label(self) -> str:
        """How numbers for this target are labelled in output."""
        return "measured (this host)" if self.measured else f"estimated (profile {self.name})"

    def unit(self, unit_id: str) -> ComputeUnit:
        """The unit called ``unit_id``."""
        for u in self.units:
            if u.id == unit_id:
                return u
        raise KeyError(unit_id)

    @property
    def host_unit(self) -> ComputeUnit:
        """The unit at the end of the preferred unit's fallback chain: where inputs live."""
        u = self.units[0]
        while u.fallback:
            u = self.unit(u.fallback)
        return u


# --------------------------------------------------------------------------------------------
# Strict reading


class _Reader:
    """Reads one TOML table, checking keys against an allowed set and values against types."""

    def __init__(
        self,
        file: str,
        path: str,
        data: Any,
        allowed: Iterable[str],
        prov: dict[str, ValueSource],
        sources: Mapping[str, str],
    ) -> None:
        self.file, self.path, self.prov, self.sources = file, path, prov, sources
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: {path}: expected a table, got {data!r}")
        self.data = data
        allowed = list(allowed)
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(
                    f"{file}: {self._p(key)}: unknown key '{key}'{hint}",
                    hint=f"valid keys in [{path or 'top level'}]: {', '.join(allowed)}",
                )

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def get(
        self,
        key: str,
        check: Callable[[Any], _T | None],
        expected: str,
        *,
        default: Any = ...,
    ) -> _T:
        """The value at ``key`` after ``check`` (returns None when the value is invalid)."""
        path = self._p(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.file}: {path}: missing required key ({expected})")
            return default  # type: ignore[no-any-return]
        raw = self.data[key]
        if isinstance(raw, dict) and "v" in raw:
            raw = self._unwrap(path, raw)
        elif _num(raw) is not None:
            # A bare number: legal, but its source is only in a comment (if anywhere).
            self.prov.setdefault(path, ValueSource(kind="unstated"))
        value = check(raw)
        if value is None:
            raise ConfigError(f"{self.file}: {path}: expected {expected}, got {raw!r}")
        return value

    def _unwrap(self, path: str, wrapped: dict[str, Any]) -> Any:
        r = _Reader(self.file, path, wrapped, ("v", "kind", "src", "note"), self.prov, self.sources)
        kind = r.get("kind", _enum(SOURCE_KINDS), f"one of {', '.join(SOURCE_KINDS)}")
        src = r.get("src", _str, "a key of [sources]", default=None)
        if src is not None:
            for s in (x.strip() for x in src.split(",")):
                if s not in self.sources:
                    close = difflib.get_close_matches(s, list(self.sources), n=1)
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise ConfigError(
                        f"{self.file}: {path}.src: '{s}' is not a key of [sources]{hint}"
                    )
        note = r.get("note", _str, "a string", default=None)
        self.prov[path] = ValueSource(kind=kind, src=src, note=note)
        return wrapped["v"]

    def table(self, key: str, allowed: Iterable[str], *, required: bool = True) -> _Reader:
        if key not in self.data:
            if required:
                raise ConfigError(f"{self.file}: {self._p(key)}: missing required table")
            return _Reader(self.file, self._p(key), {}, allowed, self.prov, self.sources)
        return _Reader(self.file, self._p(key), self.data[key], allowed, self.prov, self.sources)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _pos(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and v > 0 else None


def _nonneg(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and v >= 0 else None


def _fraction(x: Any) -> float | None:
    v = _num(x)
    return v if v is not None and 0 < v <= 1 else None


def _pos_int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def _nonneg_int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else None


def _str(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def _nonempty_str(x: Any) -> str | None:
    return x if isinstance(x, str) and x.strip() else None


def _bool(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def _str_list(x: Any) -> tuple[str, ...] | None:
    if isinstance(x, list) and all(isinstance(i, str) for i in x):
        return tuple(x)
    return None


def _enum(values: Iterable[str]) -> Callable[[Any], str | None]:
    vals = tuple(values)
    return lambda x: x if isinstance(x, str) and x in vals else None


def _subset(values: Iterable[str]) -> Callable[[Any], tuple[str, ...] | None]:
    vals = tuple(values)

    def check(x: Any) -> tuple[str, ...] | None:
        items = _str_list(x)
        if items is None or not all(i in vals for i in items):
            return None
        return items

    return check


_POS_NUM = "a positive number"
_NONNEG_NUM = "a number >= 0"


def _read_efficiency(r: _Reader, key: str, *, required: bool) -> dict[str, float] | None:
    if not required and not r.has(key):
        return None
    t = r.table(key, (*OP_CLASSES, *OPTIONAL_OP_CLASSES))
    out: dict[str, float] = {}
    for c in (*OP_CLASSES, *OPTIONAL_OP_CLASSES):
        if (required and c in OP_CLASSES) or t.has(c):
            out[c] = t.get(c, _fraction, "a fraction of peak in (0, 1]")
    return out


def _read_unit(r: _Reader, uid: str, all_ids: list[str]) -> ComputeUnit:
    peak_keys = tuple(f"peak_gops_{d}" for d in DTYPES)
    eff_keys = tuple(f"efficiency_{d}" for d in DTYPES)
    u = r.table(
        uid,
        (
            "kind",
            *peak_keys,
            "bandwidth_gbs",
            "kernel_overhead_us",
            "kernel_overhead_us_int8",
            "supported_ops",
            "fallback",
            "link_bandwidth_gbs",
            "link_latency_us",
            "weight_cache_bytes",
            "efficiency",
            *eff_keys,
            "power",
        ),
    )
    kind = u.get("kind", _enum(UNIT_KINDS), f"one of {', '.join(UNIT_KINDS)}")
    peak: dict[str, float] = {}
    for d, k in zip(DTYPES, peak_keys, strict=True):
        if u.has(k):
            peak[d] = u.get(k, _pos, f"{_POS_NUM} (1e9 ops/s)")
    if not peak:
        raise ConfigError(
            f"{r.file}: units.{uid}: needs at least one of {', '.join(peak_keys)} (1e9 ops/s)"
        )
    eff: dict[str, dict[str, float]] = {"default": _read_efficiency(u, "efficiency", required=True)}
    for d, k in zip(DTYPES, eff_keys, strict=True):
        e = _read_efficiency(u, k, required=False)
        if e is not None:
            eff[d] = {**eff["default"], **e}
    ops_raw = u.get(
        "supported_ops",
        lambda x: x if x == "all" else _str_list(x),
        '"all" or a list of ONNX op types',
        default="all",
    )
    supported: frozenset[str] | None = None
    if ops_raw != "all":
        _check_op_names(r.file, f"units.{uid}.supported_ops", ops_raw)
        supported = frozenset(ops_raw)
    fallback = u.get("fallback", _str, 'a unit id or ""', default="") or None
    if fallback is not None and (fallback not in all_ids or fallback == uid):
        others = [i for i in all_ids if i != uid]
        raise ConfigError(
            f"{r.file}: units.{uid}.fallback: expected the id of another unit "
            f"({', '.join(others) or 'none defined'}), got {fallback!r}"
        )
    link_bw = u.get("link_bandwidth_gbs", _pos, f"{_POS_NUM} (GB/s)", default=None)
    if fallback is not None and link_bw is None:
        raise ConfigError(
            f"{r.file}: units.{uid}.link_bandwidth_gbs: missing required key "
            f"(GB/s to the fallback unit '{fallback}')"
        )
    p = u.table("power", ("idle_w", "active_w", *(f"pj_per_op_{d}" for d in DTYPES)))
    pj: dict[str, float] = {}
    for d in DTYPES:
        if p.has(f"pj_per_op_{d}"):
            pj[d] = p.get(f"pj_per_op_{d}", _pos, f"{_POS_NUM} (pJ)")
    power = PowerSpec(
        idle_w=p.get("idle_w", _nonneg, f"{_NONNEG_NUM} (W)"),
        active_w=p.get("active_w", _pos, f"{_POS_NUM} (W)"),
        pj_per_op=MappingProxyType(pj),
    )
    overhead = u.get("kernel_overhead_us", _nonneg, f"{_NONNEG_NUM} (us)")
    return ComputeUnit(
        id=uid,
        kind=kind,
        peak_gops=MappingProxyType(peak),
        efficiency=MappingProxyType({k: MappingProxyType(v) for k, v in eff.items()}),
        bandwidth_gbs=u.get("bandwidth_gbs", _pos, f"{_POS_NUM} (GB/s)"),
        kernel_overhead_us=overhead,
        kernel_overhead_us_int8=u.get(
            "kernel_overhead_us_int8", _nonneg, f"{_NONNEG_NUM} (us)", default=overhead
        ),
        supported_ops=supported,
        fallback=fallback,
        link_bandwidth_gbs=link_bw,
        link_latency_us=u.get("link_latency_us", _nonneg, f"{_NONNEG_NUM} (us)", default=0.0),
        weight_cache_bytes=u.get(
            "weight_cache_bytes", _nonneg, f"{_NONNEG_NUM} (bytes)", default=0.0
        ),
        power=power,
    )


def _check_op_names(file: str, path: str, ops: Iterable[str]) -> None:
    import onnx.defs

    known = sorted({s.name for s in onnx.defs.get_all_schemas()} | set(_MS_QUANT_OPS))
    known_set = set(known)
    for op in ops:
        if op not in known_set:
            close = difflib.get_close_matches(op, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{file}: {path}: '{op}' is not an ONNX operator{hint}")


def _parse(data: dict[str, Any], file: str, source_path: Path | None) -> HardwareProfile:
    prov: dict[str, ValueSource] = {}
    raw_sources = data.get("sources", {})
    if not isinstance(raw_sources, dict) or not all(
        isinstance(v, str) for v in raw_sources.values()
    ):
        raise ConfigError(f'{file}: sources: expected a table of KEY = "document / URL"')
    sources = dict(raw_sources)
    top = _Reader(
        file,
        "",
        data,
        (
            "schema",
            "profile",
            "quantization",
            "pruning",
            "runtime",
            "memory",
            "energy",
            "units",
            "calibration",
            "sources",
        ),
        prov,
        sources,
    )
    schema = top.get("schema", _str, f'"{SCHEMA}"')
    if schema != SCHEMA:
        raise ConfigError(f'{file}: schema: expected "{SCHEMA}", got {schema!r}')

    p = top.table(
        "profile",
        ("name", "kind", "description", "aliases", "measured", "threads", "calibrated"),
    )
    kinds = [k.value for k in TargetKind]
    name = p.get("name", _nonempty_str, "a non-empty string")
    kind = TargetKind(p.get("kind", _enum(kinds), f"one of {', '.join(kinds)}"))

    q = top.table(
        "quantization", ("modes", "activation_type", "weight_type", "per_channel", "int8_only")
    )
    modes = q.get("modes", _subset(QUANT_MODES), f"a list drawn from {', '.join(QUANT_MODES)}")
    if not modes:
        raise ConfigError(f"{file}: quantization.modes: expected at least one mode")
    quant = QuantSupport(
        modes=modes,
        activation_type=q.get("activation_type", _enum(("uint8", "int8")), '"uint8" or "int8"'),
        weight_type=q.get("weight_type", _enum(("int8",)), '"int8"'),
        per_channel=q.get("per_channel", _bool, "true or false"),
        int8_only=q.get("int8_only", _bool, "true or false"),
    )
    if quant.int8_only and set(modes) - {"int8_static"}:
        raise ConfigError(
            f'{file}: quantization.modes: an int8_only target runs only ["int8_static"], '
            f"got {list(modes)}"
        )
    pr = top.table("pruning", ("channel_multiple",))
    pruning = PruningSupport(
        channel_multiple=pr.get("channel_multiple", _pos_int, "a positive integer")
    )

    rt = top.table(
        "runtime", ("partition_policy", "invoke_overhead_us", "fusions", "ort_providers")
    )
    runtime = RuntimeSpec(
        partition_policy=rt.get(
            "partition_policy", _enum(("multi", "single_prefix")), '"multi" or "single_prefix"'
        ),
        invoke_overhead_us=rt.get("invoke_overhead_us", _nonneg, f"{_NONNEG_NUM} (us)"),
        fusions=frozenset(
            rt.get("fusions", _subset(FUSIONS), f"a list drawn from {', '.join(FUSIONS)}")
        ),
        ort_providers=rt.get(
            "ort_providers", _str_list, "a list of ORT execution provider names", default=()
        ),
    )

    m = top.table(
        "memory",
        (
            "dram_bytes",
            "sram_bytes",
            "flash_bytes",
            "activation_budget_bytes",
            "weights_in",
            "activations_in",
        ),
    )
    memory = MemorySpec(
        dram_bytes=m.get("dram_bytes", _pos, f"{_POS_NUM} (bytes)", default=None),
        sram_bytes=m.get("sram_bytes", _pos, f"{_POS_NUM} (bytes)", default=None),
        flash_bytes=m.get("flash_bytes", _pos, f"{_POS_NUM} (bytes)", default=None),
        activation_budget_bytes=m.get(
            "activation_budget_bytes", _pos, f"{_POS_NUM} (bytes)", default=None
        ),
        weights_in=m.get("weights_in", _enum(("dram", "flash")), '"dram" or "flash"'),
        activations_in=m.get("activations_in", _enum(("dram", "sram")), '"dram" or "sram"'),
    )
    for level, attr in (
        (memory.weights_in, "weights_in"),
        (memory.activations_in, "activations_in"),
    ):
        if getattr(memory, f"{level}_bytes") is None:
            raise ConfigError(
                f'{file}: memory.{attr}: is "{level}" but memory.{level}_bytes is not given'
            )

    e = top.table("energy", ("pj_per_byte",))
    pj_per_byte = e.get("pj_per_byte", _nonneg, f"{_NONNEG_NUM} (pJ per byte)")

    if not top.has("units") or not isinstance(data["units"], dict) or not data["units"]:
        raise ConfigError(f"{file}: units: expected at least one [units.ID] table")
    ids = list(data["units"])
    ur = _Reader(file, "units", data["units"], ids, prov, sources)
    units = tuple(_read_unit(ur, uid, ids) for uid in ids)
    # A fallback chain must end (no cycles).
    for u in units:
        seen = {u.id}
        f = u.fallback
        while f:
            if f in seen:
                raise ConfigError(f"{file}: units.{u.id}.fallback: the fallback chain is a cycle")
            seen.add(f)
            f = next(x for x in units if x.id == f).fallback

    calibration: Calibration | None = None
    if top.has("calibration"):
        c = top.table(
            "calibration",
            (
                "date",
                "method",
                "command",
                "machine",
                "kendall_tau",
                "median_rel_error",
                "n_models",
            ),
        )
        calibration = Calibration(
            date=c.get("date", _str, "a date string"),
            method=c.get("method", _str, "a string"),
            command=c.get("command", _str, "a string", default=""),
            machine=c.get("machine", _str, "a string", default=""),
            kendall_tau=c.get(
                "kendall_tau",
                lambda x: _num(x) if _num(x) is not None and -1 <= x <= 1 else None,
                "a number in [-1, 1]",
                default=None,
            ),
            median_rel_error=c.get("median_rel_error", _nonneg, _NONNEG_NUM, default=None),
            n_models=c.get("n_models", _nonneg_int, "an integer >= 0", default=0),
        )

    # [calibration] records results about the profile, not inputs that need a source.
    for key in [k for k in prov if k.startswith("calibration.")]:
        del prov[key]
    return HardwareProfile(
        name=name,
        kind=kind,
        description=p.get("description", _nonempty_str, "a non-empty string"),
        measured=p.get("measured", _bool, "true or false"),
        threads=p.get("threads", _pos_int, "a positive integer"),
        quantization=quant,
        pruning=pruning,
        source_path=source_path,
        aliases=p.get("aliases", _str_list, "a list of strings", default=()),
        calibrated=p.get("calibrated", _bool, "true or false", default=False),
        units=units,
        memory=memory,
        runtime=runtime,
        pj_per_byte=pj_per_byte,
        calibration=calibration,
        provenance=MappingProxyType(prov),
        sources=MappingProxyType(sources),
    )


# --------------------------------------------------------------------------------------------
# Public API


def validate_profile_file(path: str | Path) -> HardwareProfile:
    """Load and validate one profile TOML file.

    Raises ConfigError naming the file and key path for a missing file, invalid TOML, an
    unknown key (with the closest valid name), a wrong type or unit, or a missing field.
    """
    p = Path(path)
    shown = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: profile file not found") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read profile file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from None
    return _parse(data, shown, p.resolve())


def _shipped_files() -> list[Path]:
    return sorted(PROFILE_DIR.glob("*.toml"))


def list_profiles() -> list[HardwareProfile]:
    """Every shipped profile, sorted by name."""
    return sorted((validate_profile_file(f) for f in _shipped_files()), key=lambda p: p.name)


def _alias_table() -> dict[str, Path]:
    table: dict[str, Path] = {}
    for f in _shipped_files():
        prof = validate_profile_file(f)
        table[prof.name] = f
        for a in prof.aliases:
            table.setdefault(a, f)
    return table


def load_profile(spec: str) -> HardwareProfile:
    """Resolve ``spec`` to a profile: an alias (``cpu``, ``mobile``, ...), a shipped profile
    name, or a path to a ``.toml`` file.

    Raises ConfigError listing the valid names when ``spec`` is none of these.
    """
    if spec.endswith(".toml") or "/" in spec or Path(spec).suffix:
        return validate_profile_file(spec)
    table = _alias_table()
    if spec in table:
        return validate_profile_file(table[spec])
    names = sorted(table)
    close = difflib.get_close_matches(spec, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(
        f"unknown profile '{spec}'{hint}; valid names: {', '.join(names)}",
        hint="or give a path to your own profile file, e.g. --target path/to/board.toml",
    )


__all__ = [
    "DTYPES",
    "OP_CLASSES",
    "QUANT_MODES",
    "Calibration",
    "ComputeUnit",
    "HardwareProfile",
    "MemorySpec",
    "PowerSpec",
    "PruningSupport",
    "QuantSupport",
    "RuntimeSpec",
    "TargetKind",
    "ValueSource",
    "list_profiles",
    "load_profile",
    "validate_profile_file",
]
