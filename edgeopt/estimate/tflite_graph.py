"""A TFLite flatbuffer read as the ONNX graph the cost model counts: the estimate of an
Edge TPU or TFLite Micro target is then made for the very file that device would run (its
ops, its tensors' types and sizes, its full-integer I/O), not for the ONNX candidate it was
converted from.

Each TFLite operator of the main subgraph becomes the ONNX node that computes the same
(``CONV_2D`` -> ``Conv``, ``DEPTHWISE_CONV_2D`` -> a grouped ``Conv``, ``FULLY_CONNECTED`` ->
``Gemm``, or ``MatMul`` + ``Add`` on more than two dims, ...), with every tensor's shape and type
taken from the file (no shape inference: TFLite stores them); 4-D activations and filters are
permuted from TFLite's NHWC/OHWI to ONNX's NCHW/OIHW, which the cost model's MAC count reads.
Integer arithmetic is written as ONNX's QDQ form, which the cost model already reads as int8
kernels: a quantized input of a computing op goes through a ``DequantizeLinear``, a quantized
output comes out of a ``QuantizeLinear``; moves and views (``RESHAPE``, ``CONCATENATION``, ...)
pass integer tensors as they are. A fused activation is part of its TFLite kernel and adds no
node. An operator without an ONNX counterpart here keeps its TFLite name (``TFL_<NAME>``):
counted as one elementwise pass over its outputs and, being in no unit's op list, run by the
fallback unit; the estimate's notes name such ops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import ConfigError

if TYPE_CHECKING:
    import onnx

# TFLite TensorType name -> (ONNX elem type, numpy dtype)
_TYPES: dict[str, tuple[int, Any]] = {
    "FLOAT32": (1, np.float32),
    "UINT8": (2, np.uint8),
    "INT8": (3, np.int8),
    "UINT16": (4, np.uint16),
    "INT16": (5, np.int16),
    "INT32": (6, np.int32),
    "INT64": (7, np.int64),
    "BOOL": (9, np.bool_),
    "FLOAT16": (10, np.float16),
    "FLOAT64": (11, np.float64),
    "UINT32": (12, np.uint32),
    "UINT64": (13, np.uint64),
}
_QUANTIZED = {"INT8", "UINT8", "INT16"}
"""Tensor types that hold quantized values (with a scale and zero point)."""

# TFLite op -> ONNX op, for ops that need no attribute the cost model reads
_SIMPLE = {
    "ADD": "Add",
    "SUB": "Sub",
    "MUL": "Mul",
    "DIV": "Div",
    "MAXIMUM": "Max",
    "MINIMUM": "Min",
    "SQUARED_DIFFERENCE": "Sub",
    "POW": "Pow",
    "RELU": "Relu",
    "RELU6": "Clip",
    "RELU_N1_TO_1": "Clip",
    "RELU_0_TO_1": "Clip",
    "LOGISTIC": "Sigmoid",
    "TANH": "Tanh",
    "HARD_SWISH": "HardSwish",
    "LEAKY_RELU": "LeakyRelu",
    "PRELU": "PRelu",
    "GELU": "Gelu",
    "EXP": "Exp",
    "LOG": "Log",
    "SQRT": "Sqrt",
    "RSQRT": "Sqrt",
    "ABS": "Abs",
    "NEG": "Neg",
    "SQUARE": "Mul",
    "SOFTMAX": "Softmax",
    "LOG_SOFTMAX": "LogSoftmax",
    "MEAN": "ReduceMean",
    "SUM": "ReduceSum",
    "REDUCE_MAX": "ReduceMax",
    "REDUCE_MIN": "ReduceMin",
    "L2_NORMALIZATION": "LpNormalization",
    "BATCH_MATMUL": "MatMul",
    "EMBEDDING_LOOKUP": "Gather",
}
_MOVES = {
    "RESHAPE": "Reshape",
    "SQUEEZE": "Squeeze",
    "EXPAND_DIMS": "Unsqueeze",
    "TRANSPOSE": "Transpose",
    "CONCATENATION": "Concat",
    "PACK": "Concat",
    "UNPACK": "Split",
    "SPLIT": "Split",
    "SPLIT_V": "Split",
    "PAD": "Pad",
    "PADV2": "Pad",
    "MIRROR_PAD": "Pad",
    "STRIDED_SLICE": "Slice",
    "SLICE": "Slice",
    "GATHER": "Gather",
    "TILE": "Tile",
    "BROADCAST_TO": "Expand",
    "RESIZE_BILINEAR": "Resize",
    "RESIZE_NEAREST_NEIGHBOR": "Resize",
    "SPACE_TO_DEPTH": "SpaceToDepth",
    "DEPTH_TO_SPACE": "DepthToSpace",
    "CAST": "Cast",
}
"""Ops that move or view data: integer tensors pass through them unchanged."""
_POOLS = {"AVERAGE_POOL_2D": "AveragePool", "MAX_POOL_2D": "MaxPool"}


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise ConfigError(
            "reading a .tflite file needs the LiteRT schema (ai-edge-litert)",
            hint="pip install 'edgeopt[litert]'",
        ) from None
    return schema_py_generated


def _opt(opts: Any, name: str) -> int:
    """An operator's int option (1 where the file leaves its options out)."""
    return int(getattr(opts, name, 1) or 1)


