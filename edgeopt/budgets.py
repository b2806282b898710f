"""Budgets: hard limits on a model's numbers, validated once, used two ways.

The search turns them into Optuna constraints (``Budgets.constraints``: feasible when every
value <= 0); ``edgeopt check`` evaluates them against a bench record into pass/fail results
(``Budgets.evaluate``). ``BUDGETS`` is the table of what each budget limits; adding a budget
is one entry there and one field on ``Budgets``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.metrics import Measurement, Metric, task_metric_noun

ACCURACY_DROP = "accuracy_drop"  # baseline accuracy - accuracy
SLOWDOWN = "slowdown"  # latency / baseline latency - 1 (check only: needs --baseline)


@dataclass(frozen=True)
class BudgetSpec:
    """What one budget limits.

    ``quantity`` is a ``Metric`` value or ``accuracy_drop``/``slowdown``; ``kind`` is ``max``
    (value <= limit passes) or ``min``. ``per_target``: one limit applied on every target.
    ``constraint``: the search's constraint name (``latency_ms[<target>]`` when per target),
    None when the search cannot evaluate it. ``fraction``: a share in [0, 1]. ``relative``:
    compared with a baseline model, so 0 is a valid limit and text like ``5%`` is accepted.
    ``help`` is the flag's help in ``edgeopt check``, ``search_help`` in ``edgeopt optimize``
    (None for a budget the search cannot evaluate: no ``optimize`` flag).
    """

    key: str
    quantity: str
    kind: str
    unit: str
    per_target: bool
    constraint: str | None
    help: str
    fraction: bool = False
    relative: bool = False
    search_help: str | None = None


def _metric(key: str, metric: Metric, help: str, search_help: str) -> BudgetSpec:
    kind = "min" if key.startswith("min_") else "max"
    constraint = metric.value if kind == "max" else key
    fraction = metric is Metric.ACCURACY
    return BudgetSpec(
        key,
        metric.value,
        kind,
        metric.unit,
        metric.per_target,
        constraint,
        help,
        fraction,
        search_help=search_help,
    )


# the order results are listed in by ``edgeopt check``
BUDGETS: dict[str, BudgetSpec] = {
    s.key: s
    for s in (
        _metric(
            "max_latency_ms",
            Metric.LATENCY_MS,
            "Latency budget (p50, batch 1).",
            "Budget per target (a constraint).",
        ),
        _metric(
            "max_size_mb",
            Metric.SIZE_MB,
            "Model file size budget.",
            "Budget on the ONNX file size.",
        ),
        _metric(
            "max_memory_mb",
            Metric.PEAK_MEMORY_MB,
            "Peak memory budget.",
            "Budget on peak memory per target.",
        ),
        _metric(
            "max_energy_mj",
            Metric.ENERGY_MJ,
            "Energy per inference budget (estimated).",
            "Budget on energy per inference per target.",
        ),
        _metric(
            "min_accuracy",
            Metric.ACCURACY,
            "Accuracy floor (fraction).",
            "Budget on validation accuracy (or --metric; fraction).",
        ),
        BudgetSpec(
            "max_accuracy_drop",
            ACCURACY_DROP,
            "max",
            "",
            per_target=False,
            constraint=ACCURACY_DROP,
            help="Accuracy drop vs the baseline allowed, e.g. 0.01 or 1%.",
            fraction=True,
            relative=True,
            search_help="Budget vs the original, as a fraction (0.01 = 1 point).",
        ),
        BudgetSpec(
            "max_regression",
            SLOWDOWN,
            "max",
            "",
            per_target=False,
            constraint=None,
            help="How much slower than --baseline is allowed, e.g. 5% or 0.05.",
            relative=True,
        ),
    )
}
BUDGET_OF_CONSTRAINT: dict[str, str] = {
    s.constraint: s.key for s in BUDGETS.values() if s.constraint is not None
}
"""Constraint name without its ``[target]`` -> budget key (``latency_ms`` -> max_latency_ms)."""


def parse_fraction(value: Any, name: str) -> float:
    """``"5%"`` -> 0.05; ``0.05`` or ``"0.05"`` -> 0.05. Plain numbers above 1 are refused
    (ambiguous: 5 could mean 5 % or 500 %)."""
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a percentage like 5% or a fraction like 0.05")
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return float(text[:-1]) / 100
        v = float(text)
    except ValueError:
        raise ConfigError(
            f"{name} must be a percentage like 5% or a fraction like 0.05, got {value!r}"
        ) from None
    if v > 1:
        raise ConfigError(
            f"{name} = {value!r} is ambiguous", hint=f"write {v:g}% or {v / 100:g} for {v:g} %"
        )
    return v


def parse_limits(values: Mapping[str, Any], name: Callable[[str], str]) -> dict[str, Any]:
    """The budgets set in ``values`` (flags or a TOML table; None means unset), with text like
    ``5%`` turned into a fraction for relative budgets. ``name(key)`` is how a message names
    the value (``--max-regression``, ``max_regression in edgeopt.toml``)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if BUDGETS[key].relative and isinstance(value, str):
            value = parse_fraction(value, name(key))
        out[key] = value
    return out


