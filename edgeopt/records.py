"""The run as a typed record: what the search writes and the reports read.

A run's records are a JSON document (``edgeopt.search.run.collect.load_run``; the JSON report
adds its conclusions to it). ``RunRecord.from_dict`` reads one into frozen dataclasses,
``to_dict`` writes it back: exactly the dict it read (same keys, same order, same values,
keys this version does not know included), so a report rendered from a ``RunRecord`` is
byte for byte the one rendered from the dict. A value this version reads differently from
how it would write it (a ``null`` where a mapping belongs) is kept as read for ``to_dict``,
and read as the field's empty value. Accessors (``TrialRecord.task_metric``,
``RunRecord.budgets`` ...) replace the ``.get`` chains readers needed on the dicts.

Imports only the standard library, ``edgeopt.errors``, ``edgeopt.metrics`` and the codec
(``edgeopt.record_codec``): both the search, which writes records, and the reports, which
read them, import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from edgeopt.data_facts import FolderFacts
from edgeopt.errors import ConfigError
from edgeopt.metrics import DEFAULT_TASK_METRIC
from edgeopt.record_codec import MAP, PLAIN, Codec, Record, fld, mapping, optional, record, seq

# The version history of the records (and the JSON report, which carries the same number):
# 2: ``metric`` (the run's --metric, what val/test accuracy and the accuracy objective are)
# and, per front member and baseline with labelled data, ``task_metrics``:
# {"val"|"test": {metric: {"value", "provenance"[, "low", "high"]}}}
# 3: ``final_latency``: per trial re-measured after the search, {profile: {"p50_ms",
# "p90_ms", "ratio_to_original", "speedup", "load", "device"}}; at the top, per profile, the
# pass ({"device", "threads", "measured_at", "passes", "rounds", "load", "original":
# {"p50_ms", "p90_ms"}[, "missing"]} or {"skipped": reason}; see search/final_measure.py);
# and a host-measured latency's ``load`` (edgeopt.measure.machine_load.MachineLoad) in measurements;
# later, without a new version (a key added): ``unfinished``, the running and queued trials
# 4: a trial stopped early is ``"state": "stopped"`` with ``stopped_reason`` (was Optuna's
# ``"pruned"`` with ``pruned_reason``: in edgeopt "pruned" is structured pruning). Older
# records read as before: ``TrialRecord.from_dict`` takes both words
# 5: ``baseline.stage_facts`` ({stage: what its probe found}) replaces the flat
# ``prunable``/``prune_ignored``/``prune_note``/``epoch_s``; ``disabled_stages``
# ([{"stage", "title", "reason"}]) replaces ``prune_unsupported``; later, without a new
# version (a key added, only when a stage rested): ``rested_stages`` ([{"stage", "title",
# "streak", "after", "until", "times", "reason"[, "failed_in"]}], the latest rest of each
# stage; ``failed_in``: the step the streak failed in when it is not the stage)
SCHEMA_VERSION = 5


# ---------------------------------------------------------------------------- small records
@dataclass(frozen=True, kw_only=True)
class BusyProcess(Record):
    """A process that used CPU during a measurement (``edgeopt.measure.machine_load``)."""

    name: str | None = fld()
    pid: int | None = fld()
    cpu: float | None = fld()


@dataclass(frozen=True, kw_only=True)
class Load(Record):
    """The host's load around one measurement (``edgeopt.measure.machine_load.MachineLoad``)."""

    loadavg_1m: float | None = fld()
    loadavg_1m_before: float | None = fld()
    cpu_count: int | None = fld()
    other_cpus: float | None = fld()
    busy: int | None = fld()
    busy_processes: tuple[BusyProcess, ...] = fld((), seq(record(BusyProcess)))
    window_s: float | None = fld()

    def layout(self) -> tuple[str, ...]:
        # ``MachineLoad.to_dict`` writes every field, an empty ``busy_processes`` too
        return tuple(f.name for f in fields(self) if f.name != "kept")


@dataclass(frozen=True, kw_only=True)
class MetricEntry(Record):
    """One recorded number (``edgeopt.metrics.MetricValue.to_dict``, or a task metric)."""

    value: float | None = fld()
    provenance: str | None = fld()
    spread: float | None = fld()
    low: float | None = fld()
    high: float | None = fld()
    device: str | None = fld()
    load: Load | None = fld(None, optional(Load))

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(low, high)`` when both are numbers."""
        lo, hi = self.low, self.high
        if _number(lo) and _number(hi):
            return float(lo), float(hi)  # type: ignore[arg-type]
        return None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True, kw_only=True)
class Timing(Record):
    """Where a trial's time went, in seconds: building the candidate, measuring it, in all."""

    build_s: float | None = fld()
    measure_s: float | None = fld()
    trial_s: float | None = fld()