def _names(enum_class: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


@dataclass
class _Builder:
    """The ONNX graph under construction: nodes, initializers, value infos, and the QDQ
    tensors already made (one DequantizeLinear per quantized tensor)."""

    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    infos: dict[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    dq: dict[str, str] = field(default_factory=dict)
    scalars: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)

    def node(self, op: str, ins: list[str], outs: list[str], **attrs: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, outs, **attrs))

    def init(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def scalar(self, name: str, value: Any, dtype: Any) -> str:
        if name not in self.scalars:
            self.scalars.add(name)
            self.init(name, np.array(value, dtype=dtype))
        return name


class _Reader:
    """One TFLite model's main subgraph, written into a ``_Builder``."""

    def __init__(self, path: Path) -> None:
        schema = _schema()
        self.buf = buf = path.read_bytes()
        if not schema.Model.ModelBufferHasIdentifier(buf, 0):
            raise ConfigError(
                f"{path}: not a TFLite flatbuffer (no TFL3 identifier)",
                hint="pass the .tflite file edgeopt or the LiteRT converter wrote",
            )
        self.model = schema.ModelT.InitFromPackedBuf(buf, 0)
        self.graph = self.model.subgraphs[0]
        ops = _names(schema.BuiltinOperator)
        self.types = _names(schema.TensorType)
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in self.model.operatorCodes]
        self.op_names = [ops.get(c, "CUSTOM") for c in codes]
        self.b = _Builder()
        self.subgraphs = len(self.model.subgraphs)

    # -- tensors
    def tname(self, i: int) -> str:
        return f"t{i}"

    def ttype(self, i: int) -> str:
        return self.types[self.graph.tensors[i].type]

    def shape(self, i: int) -> tuple[int, ...]:
        t = self.graph.tensors[i]
        dims = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        return tuple(max(d, 1) for d in dims)

    def data(self, i: int) -> np.ndarray | None:
        t = self.graph.tensors[i]
        buf = self.model.buffers[t.buffer] if t.buffer < len(self.model.buffers) else None
        raw = None if buf is None else buf.data
        if buf is not None and (raw is None or len(raw) == 0) and buf.offset > 1 and buf.size:
            raw = self.buf[buf.offset : buf.offset + buf.size]
        if raw is None or len(raw) == 0:
            return None
        dtype = _TYPES.get(self.ttype(i), (1, np.uint8))[1]
        # inline data reads as a uint8 array; data at an offset (ai-edge-quantizer puts
        # buffers over ~1 KB there) is a slice of the file's bytes
        blob = raw if isinstance(raw, bytes) else np.asarray(raw, dtype=np.uint8).tobytes()
        arr = np.frombuffer(blob, dtype=dtype)
        return arr.reshape(self.shape(i)) if arr.size == int(np.prod(self.shape(i))) else arr

    def onnx_type(self, i: int) -> int:
        return _TYPES.get(self.ttype(i), (1, np.float32))[0]

    def declare(self, i: int) -> str:
        """Declare tensor ``i`` (constants as initializers, 4-D activations in NCHW)."""
        name = self.tname(i)
        if name in self.b.infos:
            return name
        arr = self.data(i)
        if arr is not None:
            self.b.init(name, arr)
            self.b.infos[name] = (self.onnx_type(i), tuple(arr.shape))
            return name
        shape = self.shape(i)
        if len(shape) == 4:
            shape = (shape[0], shape[3], shape[1], shape[2])
        self.b.infos[name] = (self.onnx_type(i), shape)
        return name

    def quantized(self, i: int) -> bool:
        return self.ttype(i) in _QUANTIZED

    def float_in(self, i: int) -> str:
        """Tensor ``i`` as a computing op reads it: through a DequantizeLinear when quantized."""
        return self.dequantized(i, self.declare(i))

    def dequantized(self, i: int, name: str) -> str:
        """``name`` (tensor ``i``, or a re-laid-out copy of its values) as float: itself, or
        the output of one DequantizeLinear made for it."""
        if not self.quantized(i):
            return name
        if name not in self.b.dq:
            out = f"{name}_dq"
            self.b.node("DequantizeLinear", [name, self.scale(), self.zero_point(i)], [out])
            self.b.infos[out] = (1, self.b.infos[name][1])
            self.b.dq[name] = out
        return self.b.dq[name]

    def scale(self) -> str:
        """The one scale every Q/DQ node shares (its value never enters the cost)."""
        return self.b.scalar("scale", 1.0, np.float32)

    def zero_point(self, i: int) -> str:
        t = self.ttype(i)
        return self.b.scalar(f"zp_{t.lower()}", 0, _TYPES[t][1])

    def float_out(self, i: int) -> str:
        """Where a computing op writes tensor ``i``: a float tensor quantized into it when
        ``i`` is quantized."""
        name = self.declare(i)
        if not self.quantized(i):
            return name
        pre = f"{name}_f"
        self.b.infos[pre] = (1, self.b.infos[name][1])
        self.b.node("QuantizeLinear", [pre, self.scale(), self.zero_point(i)], [name])
        return pre

    # -- operators
    def run(self) -> None:
        for op in self.graph.operators or []:
            name = self.op_names[op.opcodeIndex]
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            self.operator(name, [i for i in ins if i >= 0], outs, op.builtinOptions)

    def operator(self, name: str, ins: list[int], outs: list[int], opts: Any) -> None:
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            self.conv(name, ins, outs[0], opts)
        elif name == "FULLY_CONNECTED":
            self.fully_connected(ins, outs[0])
        elif name in _POOLS:
            kernel = [_opt(opts, "filterHeight"), _opt(opts, "filterWidth")]
            strides = [_opt(opts, "strideH"), _opt(opts, "strideW")]
            args = [self.float_in(ins[0])]
            self.b.node(
                _POOLS[name], args, [self.float_out(outs[0])], kernel_shape=kernel, strides=strides
            )
        elif name in _MOVES:
            self.b.node(
                _MOVES[name], [self.declare(i) for i in ins], [self.declare(o) for o in outs]
            )
        elif name == "QUANTIZE":  # float -> int, or a requantization int -> int
            args = [self.float_in(ins[0]), self.scale(), self.zero_point(outs[0])]
            self.b.node("QuantizeLinear", args, [self.declare(outs[0])])
        elif name == "DEQUANTIZE":
            args = [self.declare(ins[0]), self.scale(), self.zero_point(ins[0])]
            self.b.node("DequantizeLinear", args, [self.declare(outs[0])])
        else:
            op = _SIMPLE.get(name)
            if op is None:
                self.b.unknown.add(name)
                op = f"TFL_{name}"
            self.b.node(op, [self.float_in(i) for i in ins], [self.float_out(o) for o in outs])

    def conv(self, name: str, ins: list[int], out: int, opts: Any) -> None:
        x, w = ins[0], ins[1]
        warr = self.data(w)
        if warr is None or warr.ndim != 4:
            raise ConfigError(
                f"TFLite {name} with a non-constant or non-4-D filter is not supported"
            )
        if name == "CONV_2D":
            onnx_w, group = np.transpose(warr, (0, 3, 1, 2)), 1  # OHWI -> OIHW
        else:
            onnx_w = np.transpose(warr, (3, 0, 1, 2))  # 1HW(C*m) -> (C*m)1HW
            group = self.shape(x)[3]
        wname = self.b.init(f"{self.tname(w)}_oihw", np.ascontiguousarray(onnx_w))
        self.b.infos[wname] = (self.onnx_type(w), tuple(onnx_w.shape))
        args = [self.float_in(x), self.dequantized(w, wname)]
        if len(ins) > 2:
            args.append(self.declare(ins[2]))  # an int32 bias: ORT's QDQ conv fuses it
        self.b.node(
            "Conv",
            args,
            [self.float_out(out)],
            kernel_shape=list(onnx_w.shape[2:]),
            strides=[_opt(opts, "strideH"), _opt(opts, "strideW")],
            group=int(group),
        )

    def fully_connected(self, ins: list[int], out: int) -> None:
        x, w = ins[0], ins[1]
        xs, ys = self.shape(x), self.shape(out)
        bias = self.declare(ins[2]) if len(ins) > 2 else None
        warr = self.data(w)
        if len(xs) == 2 and len(ys) == 2:
            args = [self.float_in(x), self.float_in(w)] + ([bias] if bias else [])
            self.b.node("Gemm", args, [self.float_out(out)], transB=1)
            return
        # N-D input: MatMul on the transposed weight, then the bias
        if warr is not None:
            wt = self.b.init(f"{self.tname(w)}_t", np.ascontiguousarray(warr.T))
            self.b.infos[wt] = (self.onnx_type(w), tuple(warr.T.shape))
            wname = self.dequantized(w, wt)
        else:
            wname = self.float_in(w)
        target = self.float_out(out)
        mm = target if bias is None else f"{target}_mm"
        if bias is not None:
            self.b.infos[mm] = (1, ys)
        self.b.node("MatMul", [self.float_in(x), wname], [mm])
        if bias is not None:
            self.b.node("Add", [mm, bias], [target])


