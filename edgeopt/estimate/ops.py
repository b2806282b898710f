"""What one ONNX node computes: its dtype in the runtime, its op class and its MACs / ops.

The one place edgeopt counts a node's work (one MAC = 2 ops); calibration uses it too.
"""

from __future__ import annotations

import math
from typing import Any

from edgeopt.estimate.graph import (
    ATTENTION_OPS,
    CONV_OPS,
    FUSED_PASSES,
    GEMM_OPS,
    INT8_TYPES,
    MOVE_OPS,
    POOL_OPS,
    QDQ_OPS,
    QOPERATOR,
    TENSOR_INT32,
    VIEW_OPS,
    WEIGHT_INPUT,
    Graph,
    attr,
    data_inputs,
)


def _float_dtype(etype: int) -> str:
    return {10: "fp16", 16: "fp16"}.get(etype, "fp32")


def _quant_source(g: Graph, t: str) -> bool:
    """Whether tensor ``t`` holds int8 data in the runtime (a DQ output or an int8 constant)."""
    if t in g.const:
        # weight: int8 initializer, possibly behind a (folded) DequantizeLinear / Identity
        n = g.producer.get(t)
        while n is not None and n.op_type in (VIEW_OPS | {"DequantizeLinear"}):
            t = n.input[0]
            n = g.producer.get(t)
        return g.etype.get(t) in INT8_TYPES
    p = g.through_views_back(t)
    return p is not None and p.op_type == "DequantizeLinear"


def node_dtype(g: Graph, n: Any) -> str:
    """The dtype ``n`` computes in: int8 for QOperator ops and for QDQ patterns the runtime
    fuses into an int8 kernel, else the float type of its output."""
    op = n.op_type
    if op in QOPERATOR:
        return "int8"
    out_type = g.etype.get(n.output[0], 1) if n.output else 1
    if op in WEIGHT_INPUT:
        return "int8" if _weight_op_is_int8(g, n) else _float_dtype(out_type)
    acts = [i for i in data_inputs(n) if i not in g.const]
    if acts and all(_quant_source(g, i) for i in acts):
        consumers = [c for o in n.output if o for c in g.through_views_fwd(o)]
        if consumers and all(c.op_type == "QuantizeLinear" for c in consumers):
            return "int8"
    return _float_dtype(out_type)


def _weight_op_is_int8(g: Graph, n: Any) -> bool:
    ins = list(n.input)
    # ORT fuses a QDQ conv only when its bias comes straight from a DequantizeLinear (or is
    # int32); otherwise (a float bias, or one behind an Identity) it runs a float conv on
    # dequantized inputs.
    bias = ins[2] if len(ins) > 2 else ""
    producer = g.producer.get(bias)
    bias_ok = (
        not bias
        or g.etype.get(bias) == TENSOR_INT32
        or (producer is not None and producer.op_type == "DequantizeLinear")
    )
    return _quant_source(g, ins[0]) and _quant_source(g, ins[WEIGHT_INPUT[n.op_type]]) and bias_ok


def conv_cost(g: Graph, n: Any) -> tuple[int, str]:
    """MACs of a convolution and its op class (dense, pointwise or depthwise)."""
    w = n.input[3] if n.op_type == "QLinearConv" else n.input[1]
    ws, xs, ys = g.shape.get(w), g.shape.get(n.input[0]), g.shape.get(n.output[0])
    if ws is None or ys is None or xs is None:
        return 0, "dense_conv"
    group = int(attr(n, "group", 1))
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


def gemm_cost(g: Graph, n: Any) -> int:
    """MACs of a Gemm / MatMul (and their quantized forms)."""
    a = n.input[0]
    ashape, yshape = g.shape.get(a), g.shape.get(n.output[0])
    if ashape is None or yshape is None:
        return 0
    if n.op_type in ("Gemm", "QGemm"):
        k = ashape[0] if attr(n, "transA", 0) else ashape[1]
    else:
        k = ashape[-1]
    return int(math.prod(yshape)) * int(k)


def attention_cost(g: Graph, n: Any) -> tuple[int, float]:
    """MACs and elementwise ops of a fused attention node.

    MACs: the packed q/k/v projection ``B·S·Din·(Dq+Dk+Dv)`` (Attention, QAttention; a
    MultiHeadAttention gets projected inputs) plus ``B·S·Skv·(Dq+Dv)`` for q·kᵀ and attn·v
    over all heads. Elementwise: the bias add, and scaling and softmax of the scores.
    """
    xs, ys = g.shape.get(n.input[0]), g.shape.get(n.output[0])
    if xs is None or ys is None or len(xs) != 3:
        return 0, 0.0
    b, s = xs[0], xs[1]
    heads = int(attr(n, "num_heads", 1))
    if n.op_type == "MultiHeadAttention":
        ks = g.shape.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
        skv = s if ks is None else (ks[1] if len(ks) == 3 else ks[2])
        dq = dv = ys[-1]
        proj = bias_add = 0
    else:
        ws = g.shape.get(n.input[1])
        if ws is None or len(ws) != 2:
            return 0, 0.0
        sizes = [int(x) for x in attr(n, "qkv_hidden_sizes", [])] or [ws[1] // 3] * 3
        dq, dv, skv = sizes[0], sizes[2], s
        proj, bias_add = b * s * ws[0] * ws[1], b * s * ws[1]
    macs = proj + b * s * skv * (dq + dv)
    return int(macs), float(bias_add + 2 * b * heads * s * skv)


def node_work(g: Graph, n: Any) -> tuple[str, int, float]:
    """``(op class, MACs, ops)`` of node ``n``; ops are 2 x MACs for conv, gemm and fused
    attention (plus its elementwise work)."""
    op = n.op_type
    if op in ATTENTION_OPS:
        macs, elementwise = attention_cost(g, n)
        return "gemm", macs, 2.0 * macs + elementwise
    if op in FUSED_PASSES:
        return "elementwise", 0, float(FUSED_PASSES[op] * (g.numel(n.output[0]) or 0))
    if op in CONV_OPS:
        macs, op_class = conv_cost(g, n)
        return op_class, macs, 2.0 * macs
    if op in GEMM_OPS:
        macs = gemm_cost(g, n)
        return "gemm", macs, 2.0 * macs
    if op in POOL_OPS:
        if op.startswith(("Global", "QLinearGlobal", "Reduce")):
            return "pool", 0, float(g.numel(n.input[0]) or 0)
        window = int(math.prod(attr(n, "kernel_shape", [1])))
        return "pool", 0, float((g.numel(n.output[0]) or 0) * window)
    if op in QDQ_OPS:
        return "quantize", 0, float(sum(g.numel(o) or 0 for o in n.output if o))
    if op in MOVE_OPS:
        return "data_movement", 0, 0.0
    return "elementwise", 0, float(sum(g.numel(o) or 0 for o in n.output if o))
