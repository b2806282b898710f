"""Turn a run's study into plain records: the only input the reports read."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.config import read_run_config, storage_url

SCHEMA_VERSION = 1


def load_run(run_dir: Path, *, importance: bool = False) -> dict[str, Any]:
    """Everything a report needs from ``run_dir``, as JSON-ready dicts and lists.

    ``trials`` holds every trial (complete, failed, stopped early) with its candidate, the
    numbers per target with provenance, the constraint values, and whether it is on the
    feasible Pareto front. ``importance`` adds per-objective parameter importances.
    """
    from edgeopt.profiles import load_profile

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    study = optuna.load_study(study_name=config.study_name, storage=storage_url(config, run_dir))
    baseline = json.loads((run_dir / "baseline" / "baseline.json").read_text())
    final_path = run_dir / "final.json"
    final = json.loads(final_path.read_text()) if final_path.exists() else {"test_accuracy": {}}
    targets = [load_profile(t).name for t in config.targets]
    names = study.user_attrs.get("objectives", [])
    directions = study.user_attrs.get("directions", [])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials} if complete else set()
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
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
            meas = {k: v for k, v in ua.get("measurements", {}).items() if ":" not in k}
            first = meas[targets[0]]["values"]
            rec.update(
                values=dict(zip(names, t.values, strict=False)),
                val_accuracy=ua.get("val_accuracy"),
                test_accuracy=final["test_accuracy"].get(str(t.number)),
                measurements={k: v["values"] for k, v in meas.items()},
                raw_latency={
                    k.split(":")[0]: v["values"]["latency_ms"]
                    for k, v in ua.get("measurements", {}).items()
                    if k.endswith(":raw")
                },
                size_mb=first["size_mb"]["value"],
                constraints=dict(t.constraints or {}),
                feasible=all(v <= 0 for v in (t.constraints or {}).values()),
                on_front=t.number in front,
                onnx=ua.get("onnx"),
                info=ua.get("info", {}),
            )
        elif t.state == TrialState.FAIL:
            rec.update(
                fail_stage=ua.get("fail_stage", "unknown"),
                fail_reason=ua.get("fail_reason", "the trial raised an unexpected error"),
            )
        else:
            rec.update(pruned_reason=ua.get("pruned_reason", ""))
        trials.append(rec)
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_dir": str(run_dir),
        "config": config.to_dict(),
        "baseline": baseline,
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
