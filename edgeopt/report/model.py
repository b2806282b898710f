"""The view of a run that every renderer reads: ``Summary`` (built by
``report.summary.summarize``), its objectives and pick, and the pure helpers that name,
unit and format a recorded metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.metrics import DEFAULT_TASK_METRIC, Metric, task_metric_noun
from edgeopt.report.stats import accuracy_interval

# per-target numbers shown in tables, in ``Metric`` order (latency, peak memory, energy)
TARGET_METRICS: tuple[Metric, ...] = tuple(m for m in Metric if m.per_target)

# units of a time: a smaller one reads "faster", a larger one "slower"
TIME_UNITS = frozenset({"s", "ms", "us", "µs", "ns"})

# what the report calls the two baseline trials (the ``baseline`` field of a record)
BASELINE_NAMES = {"unchanged": "original", "int8": "plain int8"}


def metric_of(name: str) -> Metric | None:
    """The ``Metric`` a recorded name (target stripped) stands for, or None for a name this
    version does not know; such a number is shown under its own name, without a unit."""
    try:
        return Metric(name)
    except ValueError:
        return None


def unit_of(metric: str) -> str:
    """The metric's unit from its spec (``ms``, ``MB`` ...); ``""`` for fractions and unknowns."""
    m = metric_of(metric)
    return m.unit if m is not None else ""


def noun_of(metric: str) -> str:
    """What the report calls the metric (its spec's noun); an unknown name as it is."""
    m = metric_of(metric)
    return m.noun if m is not None else metric


def is_fraction(metric: str) -> bool:
    """A known metric without a unit is a fraction (accuracy): 4 decimals, points apart."""
    m = metric_of(metric)
    return m is not None and not m.unit


def metric_short(metric: str) -> str:
    """Noun and unit as a column heading, e.g. ``latency ms``, ``size MB``, ``accuracy``."""
    return " ".join(b for b in (noun_of(metric), unit_of(metric)) if b)


def metric_title(metric: str) -> str:
    """Noun with the unit in brackets, e.g. ``peak memory (MB)``, ``accuracy``."""
    unit = unit_of(metric)
    return noun_of(metric) + (f" ({unit})" if unit else "")


@dataclass(frozen=True)
class ObjectiveInfo:
    """One optimized number: ``name`` as recorded (``latency_ms[host-cpu]``), split up."""

    name: str
    metric: str
    target: str | None
    maximize: bool
    provenance: str
    accuracy_kind: str = "accuracy"
    task_metric: str = DEFAULT_TASK_METRIC  # the run's --metric: what accuracy stands for

    @property
    def unit(self) -> str:
        return unit_of(self.metric)

    @property
    def score(self) -> str:
        """What the accuracy objective is in this run: ``fidelity`` without task data, else
        the noun of ``--metric`` (``accuracy``, ``macro F1`` ...)."""
        if self.accuracy_kind == "fidelity":
            return "fidelity"
        return task_metric_noun(self.task_metric)

    @property
    def noun(self) -> str:
        if self.metric == Metric.ACCURACY:
            return "validation " + self.score  # selection is on the validation split
        return noun_of(self.metric)

    @property
    def label(self) -> str:
        """Axis label with unit and provenance, e.g. ``latency on host-cpu (ms, measured)``."""
        where = f" on {self.target}" if self.target else ""
        unit = f"{self.unit}, " if self.unit else "fraction, "
        return f"{self.noun}{where} ({unit}{self.provenance})"

    @property
    def short(self) -> str:
        """Compact column label, e.g. ``latency ms host-cpu``, ``val macro F1``."""
        if self.metric == Metric.ACCURACY:
            return "val " + self.score
        return " ".join(b for b in (metric_short(self.metric), self.target or "") if b)

    @property
    def with_direction(self) -> str:
        """``short`` and which way is better, e.g. ``val macro F1 (max)``."""
        return f"{self.short} ({'max' if self.maximize else 'min'})"


