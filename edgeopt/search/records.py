"""Turn a run's study into plain records: the only input the reports read."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.errors import ConfigError
from edgeopt.rundir import RunDir

SCHEMA_VERSION = 1


def load_run(run_dir: Path, *, importance: bool = False) -> dict[str, Any]:
    """Everything a report needs from ``run_dir``, as JSON-ready dicts and lists.

    ``trials`` holds every trial (complete, failed, stopped early) with its candidate, the
    numbers per target with provenance, the constraint values, and whether it is on the
    feasible Pareto front. ``importance`` adds per-objective parameter importances.
    """
    from edgeopt.profiles import load_profile

    run = RunDir(run_dir)
    config = run.read_config()
    study = load_study(run, config)
    final = run.read_final()
    final.setdefault("test_accuracy", {})
    targets = [load_profile(t).name for t in config.targets]
    names = study.user_attrs.get("objectives", [])
    directions = study.user_attrs.get("directions", [])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials} if complete else set()
    trials = [
        _trial_record(t, names, targets, final["test_accuracy"], t.number in front)
        for t in study.get_trials(deepcopy=False)
        if t.state not in (TrialState.RUNNING, TrialState.WAITING)
    ]
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_dir": str(run.path),
        "config": config.to_dict(),
        "baseline": run.read_baseline().to_dict(),
        "targets": targets,
        "objectives": [
            {"name": n, "direction": d} for n, d in zip(names, directions, strict=False)
        ],
        "trials": trials,
        "test_split": final.get("test_split"),
        "prune_unsupported": study.user_attrs.get("prune_unsupported"),
    }
    if importance:
        out["importance"] = _importances(study, names)
    return out


def load_study(run: RunDir, config: Any) -> optuna.Study:
    """The run's study, opened for reading. A missing or damaged ``study.db`` is a
    ConfigError (opening a missing SQLite file would silently create an empty study)."""
    if config.storage is None and not run.study_db.is_file():
        raise ConfigError(
            f"{run.path} has no study.db: the study of this run is gone",
            hint="restore study.db from a backup, or re-run `edgeopt optimize` into a new --out",
        )
    try:
        return optuna.load_study(study_name=config.study_name, storage=run.storage_url(config))
    except KeyError as exc:
        raise ConfigError(
            f"{run.storage_url(config)} holds no study {config.study_name!r}",
            hint="check --storage and --study, or re-run the search",
        ) from exc
    except Exception as exc:  # sqlite3.DatabaseError through SQLAlchemy, and the like
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot read the study of {run.path}: {first}",
            hint="study.db is damaged or unreadable; restore it or re-run into a new --out",
        ) from exc


def _trial_record(
    t: optuna.trial.FrozenTrial,
    names: list[str],
    targets: list[str],
    test_accuracy: dict[str, float],
    on_front: bool,
) -> dict[str, Any]:
    """One trial as a plain record (see ``load_run``)."""
    from edgeopt.search.study import STALE_REASON

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


def write_run_reports(run_dir: Path, out_dir: Path, formats: Iterable[str]) -> list[Path]:
    """Load the run in ``run_dir`` (with parameter importances) and render its reports into
    ``out_dir``. Raises ConfigError when ``run_dir`` is not a run directory."""
    from edgeopt.report import render_reports

    with warnings.catch_warnings():
        # Optuna's importance evaluator warns on small samples; the report says when
        # importance is missing or rests on few trials
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        records = load_run(Path(run_dir), importance=True)
    return render_reports(records, out_dir, formats)
