"""Memory: peak live activations over the kernel schedule, weight bytes, and whether both fit
the memory levels the profile declares."""

from __future__ import annotations

from edgeopt.estimate.graph import Graph
from edgeopt.estimate.kernels import Dataflow, Kernel
from edgeopt.profiles import HardwareProfile


def peak_activation_bytes(
    g: Graph, kernels: list[Kernel], order: list[int], flow: Dataflow
) -> float:
    """The largest sum of live tensors at any step of ``order``.

    A tensor is live from its producing kernel to its last consuming kernel; graph inputs from
    the start, graph outputs to the end.
    """
    step_of = {ki: s for s, ki in enumerate(order)}
    n_steps = len(order)
    live: dict[str, tuple[int, int]] = {}
    for r in {g.root(i) for i in g.graph_inputs}:
        last = max((step_of[c] for c in flow.readers.get(r, ())), default=-1)
        live[r] = (-1, n_steps if r in flow.out_roots else last)
    for ki, k in enumerate(kernels):
        for r in k.writes:
            readers = flow.readers.get(r, set()) - {ki}
            last = max((step_of[c] for c in readers), default=step_of[ki])
            live[r] = (step_of[ki], n_steps if r in flow.out_roots else last)
    peak = 0.0
    for s in range(-1, max(n_steps, 1)):
        peak = max(peak, sum(g.nbytes(r) for r, (a, b) in live.items() if a <= s <= b))
    return peak


def weight_bytes(g: Graph) -> float:
    """Bytes of every initializer a node reads (as stored, e.g. int8 behind a DequantizeLinear)."""
    roots = {g.root(i) for n in g.nodes for i in n.input if i and i in g.initializers}
    return sum(g.nbytes(r) for r in roots if r in g.initializers)


def memory_fits(
    profile: HardwareProfile, activation_bytes: float, weights: float
) -> dict[str, bool]:
    """Per memory level (and per unit weight cache): whether what must live there fits."""
    mem = profile.memory
    assert mem is not None
    fits: dict[str, bool] = {}
    need = {"dram": 0.0, "sram": 0.0, "flash": 0.0}
    need[mem.activations_in] += activation_bytes
    need[mem.weights_in] += weights
    for level in ("dram", "sram", "flash"):
        cap = getattr(mem, f"{level}_bytes")
        if level == "sram" and mem.activations_in == "sram" and mem.activation_budget_bytes:
            cap = mem.activation_budget_bytes
        if cap is not None and (need[level] > 0 or level == mem.activations_in):
            fits[level] = need[level] <= cap
    for u in profile.units:
        if u.weight_cache_bytes > 0:
            fits[f"{u.id}_weight_cache"] = weights <= u.weight_cache_bytes
    return fits
