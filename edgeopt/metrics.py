"""The numbers edgeopt reports, as data: each metric knows its unit, its direction, whether it
depends on the target and its short objective name; and values that always carry where they
came from (measured on this host or estimated). Adding a metric is one new ``Metric`` entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgeopt.errors import ConfigError


class Direction(StrEnum):
    """Which way a metric improves (Optuna's study directions)."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


@dataclass(frozen=True)
class MetricSpec:
    """Facts about one metric: ``objective`` is its name in ``--objectives``, ``noun`` what
    reports call it, ``per_target`` whether it differs from one target profile to another."""

    objective: str
    unit: str
    direction: Direction
    per_target: bool
    noun: str


class Metric(StrEnum):
    """The closed set of numbers edgeopt reports; the unit is part of the name.

    Each member carries its ``MetricSpec``; read it through the properties below.
    """

    spec: MetricSpec

    def __new__(cls, value: str, spec: MetricSpec) -> Metric:
        member = str.__new__(cls, value)
        member._value_ = value
        member.spec = spec
        return member

    ACCURACY = "accuracy", MetricSpec("accuracy", "", Direction.MAXIMIZE, False, "accuracy")
    LATENCY_MS = "latency_ms", MetricSpec("latency", "ms", Direction.MINIMIZE, True, "latency")
    SIZE_MB = "size_mb", MetricSpec("size", "MB", Direction.MINIMIZE, False, "size")
    PEAK_MEMORY_MB = (
        "peak_memory_mb",
        MetricSpec("memory", "MB", Direction.MINIMIZE, True, "peak memory"),
    )
    ENERGY_MJ = "energy_mj", MetricSpec("energy", "mJ", Direction.MINIMIZE, True, "energy")

    @property
    def objective(self) -> str:
        """Short name used by ``--objectives``: ``accuracy``, ``latency``, ``size`` ..."""
        return self.spec.objective

    @property
    def unit(self) -> str:
        """``ms``, ``MB``, ``mJ``, or ``""`` for fractions."""
        return self.spec.unit

    @property
    def direction(self) -> Direction:
        return self.spec.direction

    @property
    def maximize(self) -> bool:
        return self.spec.direction is Direction.MAXIMIZE

    @property
    def per_target(self) -> bool:
        """True when the number depends on the target profile (one objective per target)."""
        return self.spec.per_target

    @property
    def noun(self) -> str:
        """What a report calls it: ``peak memory``."""
        return self.spec.noun


OBJECTIVES: dict[str, Metric] = {m.objective: m for m in Metric}
"""Short objective name -> metric, in ``Metric`` order."""
PER_TARGET: frozenset[Metric] = frozenset(m for m in Metric if m.per_target)


class Provenance(StrEnum):
    """Where a number came from. Reports print it next to every value."""

    MEASURED = "measured"
    ESTIMATED = "estimated"


@dataclass(frozen=True)
class MetricValue:
    """One number with its provenance.

    ``spread`` is the dispersion over repeats (for latency: p90 - p50) or, for an estimated
    interval such as energy, half its width; ``low``/``high`` bound an estimated interval.
    ``device`` names who measured a measured value (``local://HOST``, ``ssh://user@host:port``);
    ``load``, on a latency measured on this host, how busy the host was meanwhile
    (``edgeopt.measure.machine_load.MachineLoad.to_dict``: load average, other busy processes).
    """

    value: float
    provenance: Provenance
    spread: float | None = None
    low: float | None = None
    high: float | None = None
    device: str | None = None
    load: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "provenance": self.provenance.value}
        for key in ("spread", "low", "high", "device", "load"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Measurement:
    """All numbers for one model on one target profile."""

    profile: str
    values: Mapping[Metric, MetricValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.values:
            if not isinstance(key, Metric):
                raise ConfigError(f"unknown metric {key!r}; expected one of {list(Metric)}")

    def __getitem__(self, metric: Metric) -> float:
        return self.values[metric].value

    def __contains__(self, metric: object) -> bool:
        return metric in self.values

    def get(self, metric: Metric) -> MetricValue | None:
        return self.values.get(metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "values": {m.value: v.to_dict() for m, v in self.values.items()},
        }


TASK_METRICS: dict[str, str] = {
    "accuracy": "accuracy",
    "f1": "macro F1",
    "precision": "macro precision",
    "recall": "macro recall",
    "auc": "macro one-vs-rest ROC AUC",
}
"""``--metric`` name -> what reports call it: the task number that ``accuracy`` stands for in
the objective and the accuracy budgets (formulas in ``edgeopt.measure.task_metrics``)."""
DEFAULT_TASK_METRIC = "accuracy"


def task_metric_noun(name: str | None) -> str:
    """What a report calls a ``--metric`` (``macro F1``); an unknown name as it is."""
    return TASK_METRICS.get(name or DEFAULT_TASK_METRIC, str(name))