@dataclass(frozen=True)
class Pick:
    """The recommended front member and the one sentence that says why."""

    number: int
    method: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """Everything renderers need; built by ``summarize``."""

    records: Mapping[str, Any]
    objectives: tuple[ObjectiveInfo, ...]
    targets: tuple[str, ...]
    complete: tuple[Mapping[str, Any], ...]
    front: tuple[Mapping[str, Any], ...]
    failed: tuple[Mapping[str, Any], ...]
    pruned: tuple[Mapping[str, Any], ...]
    original: Mapping[str, Any] | None
    int8: Mapping[str, Any] | None
    pick: Pick | None
    no_pick_reason: str | None
    accuracy_kind: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def trials(self) -> Sequence[Mapping[str, Any]]:
        return self.records.get("trials", [])

    @property
    def budgets(self) -> dict[str, float]:
        b = self.records.get("config", {}).get("budgets", {}) or {}
        return {k: v for k, v in b.items() if v is not None}

    @property
    def metric(self) -> str:
        """The run's ``--metric`` (``accuracy`` for runs that recorded none)."""
        return str(self.records.get("metric") or DEFAULT_TASK_METRIC)

    @property
    def score_noun(self) -> str:
        """What val/test "accuracy" is in this run (see ``score_noun``)."""
        return score_noun(self.records)

    @property
    def model_name(self) -> str:
        path = self.records.get("config", {}).get("model", {}).get("path") or "model"
        return Path(path).name

    def objective_vector(self, trial: Mapping[str, Any]) -> list[float] | None:
        """The trial's objective values in ``objectives`` order, or None when incomplete."""
        values = trial.get("values") or {}
        out = []
        for o in self.objectives:
            v = values.get(o.name)
            if not isinstance(v, int | float) or not math.isfinite(v):
                return None
            out.append(float(v))
        return out


_NAME = re.compile(r"^(?P<metric>[a-z_]+)(\[(?P<target>.+)\])?$")


def split_name(name: str) -> tuple[str, str | None]:
    """``latency_ms[host-cpu]`` -> (``latency_ms``, ``host-cpu``); ``size_mb`` -> (..., None)."""
    m = _NAME.match(name)
    if not m:
        return name, None
    return m.group("metric"), m.group("target")


def score_noun(records: Mapping[str, Any]) -> str:
    """What a run's val/test "accuracy" is: ``fidelity`` without task data, else the noun of
    its ``--metric`` (``accuracy``, ``macro F1`` ...)."""
    if (records.get("baseline") or {}).get("accuracy_kind") == "fidelity":
        return "fidelity"
    return task_metric_noun(records.get("metric"))


def score_interval(
    records: Mapping[str, Any], t: Mapping[str, Any], split: str
) -> tuple[float, float] | None:
    """The 95 % interval of trial ``t``'s ``split`` (``val``/``test``) score: Wilson on the
    split's count for top-1 accuracy and fidelity, else the bootstrap interval finalize
    recorded in its ``task_metrics`` (front members and baselines only); None without one."""
    metric = str(records.get("metric") or DEFAULT_TASK_METRIC)
    if metric == DEFAULT_TASK_METRIC:
        return accuracy_interval(t.get(f"{split}_accuracy"), records.get(f"n_{split}"))
    entry = ((t.get("task_metrics") or {}).get(split) or {}).get(metric) or {}
    return entry_interval(entry)


def entry_interval(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """``(low, high)`` of a recorded entry, when it has both as numbers."""
    lo, hi = entry.get("low"), entry.get("high")
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        return float(lo), float(hi)
    return None


def fmt_num(v: Any, metric: str = "") -> str:
    """A number at a precision that suits its metric; ``-`` for missing."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "-"
    if not math.isfinite(v):
        return str(v)
    if is_fraction(metric):
        return f"{v:.4f}"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.3f}"
    return f"{v:.4g}"


def metric_entry(t: Mapping[str, Any], target: str, metric: str) -> Mapping[str, Any] | None:
    """``{value, provenance, ...}`` of one metric of one trial on one target, if recorded."""
    return ((t.get("measurements") or {}).get(target) or {}).get(metric)


def present_metrics(s: Summary) -> list[Metric]:
    """Per-target metrics that at least one complete trial recorded, in table order."""
    out = []
    for m in TARGET_METRICS:
        if any(metric_entry(t, tg, m) for t in s.complete for tg in s.targets):
            out.append(m)
    return out


def fail_label(t: Mapping[str, Any]) -> str:
    """``stage: reason`` of a failed trial."""
    return f"{t.get('fail_stage', 'unknown')}: {t.get('fail_reason', '')}".strip()
