"""What the cost model returns: one :class:`Estimate` with a :class:`NodeCost` per kernel."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeopt.metrics import Measurement, Metric, MetricValue, Provenance


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
