"""The types every renderer reads (``Summary``, ``ObjectiveInfo``, ``Pick``) and the small
helpers that name and format metrics; ``summary.summarize`` builds a Summary, ``pick.choose``
chooses from one."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.metrics import DEFAULT_TASK_METRIC, Metric, task_metric_noun
from edgeopt.records import RunRecord, TrialRecord, as_run
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

    records: RunRecord
    objectives: tuple[ObjectiveInfo, ...]
    targets: tuple[str, ...]
    complete: tuple[TrialRecord, ...]
    front: tuple[TrialRecord, ...]
    failed: tuple[TrialRecord, ...]
    stopped: tuple[TrialRecord, ...]
    original: TrialRecord | None
    int8: TrialRecord | None
    pick: Pick | None
    no_pick_reason: str | None
    accuracy_kind: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def trials(self) -> Sequence[TrialRecord]:
        return self.records.trials

    @property
    def budgets(self) -> dict[str, float]:
        return self.records.budgets

    @property
    def metric(self) -> str:
        """The run's ``--metric`` (``accuracy`` for runs that recorded none)."""
        return self.records.task_metric

    @property
    def score_noun(self) -> str:
        """What val/test "accuracy" is in this run (see ``score_noun``)."""
        return score_noun(self.records)

    @property
    def model_name(self) -> str:
        return Path(self.records.model_path or "model").name

    def objective_vector(self, trial: TrialRecord) -> list[float] | None:
        """The trial's objective values in ``objectives`` order, or None when incomplete."""
        out = []
        for o in self.objectives:
            v = trial.values.get(o.name)
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


def score_noun(records: RunRecord | Mapping[str, Any]) -> str:
    """What a run's val/test "accuracy" is: ``fidelity`` without task data, else the noun of
    its ``--metric`` (``accuracy``, ``macro F1`` ...)."""
    run = as_run(records)
    if run.accuracy_kind == "fidelity":
        return "fidelity"
    return task_metric_noun(run.metric)


def score_interval(records: RunRecord, t: TrialRecord, split: str) -> tuple[float, float] | None:
    """The 95 % interval of trial ``t``'s ``split`` (``val``/``test``) score: Wilson on the
    split's count for top-1 accuracy and fidelity, else the bootstrap interval finalize
    recorded in its ``task_metrics`` (front members and baselines only); None without one."""
    metric = records.task_metric
    if metric == DEFAULT_TASK_METRIC:
        return accuracy_interval(t.accuracy(split), records.n(split))
    entry = t.task_metric(split, metric)
    return entry.interval if entry is not None else None


def objective_infos(records: RunRecord) -> tuple[ObjectiveInfo, ...]:
    """The run's objectives in recorded order, each split into metric and target, with how
    its numbers were obtained (``provenance_of``)."""
    out = []
    for o in records.objectives:
        metric, target = split_name(o.name)
        out.append(
            ObjectiveInfo(
                name=o.name,
                metric=metric,
                target=target,
                maximize=o.maximize,
                provenance=provenance_of(records, metric, target),
                accuracy_kind=records.accuracy_kind,
                task_metric=records.task_metric,
            )
        )
    return tuple(out)


def provenance_of(records: RunRecord, metric: str, target: str | None) -> str:
    """How a metric was obtained in this run: from the first complete trial's measurements;
    failing that, a per-target number (or an unknown one) is estimated, any other (accuracy,
    size) measured on this host."""
    for t in records.trials:
        tgt = target or next(iter(t.measurements), None)
        if tgt is None:
            continue
        entry = t.metric(tgt, metric)
        if entry is not None and entry.provenance:
            return str(entry.provenance)
    m = metric_of(metric)
    return "estimated" if m is None or m.per_target else "measured"


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


def present_metrics(s: Summary) -> list[Metric]:
    """Per-target metrics that at least one complete trial recorded, in table order."""
    out = []
    for m in TARGET_METRICS:
        if any(t.metric(tg, m) for t in s.complete for tg in s.targets):
            out.append(m)
    return out


def fail_label(t: TrialRecord) -> str:
    """``stage: reason`` of a failed trial."""
    stage = "unknown" if t.fail_stage is None else t.fail_stage
    return f"{stage}: {'' if t.fail_reason is None else t.fail_reason}".strip()
