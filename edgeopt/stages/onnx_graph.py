"""Reading an ONNX graph: op counts, MACs per op type, the compute nodes.

Used to find facts about a model before the search (the probe's ``matmul_heavy``) and to check
what the quantize stage produced.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.estimate import kernel_work

if TYPE_CHECKING:
    import onnx

MATMUL_HEAVY = 0.5
"""Share of MACs in MatMul/Gemm from which a graph counts as MatMul-heavy: only there does
dynamic quantization pay (it is restricted to MatMul/Gemm, ``ConvInteger`` being slower than
fp32)."""

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
)


def quant_node_counts(path: str | Path) -> dict[str, int]:
    """Counts of every op type in the graph (QuantizeLinear, QLinearConv, ...; zeros omitted)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


def op_types(path: str | Path) -> set[str]:
    """The op types the graph uses."""
    return set(quant_node_counts(path))


def quantized_node_count(path: str | Path) -> int:
    """Number of quantization-related nodes: Q/DQ, QLinear*, *Integer, DynamicQuantizeLinear."""
    counts = quant_node_counts(path)
    return sum(v for k, v in counts.items() if k in QUANT_OPS or k.startswith("QLinear"))


def shape_of(info: Any) -> list[int]:
    """Dims of a graph input/output/value_info; symbolic or unknown dims count as 1."""
    dims = info.type.tensor_type.shape.dim
    return [d.dim_value if d.dim_value > 0 else 1 for d in dims]


def compute_nodes(model: onnx.ModelProto) -> list[Any]:
    """The Conv/ConvTranspose/Gemm/MatMul nodes, in graph order."""
    return [n for n in model.graph.node if n.op_type in COMPUTE_OPS]


def matmul_mac_fraction(path: str | Path) -> float:
    """Share of the graph's MACs in MatMul/Gemm (0 for a pure CNN head-less graph).

    MACs are counted where the cost model counts them (``edgeopt.estimate``), unfused."""
    work = kernel_work(path, frozenset())
    total = sum(k.macs for k in work)
    matmul = sum(k.macs for k in work if k.op in ("MatMul", "Gemm"))
    return matmul / total if total else 0.0
