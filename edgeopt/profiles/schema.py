"""What a hardware profile holds: closed sets of names and the frozen dataclasses the loader
builds (every field validated by :mod:`edgeopt.profiles.parse`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from edgeopt.profiles.runtime_spec import Runtime

SCHEMA = "edgeopt-hw-profile/1"

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
# ONNX Runtime execution provider names a runner may ask for (a closed set: typos are caught
# when the profile loads, not on the device).
ORT_PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "OpenVINOExecutionProvider",
    "DnnlExecutionProvider",
    "XnnpackExecutionProvider",
    "ACLExecutionProvider",
    "ArmNNExecutionProvider",
    "NnapiExecutionProvider",
    "CoreMLExecutionProvider",
    "QNNExecutionProvider",
    "SNPEExecutionProvider",
    "RknpuExecutionProvider",
    "VitisAIExecutionProvider",
    "CANNExecutionProvider",
    "DmlExecutionProvider",
    "WebGpuExecutionProvider",
)

# com.microsoft quantized operators that ONNX Runtime's quantizer emits (QOperator format).
MS_QUANT_OPS = (
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
    "QAttention",
)
# com.microsoft ops of ONNX Runtime's transformer optimizer (a fused graph); a unit that does
# not list them runs them on its fallback.
MS_TRANSFORMER_OPS = (
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "EmbedLayerNormalization",
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
    """What quantization a target can run; the search proposes only these modes.

    ``activation_type``, ``weight_type`` and ``activation_symmetric`` are the target's int8
    flavour: what its runtime's kernels take (weights are symmetric exactly when signed, as
    ONNX Runtime's quantizer makes them). ``contrib_ops`` is not a profile key: it is False
    on a merged profile (``merge_profiles``) when some target's runtime does not run ORT's
    ``com.microsoft`` ops (``runs_contrib_ops`` asks it together with the runtime's own).
    ``ort_quantized`` is not a profile key either: a merged profile sets it to whether any
    target's file is the ONNX candidate's ORT quantization (None: the runtime's own
    ``RuntimeKind.own_quantizer`` says; ``quantizes_with_ort`` asks).
    """

    modes: tuple[str, ...]
    activation_type: str
    weight_type: str
    per_channel: bool
    int8_only: bool
    activation_symmetric: bool = False
    contrib_ops: bool = True
    ort_quantized: bool | None = None

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

    ``kind`` is one of SOURCE_KINDS, or ``"unstated"`` for a bare number in the file; ``src``
    names keys of the file's ``[sources]`` (comma-separated); ``note`` says how the value
    follows from them, or, for an ``assumption``, why it is assumed. ``value`` is the value
    as written.
    """

    kind: str
    src: str | None = None
    note: str | None = None
    value: Any = None

    @property
    def cited(self) -> bool:
        """Whether the value names a document: any kind but assumption, with a ``src``."""
        return self.kind not in ("assumption", "unstated") and bool(self.src)


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
    """How the target's runtime executes a graph, and which runtime it is (``name``: what
    file the target loads, ``edgeopt.profiles.runtime_spec.RUNTIMES``; ``ort`` when the
    profile names none). ``precision_hint`` is OpenVINO's inference precision (``f32``
    unless the profile asks for ``bf16``/``f16``); ``io_type`` (LiteRT) ``int8`` when the device
    loads only full-integer files with int8 inputs and outputs, else None."""

    partition_policy: str
    invoke_overhead_us: float
    fusions: frozenset[str]
    ort_providers: tuple[str, ...]
    name: Runtime = Runtime.ORT
    precision_hint: str = "f32"
    io_type: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunnerSpec:
    """Where a measured profile's numbers are measured (``[runner]``): what every runner kind
    has. Each kind is a subclass with its own keys (``edgeopt.profiles.runner_spec``:
    ``LocalSpec`` for this host, ``SshSpec`` for a device reached over SSH); ``kind`` is the
    name ``[runner] kind`` gives it.

    ``providers`` are the ORT execution providers to use there; ``threads`` (intra-op
    threads there) overrides ``[profile] threads`` when given; ``timeout_s`` bounds every
    remote call beyond its timing budget.
    """

    kind: ClassVar[str]
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None
    timeout_s: float = 120.0

    @property
    def device(self) -> str:
        """Who measures: ``local`` (this host), or the kind's address (``ssh://host``)."""
        return "local"

    @property
    def remote(self) -> bool:
        """True when another machine than this host measures."""
        return False


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
    runner: RunnerSpec | None = None
    provenance: Mapping[str, ValueSource] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    text: str = field(default="", repr=False, compare=False)
    """The TOML text this profile was parsed from (what a run records and hands its trial
    processes, so they see the content the run started with)."""

    @property
    def assumptions(self) -> list[str]:
        """Key paths whose value is an unsourced assumption (printed under estimates)."""
        return sorted(p for p, s in self.provenance.items() if s.kind == "assumption")

    @property
    def unstated(self) -> list[str]:
        """Key paths holding a bare number with no stated source."""
        return sorted(p for p, s in self.provenance.items() if s.kind == "unstated")

    @property
    def without_source(self) -> list[str]:
        """Key paths whose value neither names a document nor is a stated assumption: a bare
        number, or a kind such as datasheet given without ``src``."""
        return sorted(
            p for p, s in self.provenance.items() if s.kind != "assumption" and not s.cited
        )

    @property
    def runtime_name(self) -> Runtime:
        """The runtime the target runs (``[runtime] name``; ``ort`` when none is named)."""
        return self.runtime.name if self.runtime is not None else Runtime.ORT

    @property
    def label(self) -> str:
        """How numbers for this target are labelled in output."""
        if not self.measured:
            return f"estimated (profile {self.name})"
        if self.runner is not None and self.runner.remote:
            return f"measured ({self.runner.device})"
        return "measured (this host)"

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
