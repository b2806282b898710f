"""Turn a run's study into plain records: the only input the reports read."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.data import DataKind, split_sizes
from edgeopt.errors import ConfigError
from edgeopt.profiles import resolve_targets
from edgeopt.records import (
    SCHEMA_VERSION,
    FinalLatency,
    FinalPass,
    Objective,
    RunRecord,
    TrialRecord,
)
from edgeopt.report import render_reports
from edgeopt.rundir import Baseline, RunDir
from edgeopt.search.study import shared
from edgeopt.search.study.records import metric_entries, trial_record
from edgeopt.search.study.source import OpenRun, RunSource
from edgeopt.search.study.storage import redact
from edgeopt.search.trial.protocol import SYNTHETIC_N
from edgeopt.stages import STAGES

N_KEYS = ("n_val", "n_test")


def disabled_notes(study_attrs: Mapping[str, Any]) -> list[dict[str, str]]:
    """The stages a failure switched off for this model, for the records."""
    from edgeopt.search.trial.policy import disabled_stages

    return [
        {"stage": name, "title": getattr(STAGES.get(name), "title", "") or name, "reason": why}
        for name, why in disabled_stages(study_attrs).items()
    ]


def rested_notes(study_attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stages a streak of failures rested (their latest rest), for the records."""
    from edgeopt.search.trial.policy import FAIL_STREAK, RESTED_ATTR

    return [
        {
            "stage": name,
            "title": getattr(STAGES.get(name), "title", "") or name,
            "streak": FAIL_STREAK,
            **rest,
        }
        for name, rest in (study_attrs.get(RESTED_ATTR) or {}).items()
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
    run = _records(
        opened.study,
        opened.config,
        opened.baseline,
        opened.final,
        where=opened.source.where,
        storage=opened.source.storage,
        artifacts=opened.artifacts,
    )
    if opened.final.get("latency_by_seq"):
        run = replace(run, latency_by_seq=opened.final["latency_by_seq"])
    if importance:
        names = opened.study.user_attrs.get("objectives", [])
        run = replace(run, importance=_importances(opened.study, names))
    return run.to_dict()


def study_records(study: optuna.Study) -> RunRecord | None:
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
) -> RunRecord:
    """The records of ``study`` (see ``load_run``); ``where``, ``storage`` and ``artifacts``
    say where it was read from."""
    targets = list(config.target_names() or resolve_targets(config.targets).names)
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
    figures = final.get("final_latency") or {}
    trials = [
        _finished(
            trial_record(
                t,
                names,
                test_accuracy=final["test_accuracy"],
                on_front=t.number in front,
                size_target=targets[0],
            ),
            final.get("task_metrics", {}),
            hopeless,
            figures,
        )
        for t in study.get_trials(deepcopy=False)
        if t.state not in (TrialState.RUNNING, TrialState.WAITING)
    ]
    # the samples behind val/test accuracy (synthetic inputs without data): for the
    # reports' confidence intervals
    facts = _data_facts(where, config)
    if facts is not None:  # streamed: scored on seeded subsets of at most eval_samples
        cap = int(facts.get("eval_samples") or 0) or None
        counts = facts.get("counts", {})
        test = counts.get("test", counts.get("val"))
        n = {"n_val": _capped(counts.get("val"), cap), "n_test": _capped(test, cap)}
    elif config.data and config.data.kind is DataKind.NPZ:
        n = split_sizes(config.data.path)
    elif config.data:  # streamed data read from a study alone: its sizes are not recorded
        n = dict.fromkeys(N_KEYS)
    else:
        n = dict.fromkeys(N_KEYS, SYNTHETIC_N)
    return RunRecord(
        schema_version=SCHEMA_VERSION,
        run_dir=where,
        study={"name": config.study_name, "storage": redact(storage)},
        artifacts=artifacts,
        config={**config.to_dict(), "storage": redact(config.storage or "") or None},
        metric=config.metric,
        baseline=baseline.to_dict(),
        targets=tuple(targets),
        objectives=tuple(
            Objective(name=n, direction=d) for n, d in zip(names, directions, strict=False)
        ),
        trials=tuple(trials),
        test_split=final.get("test_split"),
        n_val=n["n_val"],
        n_test=n["n_test"],
        # stages a failure switched off for this model: [{stage, title, reason}]
        disabled_stages=tuple(disabled_notes(study.user_attrs)),
        # stages a streak of failures switched off for a while: [{stage, title, streak,
        # after, until, times, reason}]
        rested_stages=tuple(rested_notes(study.user_attrs)),
        final_latency={
            p: FinalPass.from_dict({k: v for k, v in e.items() if k != "trials"})
            for p, e in figures.items()
        },
        # Pareto-optimal but far below the original on accuracy: kept off the front
        hidden_hopeless=tuple(sorted(hopeless)),
        hopeless_below=hopeless_bar,
        data_facts=facts,
        # trials a worker has not finished (running, or queued): not in ``trials``
        unfinished=tuple(
            sorted(
                t.number
                for t in study.get_trials(deepcopy=False)
                if t.state in (TrialState.RUNNING, TrialState.WAITING)
            )
        ),
    )


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


def _finished(
    rec: TrialRecord, task: dict[str, Any], hopeless: set[int], figures: dict[str, Any]
) -> TrialRecord:
    """``rec`` with what finalize recorded after the search: its task metrics, whether it was
    hidden for hopeless accuracy, and per profile its figures from the final pass (with that
    pass's ``load`` and ``device``)."""
    number = str(rec.number)
    final = {}
    for profile, entry in figures.items():
        mine = (entry.get("trials") or {}).get(number)
        if mine is not None:
            extra = {k: entry[k] for k in ("load", "device") if k in entry}
            final[profile] = FinalLatency.from_dict({**mine, **extra})
    return replace(
        rec,
        task_metrics={s: metric_entries(by) for s, by in task.get(number, {}).items()},
        hopeless=rec.number in hopeless,
        final_latency=final,
    )


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
    return render_reports(report_records(run), out_dir, formats)


def _data_facts(where: str, config: RunConfig) -> dict[str, Any] | None:
    """``data.json`` of the run directory ``where`` (streamed data only), else None."""
    if not where or not config.data or config.data.kind is DataKind.NPZ:
        return None
    path = RunDir(Path(where)).data_file
    return json.loads(path.read_text()) if path.exists() else None


def _capped(n: Any, cap: int | None) -> int | None:
    if not isinstance(n, int):
        return None
    return min(n, cap) if cap else n
