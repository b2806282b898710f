"""Tensor shapes for the cost model: ONNX shape inference, completed by ONNX Runtime's
symbolic shape inference where ONNX's leaves a node's output unknown.

ONNX's inference loses a dim it cannot propagate as data (a ViT's ``cls.expand(x.shape[0],
...)`` exports to Shape/Expand/Where: every token after it had no shape, so its MatMuls
counted 0 MACs) and knows no com.microsoft op (a fused Attention, SkipLayerNormalization).
ONNX Runtime's symbolic inference propagates shape data through those and knows the
contrib ops; it is used only where it leaves fewer tensors unknown.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the shapes ONNX infers, or the symbolic ones where those are more
    complete. Raises what ``onnx.shape_inference.infer_shapes`` raises."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    missing = unknown_outputs(inferred)
    if not missing:
        return inferred
    symbolic = _symbolic(model)
    if symbolic is not None and len(unknown_outputs(symbolic)) < len(missing):
        return symbolic
    return inferred


def unknown_outputs(model: onnx.ModelProto) -> list[str]:
    """Node outputs of ``model`` without a fully static shape, in node order."""
    g = model.graph
    known = {i.name for i in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            known.add(vi.name)
    return [o for n in g.node if n.op_type != "Constant" for o in n.output if o and o not in known]


def _symbolic(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """ONNX Runtime's symbolic shape inference of ``model``, as far as it gets; None when it
    fails or is not installed.

    Its ``infer_shapes`` writes an incomplete result to ``sym_shape_infer_temp.onnx`` in the
    working directory and raises; this runs the same steps without that file, keeping what
    was inferred up to the op it stopped at.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return None
    sym = SymbolicShapeInference(2**31 - 1, False, False, 0)
    sym.dispatcher_.setdefault("QAttention", lambda node: _infer_qattention(sym, node))
    quiet = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        sym._preprocess(model)
        while sym.run_:
            sym._infer_impl()
        sym._update_output_from_vi()
        out: onnx.ModelProto = sym.out_mp_  # its value_info: every node output it reached
        return out
    except Exception:  # any failure inside ORT's tool: keep ONNX's shapes
        return None
    finally:
        quiet.setLevel(level)


def _infer_qattention(sym: Any, node: Any) -> None:
    """QAttention's output: its input's shape with the value hidden size (the symbolic
    inference has no rule for it and stops there)."""
    from onnx import helper

    src = sym.known_vi_.get(node.input[0])
    bias = sym.known_vi_.get(node.input[2]) if len(node.input) > 2 else None
    scale = sym.known_vi_.get(node.input[3]) if len(node.input) > 3 else None
    if src is None or bias is None or scale is None:
        return
    dims: list[Any] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in src.type.tensor_type.shape.dim
    ]
    sizes = [int(a.ints[2]) for a in node.attribute if a.name == "qkv_hidden_sizes" and a.ints]
    bias_dims = bias.type.tensor_type.shape.dim
    if len(dims) != 3 or (not sizes and len(bias_dims) != 1):
        return
    dims[2] = sizes[0] if sizes else bias_dims[0].dim_value // 3
    elem = scale.type.tensor_type.elem_type
    sym.known_vi_[node.output[0]].CopyFrom(
        helper.make_tensor_value_info(node.output[0], elem, dims)
    )
