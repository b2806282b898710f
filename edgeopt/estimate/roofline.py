"""Placement of kernels on the profile's units, and their time there: a per-kernel roofline
``max(ops / (peak * eff), bytes / bandwidth) + overhead`` plus transfers between units."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from edgeopt.estimate.energy import kernel_energy_pj
from edgeopt.estimate.flavour import Flavour, flavour_bound
from edgeopt.estimate.graph import QDQ_OPS, Graph
from edgeopt.estimate.kernels import Kernel
from edgeopt.estimate.result import NodeCost
from edgeopt.profiles import ComputeUnit, HardwareProfile


def place(
    profile: HardwareProfile,
    g: Graph,
    kernels: list[Kernel],
    order: list[int],
    flavour: Flavour | None = None,
) -> set[str]:
    """Set each kernel's unit; return the op types that left the preferred unit.

    A kernel runs on the first unit that supports all its ops at its dtype, following
    ``fallback``. With ``single_prefix`` partitioning (Edge TPU) every kernel after the first
    fallback falls back too. For a QDQ graph (``flavour``), an accelerator unit runs its int8
    and Q/DQ kernels only when the flavour is the target's (see :class:`_Support`).
    """
    assert profile.runtime is not None
    fallen = False
    single_prefix = profile.runtime.partition_policy == "single_prefix"
    preferred = profile.units[0]
    fallback_ops: set[str] = set()
    support = _Support(g, kernels, None if flavour is None else flavour.matches(profile))
    inputs, out_names = set(g.graph_inputs), set(g.graph_outputs)
    for ki in order:
        k = kernels[ki]
        k.unit = _first_supporting(profile, k, support)
        if single_prefix and fallen and k.unit is preferred:
            k.unit = profile.unit(preferred.fallback) if preferred.fallback else preferred
        if k.unit is not preferred:
            fallback_ops.update(n.op_type for n in k.nodes)
            # Quantizing graph inputs / dequantizing outputs is host-side pre/post-processing
            # and does not end the accelerator's partition.
            boundary = (k.anchor.op_type == "QuantizeLinear" and k.anchor.input[0] in inputs) or (
                k.anchor.op_type == "DequantizeLinear" and k.anchor.output[0] in out_names
            )
            fallen = fallen or not boundary
    return fallback_ops


def _first_supporting(profile: HardwareProfile, k: Kernel, support: _Support) -> ComputeUnit:
    unit = profile.units[0]
    while not support.runs(unit, k):
        if unit.fallback is None:
            return unit
        unit = profile.unit(unit.fallback)
    if support.native and flavour_bound(unit) and k.anchor.op_type in QDQ_OPS:
        k.dtype = "int8"  # Q/DQ of the unit's own flavour: (de)quantizing at its int8 rate
    return unit


class _Support:
    """Which unit runs a kernel of a graph whose int8 flavour is the target's (``native``
    True), another target's (False) or that has none (None).

    On an accelerator unit (:func:`flavour_bound`) int8 kernels run only for a native
    flavour, and so do Q/DQ kernels, each with the op it belongs to as ONNX Runtime groups
    QDQ node units (a DequantizeLinear with its consumers, a QuantizeLinear with its
    producer); one with no such op (quantizing a graph input, dequantizing an output) runs on
    the unit. Other units (CPUs) run any flavour.
    """

    def __init__(self, g: Graph, kernels: list[Kernel], native: bool | None) -> None:
        self.g, self.native = g, native
        self.owner = {id(n): k for k in kernels for n in k.nodes}

    def runs(self, unit: ComputeUnit, k: Kernel) -> bool:
        """Whether ``unit`` runs kernel ``k``."""
        ops = {n.op_type for n in k.nodes}
        if (
            self.native is None
            or not flavour_bound(unit)
            or not (k.dtype == "int8" or ops & QDQ_OPS)
        ):
            return all(unit.supports(op, k.dtype) for op in ops)
        if not self.native or "int8" not in unit.peak_gops:
            return False
        if k.anchor.op_type in QDQ_OPS:
            return all(self._peer_runs(unit, p) for p in self._peers(k.anchor))
        return all(unit.supports(op, "int8") for op in ops)

    def _peers(self, n: Any) -> list[Any]:
        if n.op_type == "DequantizeLinear":
            return self.g.through_views_fwd(n.output[0])
        p = self.g.through_views_back(n.input[0])
        return [] if p is None else [p]

    def _peer_runs(self, unit: ComputeUnit, node: Any) -> bool:
        k = self.owner.get(id(node))
        return k is None or k.anchor.op_type in QDQ_OPS or self.runs(unit, k)


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


@dataclass
class Timeline:
    """Kernel and transfer costs in execution order, and what they add up to.

    ``busy_s`` is compute time per unit id (in order of first use); ``low_pj`` the lower-bound
    energy; ``fallback_ops`` the ops run off the preferred unit.
    """

    costs: list[NodeCost] = field(default_factory=list)
    busy_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    transfer_s: float = 0.0
    low_pj: float = 0.0
    total_ops: float = 0.0
    fallback_ops: float = 0.0
    dtype_notes: set[str] = field(default_factory=set)


class _Timer:
    """Walks placed kernels in order, tracking which units hold each tensor."""

    def __init__(self, profile: HardwareProfile, g: Graph, weight_bytes_read: float) -> None:
        self.profile, self.g = profile, g
        self.host = profile.host_unit
        self.weight_bytes_read = weight_bytes_read
        self.location: dict[str, set[str]] = {
            r: {self.host.id} for r in (g.root(i) for i in g.graph_inputs)
        }
        self.tl = Timeline()

    def transfer(self, root: str, src: ComputeUnit, dst: ComputeUnit) -> None:
        """Move tensor ``root`` from ``src`` to ``dst``: ``bytes / link bandwidth + latency``."""
        bw, lat = _link(src, dst)
        b = self.g.nbytes(root)
        t = b / (bw * 1e9) + lat * 1e-6
        self.tl.transfer_s += t
        self.tl.low_pj += b * self.profile.pj_per_byte
        self.tl.costs.append(
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

    def _src_unit(self, locs: set[str]) -> ComputeUnit:
        return next(x for x in self.profile.units if x.id in locs)

    def move_operands(self, k: Kernel, u: ComputeUnit) -> None:
        """Transfer the kernel's non-constant inputs to ``u``; its outputs then live on ``u``."""
        for r in k.reads:
            if r in self.g.const:
                continue
            locs = self.location.setdefault(r, {self.host.id})
            if u.id not in locs:
                self.transfer(r, self._src_unit(locs), u)
                locs.add(u.id)
        for r in k.writes:
            self.location[r] = {u.id}

    def run(self, k: Kernel) -> None:
        """Add kernel ``k``'s roofline time (and any transfers it needs) to the timeline."""
        u = k.unit
        assert u is not None
        g, tl = self.g, self.tl
        self.move_operands(k, u)
        cdtype = _compute_dtype(u, k.dtype)
        if cdtype != k.dtype:
            tl.dtype_notes.add(f"{k.dtype} kernels on unit '{u.id}' computed at its {cdtype} rate")
        resident = u.weight_cache_bytes > 0 and self.weight_bytes_read <= u.weight_cache_bytes
        nbytes = sum(g.nbytes(r) for r in (*k.reads, *k.writes) if not (resident and r in g.const))
        compute_s = k.ops / (u.peak_gops[cdtype] * 1e9 * u.eff(cdtype, k.op_class)) if k.ops else 0
        memory_s = nbytes / (u.bandwidth_gbs * 1e9)
        quantized = k.dtype == "int8" or k.anchor.op_type in QDQ_OPS
        overhead_us = u.kernel_overhead_us_int8 if quantized else u.kernel_overhead_us
        t = max(compute_s, memory_s) + overhead_us * 1e-6
        tl.busy_s[u.id] += t
        tl.low_pj += kernel_energy_pj(u, cdtype, k.ops, nbytes, self.profile.pj_per_byte)
        tl.total_ops += k.ops
        if u is not self.profile.units[0]:
            tl.fallback_ops += k.ops
        tl.costs.append(
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

    def return_outputs(self) -> None:
        """Transfer graph outputs left on another unit back to the host."""
        for o in self.g.graph_outputs:
            r = self.g.root(o)
            locs = self.location.get(r, {self.host.id})
            if self.host.id not in locs and r not in self.g.const:
                self.transfer(r, self._src_unit(locs), self.host)


def time_kernels(
    profile: HardwareProfile, g: Graph, kernels: list[Kernel], order: list[int]
) -> Timeline:
    """The timeline of placed ``kernels`` run in ``order``, outputs returned to the host.

    Weights stay in a unit's weight cache (no DRAM traffic) when all weights read fit in it.
    """
    weight_roots = {r for k in kernels for r in k.reads if r in g.const}
    timer = _Timer(profile, g, sum(g.nbytes(r) for r in weight_roots))
    for ki in order:
        timer.run(kernels[ki])
    timer.return_outputs()
    return timer.tl