@dataclass(frozen=True, kw_only=True)
class Machine(Record):
    """The machine that built and measured a trial (``trial.objective.machine_description``)."""

    hostname: str | None = fld()
    cpu: str | None = fld()
    baseline_latency_ms: Mapping[str, float] = fld(codec=MAP, factory=dict)

    def layout(self) -> tuple[str, ...]:
        return ("hostname", "cpu", "baseline_latency_ms")

    @property
    def label(self) -> str:
        """``hostname (CPU line)``."""
        host = "?" if self.hostname is None else self.hostname
        return f"{host} ({'unknown CPU' if self.cpu is None else self.cpu})"


@dataclass(frozen=True, kw_only=True)
class FinalLatency(Record):
    """A host latency re-measured after the search (a trial's, or the pass's original)."""

    p50_ms: float | None = fld()
    p90_ms: float | None = fld()
    ratio_to_original: float | None = fld()
    speedup: float | None = fld()
    load: Load | None = fld(None, optional(Load))
    device: str | None = fld()


@dataclass(frozen=True, kw_only=True)
class FinalPass(Record):
    """One profile's final re-measure pass (``search.run.final_measure``), or why it was skipped."""

    device: str | None = fld()
    threads: int | None = fld()
    measured_at: str | None = fld()
    passes: int | None = fld()
    original: FinalLatency | None = fld(None, optional(FinalLatency))
    rounds: int | None = fld()
    load: Load | None = fld(None, optional(Load))
    missing: Mapping[str, Any] = fld(codec=MAP, factory=dict)
    skipped: str | None = fld()


@dataclass(frozen=True, kw_only=True)
class Objective(Record):
    """One optimized number: ``name`` as recorded (``latency_ms[host-cpu]``) and direction."""

    name: str = fld("")
    direction: str | None = fld()

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


# ---------------------------------------------------------------------------- a trial
class TrialState(StrEnum):
    """How a recorded trial ended (running and queued trials are not recorded)."""

    COMPLETE = "complete"
    FAIL = "fail"
    STOPPED = "stopped"  # early, by the stopping rule or a hopeless first epoch


OLD_STATES = {"pruned": TrialState.STOPPED}
"""States of older records (schema 3 and before: Optuna's "pruned" for a trial stopped early,
a word the reports keep for structured pruning)."""


_STATES = frozenset(TrialState)


def _state(v: Any) -> TrialState:
    if isinstance(v, str) and v in OLD_STATES:
        return OLD_STATES[v]
    if isinstance(v, str) and v in _STATES:
        return TrialState(v)
    raise ConfigError(
        f"unknown trial state {v!r} in the records",
        hint=f"a recorded trial is one of {', '.join(TrialState)}",
    )