@dataclass(frozen=True)
class Budgets:
    """Hard limits; None means no limit. Validated at construction (ConfigError).

    Fractions (``min_accuracy``, ``max_accuracy_drop``, ``max_regression``) are shares:
    ``max_regression`` 0.05 means "at most 5 % slower than the baseline" (check only).
    """

    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_memory_mb: float | None = None
    max_energy_mj: float | None = None
    max_accuracy_drop: float | None = None
    min_accuracy: float | None = None
    max_regression: float | None = None

    def __post_init__(self) -> None:
        for key, spec in BUDGETS.items():
            v = getattr(self, key)
            if v is not None:
                self._validate(spec, v)

    def _validate(self, spec: BudgetSpec, v: Any) -> None:
        name, where = self._label(spec.key), self._where()
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{name} must be a number, got {v!r}{where}")
        if v < 0 or (v == 0 and spec.kind == "max" and not spec.relative):
            raise ConfigError(f"{name} must be positive, got {v}{where}")
        if spec.fraction and v > 1:
            example = "1 percentage point as 0.01" if spec.relative else "90 % as 0.9"
            raise ConfigError(
                f"{name} is a fraction in [0, 1], got {v}{where}", hint=f"write {example}"
            )

    def _label(self, key: str) -> str:
        """How messages name a budget: as the ``optimize`` flag."""
        return f"--{key.replace('_', '-')}"

    def _where(self) -> str:
        """Where the values came from, appended to messages."""
        return ""

    def limits(self) -> dict[str, float]:
        """The budgets that are set, in ``BUDGETS`` order."""
        return {k: float(getattr(self, k)) for k in BUDGETS if getattr(self, k) is not None}

    def constraints(
        self,
        *,
        accuracy: float,
        baseline_accuracy: float,
        measurements: Mapping[str, Measurement],
        targets: Sequence[str],
    ) -> dict[str, float]:
        """Optuna constraints of one trial: feasible when every value is <= 0.

        Per-target budgets give ``latency_ms[<target>]`` etc. for each of ``targets`` (each
        must be in ``measurements``; a metric a target lacks is skipped); ``size_mb`` is read
        on the first target; ``accuracy_drop`` compares ``accuracy`` with
        ``baseline_accuracy``. Budgets the search cannot evaluate (``max_regression``) are
        left out.
        """
        out: dict[str, float] = {}
        specs = [s for s in BUDGETS.values() if s.constraint and getattr(self, s.key) is not None]
        per_target = [s for s in specs if s.per_target]
        for name in targets:
            m = measurements[name]
            for s in per_target:
                if Metric(s.quantity) in m:
                    out[f"{s.constraint}[{name}]"] = m[Metric(s.quantity)] - getattr(self, s.key)
        first = measurements[targets[0]]
        for s in specs:
            limit = getattr(self, s.key)
            if s.per_target:
                continue
            if s.quantity == ACCURACY_DROP:
                out[str(s.constraint)] = baseline_accuracy - limit - accuracy
            elif s.quantity == Metric.ACCURACY:
                out[str(s.constraint)] = limit - accuracy
            else:
                out[str(s.constraint)] = first[Metric(s.quantity)] - limit
        return out

    def evaluate(
        self, bench: Mapping[str, Any], *, baseline: str | None = None
    ) -> tuple[BudgetResult, ...]:
        """Each set budget against a ``run_bench`` record (the model first; ``baseline``'s
        row and the comparison second when a budget is relative)."""
        results = []
        for key, limit in self.limits().items():
            spec = BUDGETS[key]
            value, prov, detail = _bench_value(spec, bench, Path(str(baseline)).name)
            passed = value <= limit if spec.kind == "max" else value >= limit
            results.append(
                BudgetResult(
                    key, spec.quantity, value, limit, spec.unit, prov, spec.kind, passed, detail
                )
            )
        return tuple(results)


