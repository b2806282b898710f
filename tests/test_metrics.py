"""Metrics as data: each metric's unit, direction, per-target flag and objective name."""

from __future__ import annotations

from edgeopt.metrics import (
    OBJECTIVES,
    PER_TARGET,
    Direction,
    Measurement,
    Metric,
    MetricValue,
    Provenance,
)


def test_every_metric_has_one_objective_name_and_its_facts() -> None:
    assert list(OBJECTIVES) == ["accuracy", "latency", "size", "memory", "energy"]
    assert all(OBJECTIVES[m.objective] is m for m in Metric)
    assert set(PER_TARGET) == {Metric.LATENCY_MS, Metric.PEAK_MEMORY_MB, Metric.ENERGY_MJ}
    assert [m for m in Metric if m.maximize] == [Metric.ACCURACY]
    assert Metric.ACCURACY.direction is Direction.MAXIMIZE
    assert Metric.SIZE_MB.direction is Direction.MINIMIZE
    units = {m.value: m.unit for m in Metric}
    assert units == {
        "accuracy": "",
        "latency_ms": "ms",
        "size_mb": "MB",
        "peak_memory_mb": "MB",
        "energy_mj": "mJ",
    }
    assert Metric.PEAK_MEMORY_MB.noun == "peak memory"


def test_metric_is_its_string_value() -> None:
    assert Metric("latency_ms") is Metric.LATENCY_MS
    assert Metric.LATENCY_MS == "latency_ms" and f"{Metric.SIZE_MB}" == "size_mb"


def test_measurement_to_dict_carries_provenance_and_spread() -> None:
    m = Measurement(
        "host-cpu",
        {
            Metric.LATENCY_MS: MetricValue(2.0, Provenance.MEASURED, spread=0.25),
            Metric.ENERGY_MJ: MetricValue(3.0, Provenance.ESTIMATED, low=2.0, high=4.0),
        },
    )
    assert m[Metric.LATENCY_MS] == 2.0 and Metric.SIZE_MB not in m
    assert m.to_dict() == {
        "profile": "host-cpu",
        "values": {
            "latency_ms": {"value": 2.0, "provenance": "measured", "spread": 0.25},
            "energy_mj": {"value": 3.0, "provenance": "estimated", "low": 2.0, "high": 4.0},
        },
    }
