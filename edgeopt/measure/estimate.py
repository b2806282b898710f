"""Graph cost model: estimate latency, memory and energy of an ONNX model on a hardware profile.

The model is a per-kernel roofline, the decomposition nn-Meter uses (fused kernels, not ONNX
nodes), with analytic costs instead of learned regressors:

1. **Kernels.** Shapes come from ``onnx.shape_inference`` (a dynamic batch dim is taken as 1).
   Nodes whose inputs are all constant are folded away. Views (Reshape, Flatten, Squeeze, ...)
   are free aliases. Runtimes fuse Conv+BatchNormalization+Add+Relu/Clip and Gemm+Relu into one
   kernel: one overhead, no bytes for the fused intermediates. In QDQ graphs the
   DequantizeLinear nodes feeding a Conv's input and weight, and the QuantizeLinear after it,
   fold into the op, which then computes in int8 and moves int8 tensors; QOperator graphs
   (QLinearConv, ConvInteger, MatMulInteger, QLinear*) are int8 by op type.
2. **Placement.** A kernel runs on the profile's first unit if that unit supports every op in
   it at its dtype, else on the unit's fallback (recursively). With ``single_prefix``
   partitioning (Edge TPU) every kernel after the first fallback falls back too. Graph inputs
   and outputs live on the host unit (the end of the fallback chain). A tensor crossing units
   costs ``bytes / link_bandwidth + link_latency``.
3. **Time.** ``t = max(ops / (peak[dtype] * eff[dtype][class]), bytes / bandwidth)
   + kernel_overhead``; the total adds transfers and the per-inference invoke overhead.
4. **Memory.** Kernels run in topological order; a tensor is live from its producing kernel
   to its last consuming kernel (graph inputs from the start, outputs to the end). The peak
   sum of live tensors is the activation memory; weights are counted separately. Both are
   checked against the memory levels the profile declares.
5. **Energy** is an interval: the lower bound is ``ops * pJ/op + bytes * pJ/byte``; the upper
   bound is ``sum(active_w * busy + idle_w * (T - busy))`` over units.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ConfigError
from edgeopt.profiles import ComputeUnit, HardwareProfile

if TYPE_CHECKING:
    import onnx

    from edgeopt.metrics import Measurement

# ONNX TensorProto element type -> bytes per element
_ELEM_SIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
_INT8_TYPES = {2, 3}  # uint8, int8
TensorProto_INT32 = 6

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_VIEW_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Dropout"}
_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}
_GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat"}
_QOPERATOR = {
    "QLinearConv",
    "ConvInteger",
    "MatMulInteger",
    "QLinearMatMul",
    "QGemm",
    "MatMulIntegerToFloat",
    "QLinearAdd",
    "QLinearMul",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearSoftmax",
}
_POOL_OPS = {
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceSum",
    "ReduceL2",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
}
_MOVE_OPS = {
    "Concat",
    "Transpose",
    "Pad",
    "Slice",
    "Split",
    "Gather",
    "Resize",
    "Upsample",
    "Tile",
    "Expand",
    "DepthToSpace",
    "SpaceToDepth",
    "QLinearConcat",
    "Cast",
}
_ACT_OPS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid"}
# Which inputs of an op carry data (the rest are scales / zero points folded into the kernel).
_DATA_INPUTS = {
    "QuantizeLinear": (0,),
    "DequantizeLinear": (0,),
    "QLinearConv": (0, 3, 8),
    "QLinearMatMul": (0, 3),
    "ConvInteger": (0, 1),
    "MatMulInteger": (0, 1),
    "MatMulIntegerToFloat": (0, 1, 4),
    "QGemm": (0, 3, 6),
    "QLinearAdd": (0, 3),
    "QLinearMul": (0, 3),
    "QLinearGlobalAveragePool": (0,),
    "QLinearAveragePool": (0,),
    "QLinearSigmoid": (0,),
    "QLinearLeakyRelu": (0,),
    "QLinearSoftmax": (0,),
    "Clip": (0,),
    "Reshape": (0,),
    "Resize": (0,),
    "Pad": (0,),
    "Slice": (0,),
}
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


@dataclass(frozen=True)
class NodeCost:
    """Cost of one fused kernel (or one transfer between units).

    ``name`` is the first ONNX node's name; ``op`` joins the fused op types with ``+``;
    ``bound`` is ``compute``, ``memory`` or ``transfer``.
    """

    name: str
    op: str
    unit: str
    dtype: str
    op_class: str
    macs: int
    ops: float
    bytes: float
    time_ms: float
    bound: str
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """Estimated cost of one ONNX model on one profile; every number is an estimate.

    ``peak_memory_mb`` is peak live activations plus weights; ``activation_mb`` is the
    activation part alone. Energy is the interval ``[energy_mj_low, energy_mj_high]``.
    """

    profile: str
    latency_ms: float
    peak_memory_mb: float
    weight_mb: float
    energy_mj_low: float
    energy_mj_high: float
    fits: dict[str, bool]
    nodes: list[NodeCost]
    assumptions: list[str]
    activation_mb: float = 0.0
    macs: int = 0
    fallback_fraction: float = 0.0
    unit_time_ms: dict[str, float] = field(default_factory=dict)

    def to_measurement(self) -> Measurement:
        """The estimate as a Measurement with every value labelled ESTIMATED."""
        from edgeopt.metrics import Measurement, Metric, MetricValue, Provenance

        est = Provenance.ESTIMATED
        mid = (self.energy_mj_low + self.energy_mj_high) / 2
        return Measurement(
            self.profile,
            {
                Metric.LATENCY_MS: MetricValue(self.latency_ms, est),
                Metric.PEAK_MEMORY_MB: MetricValue(self.peak_memory_mb, est),
                Metric.ENERGY_MJ: MetricValue(
                    mid,
                    est,
                    spread=(self.energy_mj_high - self.energy_mj_low) / 2,
                    low=self.energy_mj_low,
                    high=self.energy_mj_high,
                ),
            },
        )


# --------------------------------------------------------------------------------------------
# Graph preparation


def _load(onnx_path: str | Path) -> tuple[onnx.ModelProto, list[str]]:
    import onnx

    notes: list[str] = []
    try:
        model = onnx.load(str(onnx_path))
    except FileNotFoundError:
        raise ConfigError(f"{onnx_path}: ONNX file not found") from None
    except Exception as exc:
        raise ConfigError(f"{onnx_path}: not a readable ONNX model: {exc}") from None
    g = model.graph
    init_names = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name in init_names:
            continue
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_param") or d.dim_value <= 0:
                label = d.dim_param or "?"
                d.Clear()
                d.dim_value = 1
                notes.append(f"input '{inp.name}' dim {i} ('{label}') is dynamic: assumed 1")
    del g.value_info[:]
    for out in g.output:
        out.type.tensor_type.ClearField("shape")
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise ConfigError(f"{onnx_path}: ONNX shape inference failed: {exc}") from None
    return model, notes


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


@dataclass
class _Kernel:
    nodes: list[Any]
    anchor: Any
    dtype: str = "fp32"
    op_class: str = "elementwise"
    macs: int = 0
    ops: float = 0.0
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    unit: ComputeUnit | None = None
    step: int = 0


class _Graph:
    """Shapes, producers/consumers, constants and storage aliases of one ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.shape: dict[str, tuple[int, ...] | None] = {}
        self.etype: dict[str, int] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            self.etype[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                self.shape[vi.name] = None if any(x < 0 for x in dims) else tuple(dims)
            else:
                self.shape[vi.name] = None
        self.const: set[str] = set()
        for init in g.initializer:
            self.shape[init.name] = tuple(init.dims)
            self.etype[init.name] = init.data_type
            self.const.add(init.name)
        self.initializers = {i.name for i in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        arr = numpy_helper.to_array(a.t)
                        self.shape[n.output[0]] = tuple(arr.shape)
                        self.etype[n.output[0]] = a.t.data_type
                        self.initializers.add(n.output[0])
        self.graph_inputs = [i.name for i in g.input if i.name not in self.const]
        self.graph_outputs = [o.name for o in g.output]
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in self.nodes:
            for o in n.output:
                if o:
                    self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        # Constant folding: a node whose inputs are all constant is precomputed.
        self.folded_const: set[int] = set()
        for n in self.nodes:
            # ONNX Runtime keeps DequantizeLinear on constant weights (QDQ format): it either
            # folds into an int8 consumer or runs on every inference.
            all_const = bool(n.input) and all(
                (not i) or i in self.const or i in self.initializers for i in n.input
            )
            if n.op_type == "Constant" or (all_const and n.op_type != "DequantizeLinear"):
                self.folded_const.add(id(n))
                self.const.update(o for o in n.output if o)
        self.canon: dict[str, str] = {}
        self.elem_override: dict[str, int] = {}

    def root(self, t: str) -> str:
        while t in self.canon and self.canon[t] != t:
            t = self.canon[t]
        return t

    def numel(self, t: str) -> int | None:
        s = self.shape.get(t)
        return None if s is None else int(math.prod(s))

    def nbytes(self, t: str) -> float:
        n = self.numel(t)
        if n is None:
            return 0.0
        size = self.elem_override.get(t) or _ELEM_SIZE.get(self.etype.get(t, 1), 4)
        return float(n * size)

    def through_views_back(self, t: str) -> Any:
        """The producer of ``t``, looking through non-constant view nodes."""
        n = self.producer.get(t)
        while n is not None and n.op_type in _VIEW_OPS and id(n) not in self.folded_const:
            n = self.producer.get(n.input[0])
        return n

    def through_views_fwd(self, t: str) -> list[Any]:
        """Consumers of ``t``, looking through view nodes."""
        out: list[Any] = []
        for c in self.consumers.get(t, []):
            if c.op_type in _VIEW_OPS:
                out.extend(self.through_views_fwd(c.output[0]))
            else:
                out.append(c)
        return out

    def is_graph_output_via_views(self, t: str) -> bool:
        if t in self.graph_outputs:
            return True
        return any(
            c.op_type in _VIEW_OPS and self.is_graph_output_via_views(c.output[0])
            for c in self.consumers.get(t, [])
        )


def _float_dtype(etype: int) -> str:
    return {10: "fp16", 16: "fp16"}.get(etype, "fp32")


def _quant_source(g: _Graph, t: str) -> bool:
    """Whether tensor ``t`` holds int8 data in the runtime (a DQ output or an int8 constant)."""
    if t in g.const:
        # weight: int8 initializer, possibly behind a (folded) DequantizeLinear / Identity
        n = g.producer.get(t)
        while n is not None and n.op_type in (_VIEW_OPS | {"DequantizeLinear"}):
            t = n.input[0]
            n = g.producer.get(t)
        return g.etype.get(t) in _INT8_TYPES
    p = g.through_views_back(t)
    return p is not None and p.op_type == "DequantizeLinear"


def _data_inputs(n: Any) -> list[str]:
    idx = _DATA_INPUTS.get(n.op_type)
    ins = list(n.input)
    if idx is not None:
        ins = [ins[i] for i in idx if i < len(ins)]
    return [i for i in ins if i]


def _node_dtype(g: _Graph, n: Any) -> str:
    op = n.op_type
    if op in _QOPERATOR:
        return "int8"
    out_type = g.etype.get(n.output[0], 1) if n.output else 1
    if op in _WEIGHT_INPUT:
        ins = list(n.input)
        # ORT fuses a QDQ conv only when its bias comes straight from a DequantizeLinear (or is
        # int32); otherwise (a float bias, or one behind an Identity) it runs a float conv on
        # dequantized inputs.
        bias = ins[2] if len(ins) > 2 else ""
        producer = g.producer.get(bias)
        bias_ok = (
            not bias
            or g.etype.get(bias) == TensorProto_INT32
            or (producer is not None and producer.op_type == "DequantizeLinear")
        )
        if _quant_source(g, ins[0]) and _quant_source(g, ins[_WEIGHT_INPUT[op]]) and bias_ok:
            return "int8"
        return _float_dtype(out_type)
    acts = [i for i in _data_inputs(n) if i not in g.const]
    if acts and all(_quant_source(g, i) for i in acts):
        consumers = [c for o in n.output if o for c in g.through_views_fwd(o)]
        if consumers and all(c.op_type == "QuantizeLinear" for c in consumers):
            return "int8"
    return _float_dtype(out_type)


def _conv_cost(g: _Graph, n: Any) -> tuple[int, str]:
    w = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
    ws, xs, ys = g.shape.get(w), g.shape.get(n.input[0]), g.shape.get(n.output[0])
    if ws is None or ys is None or xs is None:
        return 0, "dense_conv"
    group = int(_attr(n, "group", 1))
    cin = xs[1]
    if n.op_type == "ConvTranspose":
        macs = int(math.prod(xs)) * int(math.prod(ws[1:]))
    else:
        macs = int(math.prod(ys)) * int(math.prod(ws[1:]))
    kernel = ws[2:]
    if group > 1 and group == cin and ws[1] == 1:
        return macs, "depthwise_conv"
    if group == 1 and all(k == 1 for k in kernel):
        return macs, "pointwise_conv"
    return macs, "dense_conv"


def _gemm_cost(g: _Graph, n: Any) -> int:
    a = n.input[0]
    ashape, yshape = g.shape.get(a), g.shape.get(n.output[0])
    if ashape is None or yshape is None:
        return 0
    if n.op_type in ("Gemm", "QGemm"):
        k = ashape[0] if _attr(n, "transA", 0) else ashape[1]
    else:
        k = ashape[-1]
    return int(math.prod(yshape)) * int(k)


def _kernel_ops(g: _Graph, k: _Kernel) -> None:
    n = k.anchor
    op = n.op_type
    if op in _CONV_OPS:
        k.macs, k.op_class = _conv_cost(g, n)
        k.ops = 2.0 * k.macs
    elif op in _GEMM_OPS:
        k.macs, k.op_class = _gemm_cost(g, n), "gemm"
        k.ops = 2.0 * k.macs
    elif op in _POOL_OPS:
        k.op_class = "pool"
        if op.startswith(("Global", "QLinearGlobal", "Reduce")):
            k.ops = float(g.numel(n.input[0]) or 0)
        else:
            window = int(math.prod(_attr(n, "kernel_shape", [1])))
            k.ops = float((g.numel(n.output[0]) or 0) * window)
    elif op in _QDQ_OPS:
        k.op_class = "quantize"
        k.ops = float(sum(g.numel(o) or 0 for o in n.output if o))
    elif op in _MOVE_OPS:
        k.op_class, k.ops = "data_movement", 0.0
    else:
        k.op_class = "elementwise"
        k.ops = float(sum(g.numel(o) or 0 for o in n.output if o))


# --------------------------------------------------------------------------------------------
# Kernel formation


def _build_kernels(g: _Graph, fusions: frozenset[str]) -> list[_Kernel]:
    dtype = {id(n): _node_dtype(g, n) for n in g.nodes}
    # Storage aliases: views and constants alias their input.
    for n in g.nodes:
        if n.op_type in _VIEW_OPS and n.input and n.output:
            g.canon[n.output[0]] = n.input[0]
    folded: set[int] = set(g.folded_const)
    # DequantizeLinear folds into its consumers when they all compute in int8.
    for n in g.nodes:
        if n.op_type != "DequantizeLinear" or id(n) in folded:
            continue
        consumers = g.through_views_fwd(n.output[0])
        if consumers and all(
            dtype[id(c)] == "int8" or c.op_type == "QuantizeLinear" for c in consumers
        ):
            folded.add(id(n))
            g.canon[n.output[0]] = n.input[0]
    # Const DQ outputs (weights) alias the int8 initializer.
    for n in g.nodes:
        if id(n) in g.folded_const and n.op_type in (_VIEW_OPS | {"DequantizeLinear"}):
            g.canon[n.output[0]] = n.input[0]

    kernels: list[_Kernel] = []
    owner: dict[int, _Kernel] = {}
    for n in g.nodes:
        if id(n) in folded or id(n) in owner or n.op_type in _VIEW_OPS:
            continue
        if n.op_type == "QuantizeLinear":
            p = g.through_views_back(n.input[0])
            if p is not None and id(p) in owner and owner[id(p)].dtype == "int8":
                folded.add(id(n))
                g.canon[n.output[0]] = n.input[0]
                src = g.root(n.input[0])
                g.elem_override[src] = _ELEM_SIZE.get(g.etype.get(n.output[0], 2), 1)
                continue
        k = _Kernel(nodes=[n], anchor=n, dtype=dtype[id(n)])
        owner[id(n)] = k
        kernels.append(k)
        if n.op_type in _CONV_OPS or n.op_type in _GEMM_OPS:
            _fuse_followers(g, k, fusions, owner, dtype)
    for k in kernels:
        _kernel_ops(g, k)
    return kernels


def _fuse_followers(
    g: _Graph,
    k: _Kernel,
    fusions: frozenset[str],
    owner: dict[int, _Kernel],
    dtype: dict[int, str],
) -> None:
    is_conv = k.anchor.op_type in _CONV_OPS
    stage = 0  # 0: after anchor, 1: after bn, 2: after add, 3: after act
    while True:
        out = k.nodes[-1].output[0]
        consumers = g.consumers.get(out, [])
        if len(consumers) != 1 or out in g.graph_outputs:
            return
        c = consumers[0]
        if id(c) in owner:
            return
        op = c.op_type
        if op == "BatchNormalization" and is_conv and stage < 1 and "conv_bn" in fusions:
            stage = 1
        elif (
            op == "Add"
            and stage < 2
            and (
                (is_conv and "conv_add" in fusions)
                or (not is_conv and "gemm_act" in fusions and any(i in g.const for i in c.input))
            )
        ):
            stage = 2
        elif (
            op in _ACT_OPS
            and stage < 3
            and ((is_conv and "conv_act" in fusions) or (not is_conv and "gemm_act" in fusions))
        ):
            stage = 3
        else:
            return
        if dtype[id(c)] == "int8":
            k.dtype = "int8"
        k.nodes.append(c)
        owner[id(c)] = k


# --------------------------------------------------------------------------------------------
# Estimation


def _place(profile: HardwareProfile, k: _Kernel) -> ComputeUnit:
    unit = profile.units[0]
    ops = {n.op_type for n in k.nodes}
    while not all(unit.supports(op, k.dtype) for op in ops):
        if unit.fallback is None:
            return unit
        unit = profile.unit(unit.fallback)
    return unit


def _compute_dtype(unit: ComputeUnit, dtype: str) -> str:
    if dtype in unit.peak_gops:
        return dtype
    for d in ("fp32", "fp16", "int8"):
        if d in unit.peak_gops:
            return d
    raise AssertionError("a unit has at least one peak")  # guaranteed by the loader


def _link(a: ComputeUnit, b: ComputeUnit) -> tuple[float, float]:
    for u in (a, b):
        if u.link_bandwidth_gbs is not None:
            return u.link_bandwidth_gbs, u.link_latency_us
    return b.bandwidth_gbs, 0.0


def estimate(onnx_path: str | Path, profile: HardwareProfile) -> Estimate:
    """Estimate latency, memory and energy of the ONNX model at ``onnx_path`` on ``profile``.

    Raises ConfigError for a file that is missing or not a valid ONNX model. The result's
    numbers are estimates even for the host profile (``edgeopt bench`` measures the host).
    """
    assert profile.runtime is not None and profile.memory is not None
    model, notes = _load(onnx_path)
    g = _Graph(model)
    kernels = _build_kernels(g, profile.runtime.fusions)
    unknown = sorted({n.output[0] for n in g.nodes if n.output and g.numel(n.output[0]) is None})

    # Reads and writes of each kernel, in storage roots.
    member_of: dict[int, int] = {}
    for ki, k in enumerate(kernels):
        for n in k.nodes:
            member_of[id(n)] = ki
    produced_by: dict[str, int] = {}
    for ki, k in enumerate(kernels):
        for n in k.nodes:
            for o in n.output:
                if o:
                    produced_by[g.root(o)] = ki
    readers: dict[str, set[int]] = defaultdict(set)
    for ki, k in enumerate(kernels):
        for n in k.nodes:
            for t in _data_inputs(n):
                r = g.root(t)
                if produced_by.get(r) == ki:
                    continue
                if t in g.const and (g.numel(r) or 0) <= 1:
                    continue  # scalar constants (clip bounds) live in the kernel
                if r not in k.reads:
                    k.reads.append(r)
                readers[r].add(ki)
    out_roots = {g.root(o) for o in g.graph_outputs}
    for ki, k in enumerate(kernels):
        for n in k.nodes:
            for o in n.output:
                r = g.root(o) if o else ""
                external = bool(readers.get(r, set()) - {ki}) or r in out_roots
                if r and produced_by.get(r) == ki and r not in k.writes and external:
                    k.writes.append(r)

    # Execution order: by the position of each kernel's last node (topological).
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    order = sorted(range(len(kernels)), key=lambda ki: pos[id(kernels[ki].nodes[-1])])
    step_of = {ki: s for s, ki in enumerate(order)}

    # Placement.
    fallen = False
    policy = profile.runtime.partition_policy
    preferred = profile.units[0]
    host = profile.host_unit
    fallback_ops: set[str] = set()
    inputs, out_names = set(g.graph_inputs), set(g.graph_outputs)
    for ki in order:
        k = kernels[ki]
        k.unit = _place(profile, k)
        if policy == "single_prefix" and fallen and k.unit is preferred:
            k.unit = profile.unit(preferred.fallback) if preferred.fallback else preferred
        if k.unit is not preferred:
            fallback_ops.update(n.op_type for n in k.nodes)
            # Quantizing graph inputs / dequantizing outputs is host-side pre/post-processing
            # and does not end the accelerator's partition.
            boundary = (k.anchor.op_type == "QuantizeLinear" and k.anchor.input[0] in inputs) or (
                k.anchor.op_type == "DequantizeLinear" and k.anchor.output[0] in out_names
            )
            fallen = fallen or not boundary

    weight_roots = {r for k in kernels for r in k.reads if r in g.const}
    weight_bytes_read = sum(g.nbytes(r) for r in weight_roots)

    costs: list[NodeCost] = []
    busy: dict[str, float] = defaultdict(float)
    low_pj = 0.0
    location: dict[str, set[str]] = {r: {host.id} for r in (g.root(i) for i in g.graph_inputs)}
    transfer_s = 0.0
    dtype_notes: set[str] = set()
    total_ops = 0.0
    fallback_ops_count = 0.0

    def transfer(root: str, src: ComputeUnit, dst: ComputeUnit) -> None:
        nonlocal transfer_s, low_pj
        bw, lat = _link(src, dst)
        b = g.nbytes(root)
        t = b / (bw * 1e9) + lat * 1e-6
        transfer_s += t
        low_pj += b * profile.pj_per_byte
        costs.append(
            NodeCost(
                name=f"transfer:{root}",
                op="Transfer",
                unit=f"{src.id}->{dst.id}",
                dtype="",
                op_class="transfer",
                macs=0,
                ops=0.0,
                bytes=b,
                time_ms=t * 1e3,
                bound="transfer",
            )
        )

    for ki in order:
        k = kernels[ki]
        u = k.unit
        assert u is not None
        for r in k.reads:
            if r in g.const:
                continue
            locs = location.setdefault(r, {host.id})
            if u.id not in locs:
                src = next(x for x in profile.units if x.id in locs)
                transfer(r, src, u)
                locs.add(u.id)
        for r in k.writes:
            location[r] = {u.id}
        cdtype = _compute_dtype(u, k.dtype)
        if cdtype != k.dtype:
            dtype_notes.add(f"{k.dtype} kernels on unit '{u.id}' computed at its {cdtype} rate")
        weights_resident = u.weight_cache_bytes > 0 and weight_bytes_read <= u.weight_cache_bytes
        nbytes = sum(
            g.nbytes(r) for r in (*k.reads, *k.writes) if not (weights_resident and r in g.const)
        )
        compute_s = k.ops / (u.peak_gops[cdtype] * 1e9 * u.eff(cdtype, k.op_class)) if k.ops else 0
        memory_s = nbytes / (u.bandwidth_gbs * 1e9)
        quantized = k.dtype == "int8" or k.anchor.op_type in _QDQ_OPS
        overhead_us = u.kernel_overhead_us_int8 if quantized else u.kernel_overhead_us
        t = max(compute_s, memory_s) + overhead_us * 1e-6
        busy[u.id] += t
        low_pj += k.ops * u.pj_per_op(cdtype) + nbytes * profile.pj_per_byte
        total_ops += k.ops
        if u is not preferred:
            fallback_ops_count += k.ops
        costs.append(
            NodeCost(
                name=k.nodes[0].name or k.nodes[0].output[0],
                op="+".join(n.op_type for n in k.nodes),
                unit=u.id,
                dtype=k.dtype,
                op_class=k.op_class,
                macs=k.macs,
                ops=k.ops,
                bytes=nbytes,
                time_ms=t * 1e3,
                bound="compute" if compute_s >= memory_s else "memory",
                nodes=tuple(n.name for n in k.nodes),
            )
        )
    for o in g.graph_outputs:
        r = g.root(o)
        locs = location.get(r, {host.id})
        if host.id not in locs and r not in g.const:
            transfer(r, next(x for x in profile.units if x.id in locs), host)

    total_s = sum(busy.values()) + transfer_s + profile.runtime.invoke_overhead_us * 1e-6

    # Liveness over the kernel schedule.
    n_steps = len(order)
    live: dict[str, tuple[int, int]] = {}
    for r in {g.root(i) for i in g.graph_inputs}:
        last = max((step_of[c] for c in readers.get(r, ())), default=-1)
        live[r] = (-1, n_steps if r in out_roots else last)
    for ki, k in enumerate(kernels):
        for r in k.writes:
            last = max((step_of[c] for c in readers.get(r, set()) - {ki}), default=step_of[ki])
            live[r] = (step_of[ki], n_steps if r in out_roots else last)
    peak_act = 0.0
    for s in range(-1, max(n_steps, 1)):
        peak_act = max(peak_act, sum(g.nbytes(r) for r, (a, b) in live.items() if a <= s <= b))
    all_weights = {g.root(i) for n in g.nodes for i in n.input if i and i in g.initializers}
    weight_bytes = sum(g.nbytes(r) for r in all_weights if r in g.initializers)

    mem = profile.memory
    fits: dict[str, bool] = {}
    need = {"dram": 0.0, "sram": 0.0, "flash": 0.0}
    need[mem.activations_in] += peak_act
    need[mem.weights_in] += weight_bytes
    for level in ("dram", "sram", "flash"):
        cap = getattr(mem, f"{level}_bytes")
        if level == "sram" and mem.activations_in == "sram" and mem.activation_budget_bytes:
            cap = mem.activation_budget_bytes
        if cap is not None and (need[level] > 0 or level == mem.activations_in):
            fits[level] = need[level] <= cap
    for u in profile.units:
        if u.weight_cache_bytes > 0:
            fits[f"{u.id}_weight_cache"] = weight_bytes <= u.weight_cache_bytes

    high_j = 0.0
    for u in profile.units:
        b = busy.get(u.id, 0.0)
        high_j += u.power.active_w * b + u.power.idle_w * max(total_s - b, 0.0)
    low_mj = low_pj * 1e-9
    high_mj = max(high_j * 1e3, low_mj)

    assumptions = [
        f"estimated (profile {profile.name}): per-kernel roofline on ONNX graph, not a measurement",
        *notes,
    ]
    if unknown:
        assumptions.append(
            f"{len(unknown)} tensor(s) without an inferred shape count as 0 bytes/ops "
            f"(e.g. '{unknown[0]}')"
        )
    if fallback_ops:
        assumptions.append(
            f"ops not supported on '{preferred.id}' fall back to "
            f"'{preferred.fallback or preferred.id}': {', '.join(sorted(fallback_ops))}"
        )
    assumptions.extend(sorted(dtype_notes))
    assumptions.append(
        "energy: low = ops x pJ/op + bytes x pJ/byte; high = active/idle power x time"
    )
    if profile.calibration is not None and profile.calibration.median_rel_error is not None:
        c = profile.calibration
        assumptions.append(
            f"calibrated {c.date}: median relative latency error {c.median_rel_error:.0%}, "
            f"Kendall tau {c.kendall_tau} over {c.n_models} models"
        )
    elif not profile.calibrated:
        assumptions.append(
            "profile never calibrated against the real device: expect errors of 2x or more"
        )
    if profile.assumptions:
        shown = ", ".join(profile.assumptions[:4])
        more = f" and {len(profile.assumptions) - 4} more" if len(profile.assumptions) > 4 else ""
        assumptions.append(f"profile values that are assumptions: {shown}{more}")

    return Estimate(
        profile=profile.name,
        latency_ms=total_s * 1e3,
        peak_memory_mb=(peak_act + weight_bytes) / 1e6,
        weight_mb=weight_bytes / 1e6,
        energy_mj_low=low_mj,
        energy_mj_high=high_mj,
        fits=fits,
        nodes=costs,
        assumptions=assumptions,
        activation_mb=peak_act / 1e6,
        macs=sum(k.macs for k in kernels),
        fallback_fraction=fallback_ops_count / total_ops if total_ops else 0.0,
        unit_time_ms={k: v * 1e3 for k, v in busy.items()},
    )
