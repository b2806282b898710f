"""Turn a run's study into plain records: the only input the reports read."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.data import split_sizes
from edgeopt.errors import ConfigError
from edgeopt.rundir import Baseline
from edgeopt.search.study import shared
from edgeopt.search.study.artifacts import trial_artifacts
from edgeopt.search.study.source import OpenRun, RunSource
from edgeopt.search.study.storage import redact
from edgeopt.search.trial.protocol import SYNTHETIC_N

# 2: ``metric`` (the run's --metric, what val/test accuracy and the accuracy objective are)
# and, per front member and baseline with labelled data, ``task_metrics``:
# {"val"|"test": {metric: {"value", "provenance"[, "low", "high"]}}}
# 3: ``final_latency``: per trial re-measured after the search, {profile: {"p50_ms",
# "p90_ms", "ratio_to_original", "speedup", "load", "device"}}; at the top, per profile, the
# pass ({"device", "threads", "measured_at", "passes", "rounds", "load", "original":
# {"p50_ms", "p90_ms"}[, "missing"]} or {"skipped": reason}; see search/run/final_measure.py);
# and a host-measured latency's ``load`` (edgeopt.measure.machine_load.MachineLoad) in measurements;
# later, without a new version (a key added): ``unfinished``, the running and queued trials
# 4: ``baseline.stage_facts`` ({stage: what its probe found}) replaces the flat
# ``prunable``/``prune_ignored``/``prune_note``/``epoch_s``; ``disabled_stages``
# ([{"stage", "title", "reason"}]) replaces ``prune_unsupported``
SCHEMA_VERSION = 4
N_KEYS = ("n_val", "n_test")


def disabled_notes(study_attrs: Mapping[str, Any]) -> list[dict[str, str]]:
    """The stages a failure switched off for this model, for the records."""
    from edgeopt.search.trial.policy import disabled_stages
    from edgeopt.stages import STAGES

    return [
        {"stage": name, "title": getattr(STAGES.get(name), "title", "") or name, "reason": why}
        for name, why in disabled_stages(study_attrs).items()
    ]


def load_run(run: Path | str | RunSource, *, importance: bool = False) -> dict[str, Any]:
    """Everything a report needs from a run (a run directory, or a ``RunSource`` such as a
    shared study read from a machine that ran no trial), as JSON-ready dicts and lists.

    ``trials`` holds every trial (complete, failed, stopped early) with its candidate, the
    numbers per target with provenance, the machine that built and measured it, the
    constraint values, and whether it is on the feasible Pareto front. ``importance`` adds
    per-objective parameter importances.
    """
    return records_of(RunSource.of(run).open(), importance=importance)


def records_of(opened: OpenRun, *, importance: bool = False) -> dict[str, Any]:
    """``load_run`` on a run already opened."""
    out = _records(
        opened.study,
        opened.config,
        opened.baseline,
        opened.final,
        where=opened.source.where,
        storage=opened.source.storage,
        artifacts=opened.artifacts,
    )
    if importance:
        names = opened.study.user_attrs.get("objectives", [])
        out["importance"] = _importances(opened.study, names)
    return out


def study_records(study: optuna.Study) -> dict[str, Any] | None:
    """The records of a study from what it recorded itself (its settings, baseline and
    final numbers), as a search process sees it between trials: what the progress line
    reads, so that it names the pick the reports will. None for a study that recorded no
    settings or baseline (not started by this version of edgeopt)."""
    attrs = study.user_attrs
    final = {**shared.test_numbers(attrs), "final_latency": shared.final_latency(attrs)}
    try:
        config = shared.config_from(attrs, "", study.study_name)
        baseline = shared.baseline_from(attrs)
        if config is None or baseline is None:
            return None
        return _records(study, config, baseline, final, where="", storage="", artifacts=None)
    except ConfigError:  # e.g. a profile TOML the first machine named is not on this one
        return None


def _records(
    study: optuna.Study,
    config: RunConfig,
    baseline: Baseline,
    final: dict[str, Any],
    *,
    where: str,
    storage: str,
    artifacts: str | None,
) -> dict[str, Any]:
    """The records of ``study`` (see ``load_run``); ``where``, ``storage`` and ``artifacts``
    say where it was read from."""
    from edgeopt.profiles import load_profile

    targets = [load_profile(t).name for t in config.targets]
    names = study.user_attrs.get("objectives", [])
    directions = study.user_attrs.get("directions", [])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials} if complete else set()
    hopeless_bar = hopeless_below(config, baseline.val_accuracy)
    hopeless = {
        t.number
        for t in complete
        if t.number in front
        and hopeless_bar is not None
        and not t.user_attrs.get("baseline")
        and float(t.user_attrs.get("val_accuracy", 0.0)) < hopeless_bar
    }
    front -= hopeless
    trials = [
        _trial_record(t, names, targets, final["test_accuracy"], t.number in front)
        for t in study.get_trials(deepcopy=False)
        if t.state not in (TrialState.RUNNING, TrialState.WAITING)
    ]
    task = final.get("task_metrics", {})
    for rec in trials:
        if str(rec["number"]) in task:
            rec["task_metrics"] = task[str(rec["number"])]
    for rec in trials:
        if rec["number"] in hopeless:
            rec["hopeless"] = True
    _add_final_latency(trials, final.get("final_latency") or {})
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_dir": where,
        "study": {"name": config.study_name, "storage": redact(storage)},
        "artifacts": artifacts,
        "config": {**config.to_dict(), "storage": redact(config.storage or "") or None},
        "metric": config.metric,
        "baseline": baseline.to_dict(),
        "targets": targets,
        "objectives": [
            {"name": n, "direction": d} for n, d in zip(names, directions, strict=False)
        ],
        "trials": trials,
        "test_split": final.get("test_split"),
        # the samples behind val/test accuracy (synthetic inputs without data): for the
        # reports' confidence intervals
        **(split_sizes(config.data) if config.data else dict.fromkeys(N_KEYS, SYNTHETIC_N)),
        # stages a failure switched off for this model: [{stage, title, reason}]
        "disabled_stages": disabled_notes(study.user_attrs),
        "final_latency": {
            p: {k: v for k, v in e.items() if k != "trials"}
            for p, e in (final.get("final_latency") or {}).items()
        },
        # Pareto-optimal but far below the original on accuracy: kept off the front
        "hidden_hopeless": sorted(hopeless),
        "hopeless_below": hopeless_bar,
        # trials a worker has not finished (running, or queued): not in ``trials``
        "unfinished": sorted(
            t.number
            for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.RUNNING, TrialState.WAITING)
        ),
    }
    return out


HOPELESS_DROP = 0.05
"""Without an accuracy budget, a candidate more than this below the original's validation
accuracy is hidden from the front and the pick (the smallest model is always Pareto-optimal,
however useless: 14 % accuracy after pruning 70 % and one epoch)."""


def hopeless_below(config: Any, original_val: float) -> float | None:
    """The validation accuracy under which a front member is hidden: None when an accuracy
    budget is set (it already keeps such candidates off the feasible front)."""
    b = config.budgets
    if b.max_accuracy_drop is not None or b.min_accuracy is not None:
        return None
    return original_val - HOPELESS_DROP


def _trial_record(
    t: optuna.trial.FrozenTrial,
    names: list[str],
    targets: list[str],
    test_accuracy: dict[str, float],
    on_front: bool,
) -> dict[str, Any]:
    """One trial as a plain record (see ``load_run``)."""
    from edgeopt.search.study.lifecycle import STALE_REASON

    ua = t.user_attrs
    rec: dict[str, Any] = {
        "number": t.number,
        "state": t.state.name.lower(),
        "describe": ua.get("describe", ""),
        "baseline": ua.get("baseline"),
        "candidate": ua.get("candidate", {}),
        "params": dict(t.params),
        "start": t.datetime_start.isoformat() if t.datetime_start else None,
        "complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "timing": {k: ua[k] for k in ("build_s", "measure_s", "trial_s") if k in ua},
        "cache_hit": ua.get("cache_hit"),
        "machine": ua.get("machine"),
        "artifacts": trial_artifacts(t.system_attrs),
    }
    if t.state == TrialState.COMPLETE:
        all_meas = ua.get("measurements", {})
        meas = {k: v for k, v in all_meas.items() if ":" not in k}
        rec.update(
            values=dict(zip(names, t.values, strict=False)),
            val_accuracy=ua.get("val_accuracy"),
            test_accuracy=test_accuracy.get(str(t.number)),
            measurements={k: v["values"] for k, v in meas.items()},
            raw_latency={
                k.split(":")[0]: v["values"]["latency_ms"]
                for k, v in all_meas.items()
                if k.endswith(":raw")
            },
            size_mb=meas[targets[0]]["values"]["size_mb"]["value"],
            constraints=dict(t.constraints or {}),
            feasible=all(v <= 0 for v in (t.constraints or {}).values()),
            on_front=on_front,
            onnx=ua.get("onnx"),
            onnx_sha256=ua.get("onnx_sha256"),
            info=ua.get("info", {}),
        )
    elif t.state == TrialState.FAIL:
        # a trial failed by the heartbeat check carries no reason of its own
        rec.update(
            fail_stage=ua.get("fail_stage", "worker"),
            fail_reason=ua.get("fail_reason", STALE_REASON),
        )
    else:
        rec.update(pruned_reason=ua.get("pruned_reason", ""))
    return rec


def _add_final_latency(trials: list[dict[str, Any]], figures: dict[str, Any]) -> None:
    """Give each re-measured trial its ``final_latency``: per profile, its figures from the
    final pass with that pass's ``load`` and ``device``."""
    for profile, entry in figures.items():
        for rec in trials:
            mine = (entry.get("trials") or {}).get(str(rec["number"]))
            if mine is not None:
                extra = {k: entry[k] for k in ("load", "device") if k in entry}
                rec.setdefault("final_latency", {})[profile] = {**mine, **extra}


def _importances(study: optuna.Study, names: list[str]) -> dict[str, dict[str, float]]:
    """Parameter importance per objective (fANOVA); empty when too few trials."""
    out: dict[str, dict[str, float]] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 4:
        return out
    for i, name in enumerate(names):
        try:
            imp = optuna.importance.get_param_importances(
                study, target=lambda t, i=i: t.values[i], normalize=True
            )
        except (RuntimeError, ValueError, ZeroDivisionError):
            continue
        out[name] = {k: float(v) for k, v in imp.items() if math.isfinite(v)}
    return out


def report_records(run: Path | str | RunSource) -> dict[str, Any]:
    """``load_run`` with parameter importances, as the reports show them."""
    with warnings.catch_warnings():
        # Optuna's importance evaluator warns on small samples; the report says when
        # importance is missing or rests on few trials
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return load_run(run, importance=True)


def write_run_reports(
    run: Path | str | RunSource, out_dir: Path, formats: Iterable[str]
) -> list[Path]:
    """Load the run (a run directory or a ``RunSource``; with parameter importances) and
    render its reports into ``out_dir``. Raises ConfigError when it cannot be read."""
    from edgeopt.report import render_reports

    return render_reports(report_records(run), out_dir, formats)
