"""The cost model's two entry points: ``estimate`` (latency, memory and energy of an ONNX
model on a profile, with the assumptions it rests on) and ``kernel_work`` (the kernels and
their MACs, as the model counts them). See the package docstring for the model itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeopt.estimate.energy import energy_bounds_mj
from edgeopt.estimate.flavour import Flavour, flavour_bound, qdq_flavour
from edgeopt.estimate.graph import Graph, load_model
from edgeopt.estimate.kernels import build_kernels, connect, schedule
from edgeopt.estimate.memory import memory_fits, peak_activation_bytes, weight_bytes
from edgeopt.estimate.result import Estimate
from edgeopt.estimate.roofline import Timeline, place, time_kernels
from edgeopt.estimate.tflite_graph import tflite_as_onnx
from edgeopt.profiles import HardwareProfile

if TYPE_CHECKING:
    import onnx


def estimate(
    onnx_path: str | Path,
    profile: HardwareProfile,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Estimate:
    """Estimate latency, memory and energy of the ONNX model (or ``.tflite`` file) at
    ``onnx_path`` on ``profile``
    (``input_shapes``: one sample's shape per input, fixing dynamic dims such as the
    sequence length; ``graph.load_model``).

    Raises ConfigError for a file that is missing or not a valid ONNX model. The result's
    numbers are estimates even for the host profile (``edgeopt bench`` measures the host).
    """
    assert profile.runtime is not None and profile.memory is not None
    model, notes = _read(onnx_path, input_shapes)
    g = Graph(model)
    kernels = build_kernels(g, profile.runtime.fusions)
    unknown = sorted({n.output[0] for n in g.nodes if n.output and g.numel(n.output[0]) is None})
    flow = connect(g, kernels)
    order = schedule(g, kernels)
    flavour = qdq_flavour(g)
    fallback_ops = place(profile, g, kernels, order, flavour)
    tl = time_kernels(profile, g, kernels, order)
    total_s = sum(tl.busy_s.values()) + tl.transfer_s + profile.runtime.invoke_overhead_us * 1e-6
    peak_act = peak_activation_bytes(g, kernels, order, flow)
    weights = weight_bytes(g)
    low_mj, high_mj = energy_bounds_mj(profile, tl.busy_s, total_s, tl.low_pj)
    return Estimate(
        profile=profile.name,
        latency_ms=total_s * 1e3,
        peak_memory_mb=(peak_act + weights) / 1e6,
        weight_mb=weights / 1e6,
        energy_mj_low=low_mj,
        energy_mj_high=high_mj,
        fits=memory_fits(profile, peak_act, weights),
        nodes=tl.costs,
        assumptions=_assumptions(
            profile, [*notes, *_flavour_notes(profile, flavour)], unknown, fallback_ops, tl
        ),
        activation_mb=peak_act / 1e6,
        macs=sum(k.macs for k in kernels),
        fallback_fraction=tl.fallback_ops / tl.total_ops if tl.total_ops else 0.0,
        unit_time_ms={k: v * 1e3 for k, v in tl.busy_s.items()},
    )


def _read(
    path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """The graph the cost model counts: an ONNX file with inferred shapes
    (``graph.load_model``), or a ``.tflite`` read as ONNX (``tflite_graph``; its shapes are
    in the file, so ``input_shapes`` does not apply)."""
    if Path(path).suffix == ".tflite":
        return tflite_as_onnx(path)
    return load_model(path, input_shapes)


def _assumptions(
    profile: HardwareProfile,
    notes: list[str],
    unknown: list[str],
    fallback_ops: set[str],
    tl: Timeline,
) -> list[str]:
    """What every estimate on ``profile`` rests on, printed under it."""
    out = [
        f"estimated (profile {profile.name}): per-kernel roofline on the model's graph, "
        "not a measurement",
        *notes,
    ]
    if unknown:
        out.append(
            f"{len(unknown)} tensor(s) without an inferred shape count as 0 bytes/ops "
            f"(e.g. '{unknown[0]}')"
        )
    if fallback_ops:
        preferred = profile.units[0]
        out.append(
            f"ops not supported on '{preferred.id}' fall back to "
            f"'{preferred.fallback or preferred.id}': {', '.join(sorted(fallback_ops))}"
        )
    out.extend(sorted(tl.dtype_notes))
    out.append("energy: low = ops x pJ/op + bytes x pJ/byte; high = active/idle power x time")
    out.extend(_profile_caveats(profile))
    return out


def _flavour_notes(profile: HardwareProfile, flavour: Flavour | None) -> list[str]:
    """Why a QDQ graph of another target's int8 flavour stays off the preferred unit."""
    if flavour is None or flavour.matches(profile) or not flavour_bound(profile.units[0]):
        return []
    return [flavour.mismatch_note(profile)]


def _profile_caveats(profile: HardwareProfile) -> list[str]:
    out: list[str] = []
    c = profile.calibration
    if c is not None and c.median_rel_error is not None:
        out.append(
            f"calibrated {c.date}: median relative latency error {c.median_rel_error:.0%}, "
            f"Kendall tau {c.kendall_tau} over {c.n_models} models"
        )
    elif not profile.calibrated:
        out.append("profile never calibrated against the real device: expect errors of 2x or more")
    if profile.assumptions:
        shown = ", ".join(profile.assumptions[:4])
        more = f" and {len(profile.assumptions) - 4} more" if len(profile.assumptions) > 4 else ""
        out.append(f"profile values that are assumptions: {shown}{more}")
    return out


@dataclass(frozen=True)
class KernelWork:
    """The work of one kernel as the cost model counts it (``ops`` = 2 x ``macs`` for conv and
    gemm): its fused op types joined with ``+``, op class and dtype."""

    op: str
    op_class: str
    dtype: str
    macs: int
    ops: float


def kernel_work(onnx_path: str | Path, fusions: frozenset[str]) -> list[KernelWork]:
    """The kernels of the model at ``onnx_path`` (fusing as ``fusions`` allow), in node order.

    Raises ConfigError like :func:`estimate`.
    """
    g = Graph(_read(onnx_path)[0])
    return [
        KernelWork(
            op="+".join(n.op_type for n in k.nodes),
            op_class=k.op_class,
            dtype=k.dtype,
            macs=k.macs,
            ops=k.ops,
        )
        for k in build_kernels(g, fusions)
    ]
