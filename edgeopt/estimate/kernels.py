"""Kernel formation: ONNX nodes grouped into the kernels a runtime launches, and the tensors
(storage roots) each kernel reads and writes.

Views are free aliases; constant subgraphs fold away; Conv+BatchNormalization+Add+Relu and
Gemm+Relu fuse as the profile's ``fusions`` allow; in QDQ graphs a DequantizeLinear folds into
int8 consumers and a QuantizeLinear into an int8 producer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from edgeopt.estimate.graph import (
    ACT_OPS,
    CONV_OPS,
    ELEM_SIZE,
    GEMM_OPS,
    VIEW_OPS,
    Graph,
    data_inputs,
)
from edgeopt.estimate.ops import node_dtype, node_work
from edgeopt.profiles import ComputeUnit


@dataclass
class Kernel:
    """One launched kernel: its fused ``nodes`` (``anchor`` first), what it computes, the
    storage roots it reads and writes, and (after placement) its unit."""

    nodes: list[Any]
    anchor: Any
    dtype: str = "fp32"
    op_class: str = "elementwise"
    macs: int = 0
    ops: float = 0.0
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    unit: ComputeUnit | None = None


@dataclass(frozen=True)
class Dataflow:
    """Which kernels read each storage root, and the roots that are graph outputs."""

    readers: dict[str, set[int]]
    out_roots: set[str]


def build_kernels(g: Graph, fusions: frozenset[str]) -> list[Kernel]:
    """The kernels of ``g`` in node order, with dtype, op class, MACs and ops.

    Fills ``g.canon`` (storage aliases) and ``g.elem_override`` as folding decides them.
    """
    dtype = {id(n): node_dtype(g, n) for n in g.nodes}
    folded = _fold_aliases(g, dtype)
    kernels: list[Kernel] = []
    owner: dict[int, Kernel] = {}
    for n in g.nodes:
        if id(n) in folded or id(n) in owner or n.op_type in VIEW_OPS:
            continue
        if n.op_type == "QuantizeLinear" and _fold_quantize(g, n, owner):
            folded.add(id(n))
            continue
        k = Kernel(nodes=[n], anchor=n, dtype=dtype[id(n)])
        owner[id(n)] = k
        kernels.append(k)
        if n.op_type in CONV_OPS or n.op_type in GEMM_OPS:
            _fuse_followers(g, k, fusions, owner, dtype)
    for k in kernels:
        k.op_class, k.macs, k.ops = node_work(g, k.anchor)
    return kernels


def _fold_aliases(g: Graph, dtype: dict[int, str]) -> set[int]:
    """Record views and folded DequantizeLinear nodes as storage aliases; the folded node ids."""
    for n in g.nodes:
        if n.op_type in VIEW_OPS and n.input and n.output:
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
        if id(n) in g.folded_const and n.op_type in (VIEW_OPS | {"DequantizeLinear"}):
            g.canon[n.output[0]] = n.input[0]
    return folded


def _fold_quantize(g: Graph, n: Any, owner: dict[int, Kernel]) -> bool:
    """Fold QuantizeLinear ``n`` into an int8 producer (which then writes int8); whether it did."""
    p = g.through_views_back(n.input[0])
    if p is None or id(p) not in owner or owner[id(p)].dtype != "int8":
        return False
    g.canon[n.output[0]] = n.input[0]
    src = g.root(n.input[0])
    g.elem_override[src] = ELEM_SIZE.get(g.etype.get(n.output[0], 2), 1)
    return True


def _fuse_followers(
    g: Graph,
    k: Kernel,
    fusions: frozenset[str],
    owner: dict[int, Kernel],
    dtype: dict[int, str],
) -> None:
    """Append to ``k`` the single-consumer BatchNormalization / Add / activation chain that the
    runtime fuses into a conv or gemm (in that order, each at most once)."""
    is_conv = k.anchor.op_type in CONV_OPS
    stage = 0  # 0: after anchor, 1: after bn, 2: after add, 3: after act
    while True:
        out = k.nodes[-1].output[0]
        consumers = g.consumers.get(out, [])
        if len(consumers) != 1 or out in g.graph_outputs:
            return
        c = consumers[0]
        if id(c) in owner:
            return
        next_stage = _fusion_stage(g, c, is_conv, stage, fusions)
        if next_stage is None:
            return
        stage = next_stage
        if dtype[id(c)] == "int8":
            k.dtype = "int8"
        k.nodes.append(c)
        owner[id(c)] = k


def _fusion_stage(
    g: Graph, c: Any, is_conv: bool, stage: int, fusions: frozenset[str]
) -> int | None:
    """The fusion stage node ``c`` brings the kernel to, or None when it does not fuse."""
    op = c.op_type
    if op == "BatchNormalization" and is_conv and stage < 1 and "conv_bn" in fusions:
        return 1
    if op == "Add" and stage < 2:
        if is_conv and "conv_add" in fusions:
            return 2
        if not is_conv and "gemm_act" in fusions and any(i in g.const for i in c.input):
            return 2
    if op in ACT_OPS and stage < 3:
        key = "conv_act" if is_conv else "gemm_act"
        if key in fusions:
            return 3
    return None


def connect(g: Graph, kernels: list[Kernel]) -> Dataflow:
    """Fill each kernel's ``reads`` and ``writes`` (storage roots that cross kernels)."""
    produced_by: dict[str, int] = {}
    for ki, k in enumerate(kernels):
        for o in (o for n in k.nodes for o in n.output if o):
            produced_by[g.root(o)] = ki
    readers: dict[str, set[int]] = defaultdict(set)
    for ki, k in enumerate(kernels):
        _add_reads(g, k, ki, produced_by, readers)
    out_roots = {g.root(o) for o in g.graph_outputs}
    for ki, k in enumerate(kernels):
        for o in (o for n in k.nodes for o in n.output):
            r = g.root(o) if o else ""
            external = bool(readers.get(r, set()) - {ki}) or r in out_roots
            if r and produced_by.get(r) == ki and r not in k.writes and external:
                k.writes.append(r)
    return Dataflow(readers=readers, out_roots=out_roots)


def _add_reads(
    g: Graph, k: Kernel, ki: int, produced_by: dict[str, int], readers: dict[str, set[int]]
) -> None:
    """Record the roots kernel ``k`` (index ``ki``) reads from outside itself."""
    for t in (t for n in k.nodes for t in data_inputs(n)):
        r = g.root(t)
        if produced_by.get(r) == ki:
            continue
        if t in g.const and (g.numel(r) or 0) <= 1:
            continue  # scalar constants (clip bounds) live in the kernel
        if r not in k.reads:
            k.reads.append(r)
        readers[r].add(ki)


def schedule(g: Graph, kernels: list[Kernel]) -> list[int]:
    """Kernel indices in execution order: by the position of each kernel's last node."""
    pos = {id(n): i for i, n in enumerate(g.nodes)}
    return sorted(range(len(kernels)), key=lambda ki: pos[id(kernels[ki].nodes[-1])])
