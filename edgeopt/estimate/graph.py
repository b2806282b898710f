"""The ONNX graph as the cost model sees it: shapes, element sizes, producers and consumers,
folded constants and storage aliases (views share their input's storage)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.errors import ConfigError
from edgeopt.estimate.shapes import infer_shapes
from edgeopt.profiles import MS_QUANT_OPS

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto element type -> bytes per element
ELEM_SIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
INT8_TYPES = {2, 3}  # uint8, int8
TENSOR_INT32 = 6

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
VIEW_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Dropout"}
CONV_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}
GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat"}
# Ops that compute in int8 by their type: the standard ONNX ones and com.microsoft's.
QOPERATOR = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", *MS_QUANT_OPS}
POOL_OPS = {
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
MOVE_OPS = {
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
ACT_OPS = {"Relu", "Clip", "LeakyRelu", "HardSigmoid"}
# Fused attention (com.microsoft): projection (Attention, QAttention) and scores in one kernel.
ATTENTION_OPS = {"Attention", "QAttention", "MultiHeadAttention"}
# Other fused transformer ops: elementwise passes over their output, one per op they replace.
FUSED_PASSES = {
    "SkipLayerNormalization": 2,
    "SkipSimplifiedLayerNormalization": 2,
    "BiasGelu": 2,
    "FastGelu": 2,
    "EmbedLayerNormalization": 2,
}
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
    "QAttention": (0, 1, 2, 5),
    "Clip": (0,),
    "Reshape": (0,),
    "Resize": (0,),
    "Pad": (0,),
    "Slice": (0,),
}
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def load_model(
    onnx_path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """The model with inferred shapes, and notes on the dynamic input dims it fixed: a
    sample dim of an input named in ``input_shapes`` (one sample's shape per input, e.g.
    ``{"input_ids": (32,)}``: the sequence length) takes that size, any other dynamic dim
    (the batch) is set to 1. Attention's cost grows with the sequence squared: it must not
    be estimated at one token.

    Raises ConfigError for a missing or unreadable file or failed shape inference.
    """
    import onnx

    try:
        model = onnx.load(str(onnx_path))
    except FileNotFoundError:
        raise ConfigError(f"{onnx_path}: ONNX file not found") from None
    except Exception as exc:
        raise ConfigError(f"{onnx_path}: not a readable ONNX model: {exc}") from None
    notes = _fix_dynamic_dims(model.graph, input_shapes or {})
    # Stale value_info and output shapes would override what inference derives.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    try:
        model = infer_shapes(model)
    except Exception as exc:
        raise ConfigError(f"{onnx_path}: ONNX shape inference failed: {exc}") from None
    return model, notes


def _fix_dynamic_dims(g: onnx.GraphProto, input_shapes: Mapping[str, Sequence[int]]) -> list[str]:
    notes: list[str] = []
    init_names = {i.name for i in g.initializer}
    for inp in g.input:
        if inp.name in init_names:
            continue
        sample = input_shapes.get(inp.name)
        for i, d in enumerate(inp.type.tensor_type.shape.dim):
            if d.HasField("dim_param") or d.dim_value <= 0:
                label = d.dim_param or "?"
                d.Clear()
                if sample is not None and 0 < i <= len(sample):
                    d.dim_value = int(sample[i - 1])
                    notes.append(
                        f"input '{inp.name}' dim {i} ('{label}') is dynamic: set to "
                        f"{d.dim_value} (its input's shape)"
                    )
                    continue
                d.dim_value = 1
                notes.append(f"input '{inp.name}' dim {i} ('{label}') is dynamic: assumed 1")
    return notes


def attr(node: Any, name: str, default: Any) -> Any:
    """The value of ``node``'s attribute ``name``, or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def data_inputs(n: Any) -> list[str]:
    """The inputs of ``n`` that carry data (not scales or zero points)."""
    idx = _DATA_INPUTS.get(n.op_type)
    ins = list(n.input)
    if idx is not None:
        ins = [ins[i] for i in idx if i < len(ins)]
    return [i for i in ins if i]


class Graph:
    """Shapes, producers/consumers, constants and storage aliases of one ONNX graph.

    ``canon`` (storage aliases) and ``elem_override`` (int8 storage of a float tensor) start
    empty; kernel formation fills them.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
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
        self._add_constant_nodes()
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
        self.folded_const = self._fold_constants()
        self.canon: dict[str, str] = {}
        self.elem_override: dict[str, int] = {}

    def _add_constant_nodes(self) -> None:
        from onnx import numpy_helper

        for n in self.nodes:
            if n.op_type != "Constant":
                continue
            for a in n.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    self.shape[n.output[0]] = tuple(arr.shape)
                    self.etype[n.output[0]] = a.t.data_type
                    self.initializers.add(n.output[0])

    def _fold_constants(self) -> set[int]:
        """Ids of nodes whose inputs are all constant (precomputed); their outputs are const."""
        folded: set[int] = set()
        for n in self.nodes:
            # ONNX Runtime keeps DequantizeLinear on constant weights (QDQ format): it either
            # folds into an int8 consumer or runs on every inference.
            all_const = bool(n.input) and all(
                (not i) or i in self.const or i in self.initializers for i in n.input
            )
            if n.op_type == "Constant" or (all_const and n.op_type != "DequantizeLinear"):
                folded.add(id(n))
                self.const.update(o for o in n.output if o)
        return folded

    def root(self, t: str) -> str:
        """The tensor whose storage ``t`` shares (itself when not an alias)."""
        while t in self.canon and self.canon[t] != t:
            t = self.canon[t]
        return t

    def numel(self, t: str) -> int | None:
        """Elements of ``t``; None when its shape is unknown."""
        s = self.shape.get(t)
        return None if s is None else int(math.prod(s))

    def nbytes(self, t: str) -> float:
        """Bytes of ``t`` as stored (0 when its shape is unknown)."""
        n = self.numel(t)
        if n is None:
            return 0.0
        size = self.elem_override.get(t) or ELEM_SIZE.get(self.etype.get(t, 1), 4)
        return float(n * size)

    def through_views_back(self, t: str) -> Any:
        """The producer of ``t``, looking through non-constant view nodes."""
        n = self.producer.get(t)
        while n is not None and n.op_type in VIEW_OPS and id(n) not in self.folded_const:
            n = self.producer.get(n.input[0])
        return n

    def through_views_fwd(self, t: str) -> list[Any]:
        """Consumers of ``t``, looking through view nodes."""
        out: list[Any] = []
        for c in self.consumers.get(t, []):
            if c.op_type in VIEW_OPS:
                out.extend(self.through_views_fwd(c.output[0]))
            else:
                out.append(c)
        return out
