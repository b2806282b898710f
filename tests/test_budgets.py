"""One Budgets type: validated once, Optuna constraints for the search, and the table of what
each budget limits."""

from __future__ import annotations

from dataclasses import fields

import pytest

from edgeopt.budgets import BUDGET_OF_CONSTRAINT, BUDGETS, Budgets, parse_limits
from edgeopt.check import CheckConfig
from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.metrics import Measurement, Metric, MetricValue, Provenance

M, E = Provenance.MEASURED, Provenance.ESTIMATED


def _m(profile: str, energy: bool = True, **values: float) -> Measurement:
    out = {Metric(k): MetricValue(v, M) for k, v in values.items()}
    if energy:
        out[Metric.ENERGY_MJ] = MetricValue(5.0, E, low=4.0, high=6.0)
    return Measurement(profile, out)


def test_every_budget_field_has_one_table_entry() -> None:
    assert {f.name for f in fields(Budgets)} == set(BUDGETS)
    assert BUDGET_OF_CONSTRAINT == {
        "latency_ms": "max_latency_ms",
        "size_mb": "max_size_mb",
        "peak_memory_mb": "max_memory_mb",
        "energy_mj": "max_energy_mj",
        "min_accuracy": "min_accuracy",
        "accuracy_drop": "max_accuracy_drop",
    }


def test_constraints_are_value_minus_limit_per_target() -> None:
    b = Budgets(
        max_latency_ms=2.0,
        max_size_mb=1.0,
        max_memory_mb=10.0,
        max_energy_mj=4.0,
        max_accuracy_drop=0.01,
        min_accuracy=0.9,
        max_regression=0.05,  # check only: no constraint
    )
    ms = {
        "host": _m("host", energy=False, latency_ms=3.0, peak_memory_mb=8.0, size_mb=1.5),
        "host:raw": _m("host", latency_ms=99.0),
        "mobile": _m("mobile", latency_ms=1.5, peak_memory_mb=12.0, size_mb=1.5),
    }
    got = b.constraints(
        accuracy=0.88, baseline_accuracy=0.9, measurements=ms, targets=["host", "mobile"]
    )
    assert got == pytest.approx(
        {
            "latency_ms[host]": 1.0,
            "peak_memory_mb[host]": -2.0,  # host has no energy: no energy constraint there
            "latency_ms[mobile]": -0.5,
            "peak_memory_mb[mobile]": 2.0,
            "energy_mj[mobile]": 1.0,
            "size_mb": 0.5,
            "min_accuracy": 0.02,
            "accuracy_drop": 0.01,
        }
    )
    assert set(got) == {
        "latency_ms[host]",
        "peak_memory_mb[host]",
        "latency_ms[mobile]",
        "peak_memory_mb[mobile]",
        "energy_mj[mobile]",
        "size_mb",
        "min_accuracy",
        "accuracy_drop",
    }
    assert (
        Budgets().constraints(
            accuracy=0.5, baseline_accuracy=0.9, measurements=ms, targets=["host"]
        )
        == {}
    )


def test_optimize_flags_and_check_files_keep_their_messages() -> None:
    with pytest.raises(ConfigError, match=r"^--max-latency-ms must be positive, got 0$"):
        Budgets(max_latency_ms=0)
    with pytest.raises(ConfigError, match=r"^--max-accuracy-drop is a fraction in \[0, 1\]"):
        Budgets(max_accuracy_drop=2.0)
    with pytest.raises(ConfigError, match=r"budget max_size_mb must be positive, got -1 \(from x"):
        CheckConfig(max_size_mb=-1, source="x.toml")
    with pytest.raises(ConfigError, match=r"^budget min_accuracy must be a number, got 'a'$"):
        CheckConfig(min_accuracy="a")  # type: ignore[arg-type]
    assert Budgets(max_accuracy_drop=0.0, min_accuracy=0.0, max_regression=0.0).limits() == {
        "min_accuracy": 0.0,
        "max_accuracy_drop": 0.0,
        "max_regression": 0.0,
    }


def test_parse_limits_reads_percentages_of_relative_budgets() -> None:
    got = parse_limits(
        {
            "max_regression": "5%",
            "max_accuracy_drop": "0.01",
            "max_size_mb": 2.0,
            "min_accuracy": None,
        },
        lambda k: k,
    )
    assert got == pytest.approx(
        {"max_regression": 0.05, "max_accuracy_drop": 0.01, "max_size_mb": 2.0}
    )
    with pytest.raises(ConfigError, match="ambiguous"):
        parse_limits({"max_regression": "5"}, lambda k: k)


def test_run_json_written_before_max_regression_still_loads() -> None:
    old = {
        "model": {"path": "m.pt"},
        "targets": ["cpu"],
        "objectives": ["accuracy", "latency"],
        "budgets": {"max_latency_ms": 5.0, "max_accuracy_drop": 0.01, "min_accuracy": None},
    }
    cfg = RunConfig.from_dict(old)
    assert cfg.budgets == Budgets(max_latency_ms=5.0, max_accuracy_drop=0.01)
    assert RunConfig.from_dict(cfg.to_dict()).search_key() == cfg.search_key()
