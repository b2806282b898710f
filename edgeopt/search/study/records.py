"""A finished Optuna trial read back as a typed ``TrialRecord``: the one function that knows
the user attributes the search writes (``trial_record``); the run's records, MLflow tracking
and the progress line all read trials through it. Kept free of optuna imports (a trial child
imports ``stopped_reason``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edgeopt.records import Machine, MetricEntry, Timing, TrialRecord, TrialState
from edgeopt.search.strategy.user_space import RECIPE_ATTR
from edgeopt.search.study.artifacts import trial_artifacts

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

STOPPED_REASON = "stopped_reason"
"""The user attribute that says why a trial was stopped early (``pruned_reason`` in studies
of an older edgeopt: ``stopped_reason`` reads both)."""

STALE_REASON = (
    "its worker stopped sending heartbeats (killed, crashed, or its machine went down); "
    "the trial is re-queued once"
)
"""The reason of a trial failed by the heartbeat check (it records none of its own)."""

_STATES = {
    "COMPLETE": TrialState.COMPLETE,
    "FAIL": TrialState.FAIL,
    "PRUNED": TrialState.STOPPED,  # Optuna's "pruned": stopped early
}


def stopped_reason(attrs: Mapping[str, Any], default: Any = None) -> Any:
    """Why a trial was stopped early, from its user attributes (an older study's too)."""
    return attrs.get(STOPPED_REASON, attrs.get("pruned_reason", default))


def trial_record(
    t: FrozenTrial,
    names: Sequence[str] = (),
    *,
    test_accuracy: Mapping[str, float] | None = None,
    on_front: bool = False,
    size_target: str | None = None,
) -> TrialRecord:
    """Finished trial ``t`` (complete, failed or stopped early) as a record: ``names`` are the
    study's objective names (for ``values``); ``test_accuracy`` the run's test numbers by
    trial number; ``size_target`` the target whose size is ``size_mb`` (default: the first
    that measured one).
    """
    ua = t.user_attrs
    machine = ua.get("machine")
    rec = TrialRecord(
        number=t.number,
        state=_STATES[t.state.name],
        describe=ua.get("describe", ""),
        baseline=ua.get("baseline"),
        candidate=ua.get("candidate", {}),
        params=dict(t.params),
        start=t.datetime_start.isoformat() if t.datetime_start else None,
        complete=t.datetime_complete.isoformat() if t.datetime_complete else None,
        timing=Timing(**{k: ua[k] for k in ("build_s", "measure_s", "trial_s") if k in ua}),
        cache_hit=ua.get("cache_hit"),
        machine=Machine.from_dict(machine) if machine else None,
        artifacts=trial_artifacts(t.system_attrs),
        user_recipe=ua.get(RECIPE_ATTR),
    )
    if rec.state is TrialState.COMPLETE:
        all_meas = ua.get("measurements", {})
        meas = {k: v for k, v in all_meas.items() if ":" not in k}
        sized = size_target or next((k for k, v in meas.items() if "size_mb" in v["values"]), None)
        return replace(
            rec,
            values=dict(zip(names, t.values or (), strict=False)),
            val_accuracy=ua.get("val_accuracy"),
            test_accuracy=(test_accuracy or {}).get(str(t.number)),
            measurements={k: metric_entries(v["values"]) for k, v in meas.items()},
            raw_latency={
                k.split(":")[0]: MetricEntry.from_dict(v["values"]["latency_ms"])
                for k, v in all_meas.items()
                if k.endswith(":raw")
            },
            size_mb=meas[sized]["values"]["size_mb"]["value"] if sized is not None else None,
            constraints=dict(t.constraints or {}),
            feasible=all(v <= 0 for v in (t.constraints or {}).values()),
            on_front=on_front,
            onnx=ua.get("onnx"),
            onnx_sha256=ua.get("onnx_sha256"),
            info=ua.get("info", {}),
        )
    if rec.state is TrialState.FAIL:
        # a trial failed by the heartbeat check carries no reason of its own
        return replace(
            rec,
            fail_stage=ua.get("fail_stage", "worker"),
            fail_reason=ua.get("fail_reason", STALE_REASON),
        )
    return replace(rec, stopped_reason=stopped_reason(ua, ""))


def metric_entries(by_metric: Mapping[str, Any]) -> dict[str, MetricEntry]:
    """``{metric: entry dict}`` as typed entries."""
    return {m: MetricEntry.from_dict(e) for m, e in by_metric.items()}