def tflite_as_onnx(path: str | Path) -> tuple[onnx.ModelProto, list[str]]:
    """The TFLite file at ``path`` as an ONNX model for the cost model (module docstring),
    with notes for the estimate; ConfigError for a missing or unreadable file."""
    from onnx import helper

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: TFLite file not found")
    r = _Reader(p)
    r.run()
    b = r.b
    inputs = [r.declare(int(i)) for i in r.graph.inputs]
    outputs = [r.declare(int(i)) for i in r.graph.outputs]
    consts = {i.name for i in b.inits}
    vi = {n: helper.make_tensor_value_info(n, t, list(s)) for n, (t, s) in b.infos.items()}
    graph = helper.make_graph(
        b.nodes,
        "tflite",
        [vi[n] for n in inputs],
        [vi[n] for n in outputs],
        initializer=b.inits,
        value_info=[
            v for n, v in vi.items() if n not in consts and n not in inputs and n not in outputs
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    notes = [f"read from the TFLite file: {len(r.graph.operators or [])} ops of its main graph"]
    if r.subgraphs > 1:
        notes.append(f"{r.subgraphs - 1} other subgraph(s) of the file not counted")
    if b.unknown:
        notes.append(
            "TFLite ops without an ONNX counterpart, counted as one elementwise pass on the "
            f"fallback unit: {', '.join(sorted(b.unknown))}"
        )
    return model, notes
