"""Metric values that always carry where they came from: measured on this host or estimated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgeopt.errors import ConfigError


class Metric(StrEnum):
    """The closed set of numbers edgeopt reports; the unit is part of the name."""

    ACCURACY = "accuracy"
    LATENCY_MS = "latency_ms"
    PEAK_MEMORY_MB = "peak_memory_mb"
    SIZE_MB = "size_mb"
    ENERGY_MJ = "energy_mj"


class Provenance(StrEnum):
    """Where a number came from. Reports print it next to every value."""

    MEASURED = "measured"
    ESTIMATED = "estimated"


@dataclass(frozen=True)
class MetricValue:
    """One number with its provenance.

    ``spread`` is the dispersion over repeats (for latency: p90 - p50) or, for an estimated
    interval such as energy, half its width; ``low``/``high`` bound an estimated interval.
    """

    value: float
    provenance: Provenance
    spread: float | None = None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "provenance": self.provenance.value}
        for key in ("spread", "low", "high"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricValue:
        return cls(
            value=float(data["value"]),
            provenance=Provenance(data["provenance"]),
            spread=data.get("spread"),
            low=data.get("low"),
            high=data.get("high"),
        )

    def label(self) -> str:
        """Short tag printed beside the number: ``measured`` or ``estimated``."""
        return self.provenance.value


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

    def merged(self, other: Measurement) -> Measurement:
        """Values of ``self`` updated with ``other``'s (same profile)."""
        return Measurement(self.profile, {**self.values, **other.values})

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "values": {m.value: v.to_dict() for m, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(
            profile=str(data["profile"]),
            values={Metric(k): MetricValue.from_dict(v) for k, v in data["values"].items()},
        )