def _bench_value(spec: BudgetSpec, bench: Mapping[str, Any], base: str) -> tuple[float, str, str]:
    """(value, provenance, detail) of ``spec``'s quantity in a bench record."""
    first = bench["results"][0]
    if spec.quantity == SLOWDOWN:
        cmp = bench["comparisons"][0]
        # ratio = baseline time / model time (> 1: the model is faster)
        prov = str(cmp["provenance"])
        how = "median of interleaved round ratios" if prov == "measured" else "cost-model ratio"
        return 1.0 / float(cmp["ratio"]) - 1.0, prov, f"latency vs {base}: {how}"
    # accuracy budgets judge the record's task metric (``--metric``; top-1 by default)
    task = str(bench.get("metric", Metric.ACCURACY.value))
    what = "" if task == Metric.ACCURACY else f"{task_metric_noun(task)} "
    if spec.quantity == ACCURACY_DROP:
        ref = float(bench["results"][1][task]["value"])
        drop = ref - float(first[task]["value"])
        return drop, "measured", f"{what}vs {base} at {ref:.4f}"
    # a bench record names the median latency latency_p50_ms (docs/bench-json.md)
    key = "latency_p50_ms" if spec.quantity == Metric.LATENCY_MS else str(spec.quantity)
    if spec.quantity == Metric.ACCURACY:
        key = task
    entry = first.get(key)
    if entry is None:
        raise ConfigError(f"{spec.key} cannot be checked on '{bench['target']}'")
    detail = ""
    if spec.quantity == Metric.ENERGY_MJ and "low" in entry:
        detail = f"estimated interval {entry['low']:.4g}-{entry['high']:.4g} mJ"
    if spec.quantity == Metric.ACCURACY:
        detail = f"{what}on the {bench.get('accuracy_split', 'test')} split"
    return float(entry["value"]), str(entry["provenance"]), detail


@dataclass(frozen=True)
class BudgetResult:
    """One budget's outcome. ``kind`` is max (value <= limit passes) or min."""

    name: str
    metric: str
    value: float
    limit: float
    unit: str
    provenance: str
    kind: str
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        """``max_latency_ms: 3.1 ms > 2 ms (measured)``."""
        ok = self.passed
        op = ("<=" if ok else ">") if self.kind == "max" else (">=" if ok else "<")
        return (
            f"{self.name}: {fmt_value(self.value, self)} {op} {fmt_value(self.limit, self)} "
            f"({self.provenance})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "kind": self.kind,
            "provenance": self.provenance,
            "passed": self.passed,
            "detail": self.detail,
        }


def fmt_value(v: float, r: BudgetResult) -> str:
    """A value in the budget's unit; fractions of regressions and drops as percentages."""
    if r.metric == SLOWDOWN:
        return f"{v * 100:+.2f}%"
    if r.metric == ACCURACY_DROP:
        return f"{v * 100:.2f} pt"
    if r.metric == Metric.ACCURACY:
        return f"{v:.4f}"
    return f"{v:.4g} {r.unit}".strip()