_ENTRIES = mapping(mapping(record(MetricEntry)))  # {target or split: {metric: entry}}
_COMMON = (
    "number", "state", "describe", "baseline", "candidate", "params", "start", "complete",
    "timing", "cache_hit", "machine", "artifacts",
)  # fmt: skip
_BY_STATE = {
    TrialState.COMPLETE: (
        "values", "val_accuracy", "test_accuracy", "measurements", "raw_latency", "size_mb",
        "constraints", "feasible", "on_front", "onnx", "onnx_sha256", "info",
    ),
    TrialState.FAIL: ("fail_stage", "fail_reason"),
    TrialState.STOPPED: ("stopped_reason",),
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class TrialRecord(Record):
    """One finished trial: complete (its numbers), failed (stage and reason) or stopped early.

    ``measurements``: ``{target: {metric: entry}}``, the numbers the objectives came from;
    ``raw_latency``: ``{target: entry}``, a host latency as timed, before it was scaled by
    the study's reference; ``task_metrics``: ``{"val"|"test": {metric: entry}}`` (front
    members and baselines, labelled data); ``final_latency``: ``{target: figure}`` from the
    re-measure after the search. ``feasible`` is True where no budget was recorded.
    """

    ALIASES = {"pruned_reason": "stopped_reason"}  # schema 3 and before

    number: int = fld()
    state: TrialState = fld(None, Codec(_state, str, lambda v: isinstance(v, str) and v in _STATES))
    describe: str = fld("")
    baseline: str | None = fld()
    candidate: Mapping[str, Any] = fld(codec=MAP, factory=dict)
    params: Mapping[str, Any] = fld(codec=MAP, factory=dict)
    start: str | None = fld()
    complete: str | None = fld()
    timing: Timing = fld(codec=record(Timing, empty=True), factory=Timing)
    cache_hit: bool | None = fld()
    machine: Machine | None = fld(None, optional(Machine))
    artifacts: Mapping[str, str] | None = fld()
    values: Mapping[str, float] = fld(codec=MAP, factory=dict)
    val_accuracy: float | None = fld()
    test_accuracy: float | None = fld()
    measurements: Mapping[str, Mapping[str, MetricEntry]] = fld(codec=_ENTRIES, factory=dict)
    raw_latency: Mapping[str, MetricEntry] = fld(codec=mapping(record(MetricEntry)), factory=dict)
    size_mb: float | None = fld()
    constraints: Mapping[str, float] = fld(codec=MAP, factory=dict)
    feasible: bool = fld(True)
    on_front: bool = fld(False)
    onnx: str | None = fld()
    onnx_sha256: str | None = fld()
    info: Mapping[str, Any] = fld(codec=MAP, factory=dict)
    fail_stage: str | None = fld()
    fail_reason: str | None = fld()
    stopped_reason: str | None = fld()
    task_metrics: Mapping[str, Mapping[str, MetricEntry]] = fld(codec=_ENTRIES, factory=dict)
    hopeless: bool = fld(False)
    user_recipe: str | None = fld()  # the tag of the user's recipe (--enqueue) it ran
    final_latency: Mapping[str, FinalLatency] = fld(
        codec=mapping(record(FinalLatency)), factory=dict
    )

    REQUIRED = ("number", "state")

    def layout(self) -> tuple[str, ...]:
        extra = [
            k
            for k in ("task_metrics", "hopeless", "user_recipe", "final_latency")
            if getattr(self, k)
        ]
        return (*_COMMON, *_BY_STATE[self.state], *extra)

    @property
    def is_complete(self) -> bool:
        return self.state is TrialState.COMPLETE

    def metric(self, target: str, metric: str) -> MetricEntry | None:
        """The entry of ``metric`` measured or estimated on ``target``, if recorded."""
        return self.measurements.get(target, {}).get(metric)

    def task_metric(self, split: str, metric: str) -> MetricEntry | None:
        """Task metric ``metric`` (``accuracy``, ``f1`` ...) on ``split`` (``val``/``test``),
        if finalize recorded it (front members and baselines, labelled data)."""
        return self.task_metrics.get(split, {}).get(metric)

    def accuracy(self, split: str) -> float | None:
        """The validation or test score (``val``/``test``): the run's ``--metric``."""
        return self.val_accuracy if split == "val" else self.test_accuracy

    def final(self, target: str) -> FinalLatency | None:
        """The latency re-measured on ``target`` after the search, if it was."""
        return self.final_latency.get(target)


# ---------------------------------------------------------------------------- the run
@dataclass(frozen=True, kw_only=True)
class RunRecord(Record):
    """A run: its settings, baseline, objectives and every finished trial.

    ``config`` is ``RunConfig.to_dict()`` and ``baseline`` ``rundir.Baseline.to_dict()``
    (both defined above this module: read through the accessors below); ``n_val``/``n_test``
    the samples behind the val/test scores; ``hidden_hopeless`` the Pareto-optimal trials
    kept off the front for an accuracy under ``hopeless_below``; ``unfinished`` the trials a
    worker had not finished; ``rested_stages`` the stages a streak of failed trials switched
    off for a while (``edgeopt.search.trial.policy``); ``importance`` ``{objective: {param:
    importance}}`` when it was computed (``load_run(importance=True)``).
    """

    schema_version: int | None = fld()
    run_dir: str | None = fld()
    study: Mapping[str, Any] | None = fld()
    artifacts: str | None = fld()
    config: Mapping[str, Any] = fld(codec=MAP, factory=dict)
    metric: str | None = fld()
    baseline: Mapping[str, Any] = fld(codec=MAP, factory=dict)
    targets: tuple[str, ...] = fld((), seq(PLAIN))
    objectives: tuple[Objective, ...] = fld((), seq(record(Objective)))
    trials: tuple[TrialRecord, ...] = fld((), seq(record(TrialRecord)))
    test_split: str | None = fld()
    n_val: int | None = fld()
    n_test: int | None = fld()
    prune_unsupported: str | None = fld()  # schema 4 and older; then ``disabled_stages``
    disabled_stages: tuple[Mapping[str, str], ...] = fld((), seq(PLAIN))
    rested_stages: tuple[Mapping[str, Any], ...] = fld((), seq(PLAIN))
    final_latency: Mapping[str, FinalPass] = fld(codec=mapping(record(FinalPass)), factory=dict)
    hidden_hopeless: tuple[int, ...] = fld((), seq(PLAIN))
    hopeless_below: float | None = fld()
    unfinished: tuple[int, ...] = fld((), seq(PLAIN))
    data_facts: Mapping[str, Any] | None = fld()
    """What set-up found in streamed data (``data.json``: classes, counts, preprocessing,
    fingerprint, eval samples); None for an npz, without data, or read from a study alone."""
    # --seq-lens: {profile: per-length figures} (edgeopt.search.run.seq_measure)
    latency_by_seq: Mapping[str, Any] | None = fld()
    importance: Mapping[str, Mapping[str, float]] | None = fld()

    def layout(self) -> tuple[str, ...]:
        names = tuple(f.name for f in fields(self) if f.name != "kept")
        if self.prune_unsupported is None:  # schema 4 and older only
            names = tuple(n for n in names if n != "prune_unsupported")
        if not self.rested_stages:  # written only when a stage rested
            names = tuple(n for n in names if n != "rested_stages")
        for name in ("data_facts", "latency_by_seq"):  # streamed data; --seq-lens
            if getattr(self, name) is None:
                names = tuple(n for n in names if n != name)
        return names if self.importance is not None else names[:-1]

    @property
    def task_metric(self) -> str:
        """The run's ``--metric`` (``accuracy`` for runs that recorded none)."""
        return str(self.metric or DEFAULT_TASK_METRIC)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The name of each class index (an image folder's class folders), if recorded."""
        names = (self.data_facts or {}).get("classes")
        return tuple(str(n) for n in names) if names else None

    @property
    def folder_facts(self) -> FolderFacts | None:
        """``data_facts`` typed (classes, counts, recipe): an image folder's, else None."""
        return FolderFacts.from_dict(self.data_facts) if self.data_facts else None

    def n(self, split: str) -> int | None:
        """The samples behind the ``val``/``test`` scores, if recorded."""
        return self.n_val if split == "val" else self.n_test

    def trial(self, number: int) -> TrialRecord | None:
        return next((t for t in self.trials if t.number == number), None)

    # the baseline (``rundir.Baseline``)
    @property
    def accuracy_kind(self) -> str:
        """``accuracy`` on task data, ``fidelity`` without (agreement with the original)."""
        return str(self.baseline.get("accuracy_kind", "accuracy"))

    @property
    def original_val_accuracy(self) -> float | None:
        return self.baseline.get("val_accuracy")

    @property
    def original_test_accuracy(self) -> float | None:
        return self.baseline.get("test_accuracy")

    @property
    def salt(self) -> str | None:
        """What identifies model + data + seed in every cache key of the run."""
        return self.baseline.get("salt")

    @property
    def host_latency_ms(self) -> Mapping[str, float]:
        """The study's reference latency of the original per host profile."""
        return self.baseline.get("host_latency_ms") or {}

    @property
    def host(self) -> str | None:
        """The machine the baseline was measured on."""
        return self.baseline.get("host")

    # the settings (``config.RunConfig``)
    @property
    def budgets(self) -> dict[str, float]:
        """The budgets that are set."""
        b = self.config.get("budgets") or {}
        return {k: v for k, v in b.items() if v is not None}

    @property
    def model_spec(self) -> Mapping[str, Any] | None:
        """The model as the run named it (``loading.ModelSpec.to_dict()``)."""
        return self.config.get("model")

    @property
    def model_path(self) -> str | None:
        return (self.config.get("model") or {}).get("path")

    @property
    def data(self) -> str | None:
        """Where the run's data came from: its path, ``a callable data source`` (whose
        reference is never recorded), None without data. ``run.json`` records a data spec;
        a run from before, the npz's path alone."""
        raw = self.config.get("data")
        if isinstance(raw, Mapping):
            return str(raw.get("path") or f"a {raw.get('kind')} data source")
        return raw

    @property
    def preprocess(self) -> Mapping[str, Any] | None:
        """The preprocessing recipe of the run's data (``Preprocess.to_dict()``): an image
        folder's; None for an npz, a run without data, or a run recorded before recipes."""
        raw = self.config.get("data")
        recipe = raw.get("recipe") if isinstance(raw, Mapping) else None
        return recipe if isinstance(recipe, Mapping) else None

    @property
    def sampler(self) -> str | None:
        return self.config.get("sampler")

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    @property
    def plain_search(self) -> bool:
        return bool(self.config.get("plain_search"))


def as_run(records: RunRecord | Mapping[str, Any]) -> RunRecord:
    """``records`` as a ``RunRecord`` (read from the dict ``load_run`` gives, when one)."""
    return records if isinstance(records, RunRecord) else RunRecord.from_dict(records)
