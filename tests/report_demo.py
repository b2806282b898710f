"""Seeded, self-consistent run records of any size, shaped exactly like ``load_run`` output.

For rendering checks and tests of the renderers at sizes a quick real run cannot reach
(50 trials with failures, stopped-early trials and infeasible ones). The front is computed
with the same Pareto maths the reports use, on feasible trials only, as Optuna does.
"""

from __future__ import annotations

import random
from typing import Any

from edgeopt.report.pareto import pareto_front


def demo_records(
    n_trials: int = 50,
    *,
    targets: tuple[str, ...] = ("host-cpu", "mobile-sd8gen2"),
    seed: int = 0,
    max_size_mb: float | None = 0.03,
    fidelity: bool = False,
    importance: bool = True,
) -> dict[str, Any]:
    """Records of a made-up run: trial 0 is the original, trial 1 plain int8, then a mix of
    complete (some over ``max_size_mb``), failed and stopped-early trials."""
    rng = random.Random(seed)
    objectives = [{"name": "accuracy", "direction": "maximize"}]
    objectives += [{"name": f"latency_ms[{t}]", "direction": "minimize"} for t in targets]
    objectives.append({"name": "size_mb", "direction": "minimize"})
    base_acc = 0.93 if not fidelity else 1.0
    trials = [_trial(rng, n, targets, base_acc, max_size_mb) for n in range(n_trials)]
    names = [o["name"] for o in objectives]
    feas = [t for t in trials if t["state"] == "complete" and t["feasible"]]
    pts = [[t["values"][k] for k in names] for t in feas]
    for i in pareto_front(pts, [o["direction"] == "maximize" for o in objectives]):
        feas[i]["on_front"] = True
    for t in trials:
        if t["state"] == "complete" and (t["on_front"] or t["baseline"]):
            t["test_accuracy"] = max(0.0, t["val_accuracy"] - rng.uniform(0, 0.02))
    out = _records(targets, seed, max_size_mb, fidelity, base_acc, objectives, trials)
    if importance:
        out["importance"] = {
            name: {
                "prune.ratio": 0.6,
                "quantize.mode": 0.3,
                "finetune.lr": 0.07,
                "finetune.epochs": 0.03,
            }
            for name in names
        }
    return out


def _trial(
    rng: random.Random,
    n: int,
    targets: tuple[str, ...],
    base_acc: float,
    max_size_mb: float | None,
) -> dict[str, Any]:
    """Trial ``n``: failed (about 10 %), stopped early (5 %) or complete."""
    roll = rng.random()
    if n == 0:
        ratio, mode, baseline = 0.0, "fp32", "unchanged"
    elif n == 1:
        ratio, mode, baseline = 0.0, "int8_static", "int8"
    else:
        ratio = round(rng.uniform(0, 0.7), 2)
        mode = rng.choice(["fp32", "fp16", "int8_static", "int8_dynamic"])
        baseline = None
    params: dict[str, Any] = {"prune.ratio": ratio, "quantize.mode": mode}
    candidate: dict[str, Any] = {
        "prune": {"ratio": ratio, "importance": "l2"},
        "quantize": {"mode": mode},
    }
    describe = mode
    if ratio > 0:
        params["finetune.epochs"] = rng.randint(1, 8)
        params["finetune.lr"] = 10 ** rng.uniform(-4, -1.5)
        candidate["finetune"] = {"epochs": params["finetune.epochs"], "lr": params["finetune.lr"]}
        describe = f"prune {ratio:.2f} l2 + finetune {params['finetune.epochs']}ep + {mode}"
    rec: dict[str, Any] = {
        "number": n,
        "state": "complete",
        "describe": describe,
        "baseline": baseline,
        "candidate": candidate,
        "params": params,
        "start": None,
        "complete": None,
        "timing": {
            "build_s": round(rng.uniform(1, 9), 3),
            "trial_s": round(rng.uniform(2, 12), 3),
        },
        "cache_hit": False,
    }
    if n > 1 and roll < 0.1:
        rec["state"] = "fail"
        rec["fail_stage"] = rng.choice(["prune", "quantize", "export"])
        rec["fail_reason"] = rng.choice(
            ["timed out after 2s (--trial-timeout)", "unsupported op 'Resize' for int8"]
        )
    elif n > 1 and roll < 0.15:
        rec["state"] = "stopped"
        rec["stopped_reason"] = (
            "validation accuracy 0.21 after the first fine-tune epoch is far below the budget"
        )
    else:
        rec.update(_complete(rng, n, ratio, mode, targets, base_acc, max_size_mb))
    return rec


def _complete(
    rng: random.Random,
    n: int,
    ratio: float,
    mode: str,
    targets: tuple[str, ...],
    base_acc: float,
    max_size_mb: float | None,
) -> dict[str, Any]:
    """The numbers of a complete trial (``on_front`` is set once every trial exists)."""
    q = {"fp32": 1.0, "fp16": 0.5, "int8_static": 0.27, "int8_dynamic": 0.3}[mode]
    size = 0.045 * (1 - ratio) ** 2 * q + 0.002
    acc_drop = ratio**2 * 0.4 * rng.uniform(0.3, 1.0) + (0.01 if "int8" in mode else 0)
    acc = max(0.0, base_acc - acc_drop)
    meas = {t: _measurements(rng, t, ratio, mode, size) for t in targets}
    values = {"accuracy": acc, "size_mb": size}
    for t in targets:
        values[f"latency_ms[{t}]"] = meas[t]["latency_ms"]["value"]
    constraints = {} if max_size_mb is None else {"size_mb": size - max_size_mb}
    return {
        "values": values,
        "val_accuracy": acc,
        "test_accuracy": None,
        "measurements": meas,
        "raw_latency": {},
        "size_mb": size,
        "constraints": constraints,
        "feasible": all(v <= 0 for v in constraints.values()),
        "on_front": False,
        "onnx": f"trials/{n}/model.onnx",
        "info": {},
    }


def _measurements(
    rng: random.Random, target: str, ratio: float, mode: str, size: float
) -> dict[str, Any]:
    """One target's numbers: host-cpu measured, any other target estimated (with energy)."""
    measured = target == "host-cpu"
    speed = {
        "fp32": 1.0,
        "fp16": 1.1 if measured else 0.6,
        "int8_static": 0.6,
        "int8_dynamic": 0.8,
    }[mode]
    lat = (0.05 if measured else 0.4) * ((1 - ratio) ** 1.6 * speed + 0.1)
    lat *= rng.uniform(0.95, 1.05)
    prov = "measured" if measured else "estimated"
    out: dict[str, Any] = {
        "latency_ms": {"value": lat, "provenance": prov, "spread": lat * 0.03},
        "peak_memory_mb": {"value": size * 1.6 + 0.1, "provenance": prov},
        "size_mb": {"value": size, "provenance": "measured"},
    }
    if not measured:
        e = lat * 1.2
        out["energy_mj"] = {
            "value": e,
            "provenance": "estimated",
            "low": e * 0.5,
            "high": e * 1.5,
            "spread": e * 0.5,
        }
    return out


def _records(
    targets: tuple[str, ...],
    seed: int,
    max_size_mb: float | None,
    fidelity: bool,
    base_acc: float,
    objectives: list[dict[str, Any]],
    trials: list[dict[str, Any]],
) -> dict[str, Any]:
    """The records around ``objectives`` and ``trials``, keys in ``load_run``'s order."""
    return {
        "schema_version": 1,
        "run_dir": "/runs/demo",
        "config": {
            "model": {
                "path": "/models/demo_cnn.pt",
                "arch": None,
                "arch_kwargs": {},
                "input_shape": None,
                "trust_pickle": False,
            },
            "targets": [t.split("-")[0] if t == "host-cpu" else t for t in targets],
            "data": None if fidelity else "/data/demo.npz",
            "objectives": ["accuracy", "latency", "size"],
            "budgets": {
                "max_latency_ms": None,
                "max_size_mb": max_size_mb,
                "max_memory_mb": None,
                "max_energy_mj": None,
                "max_accuracy_drop": None,
                "min_accuracy": None,
            },
            "sampler": "tpe",
            "seed": seed,
        },
        "baseline": {
            "accuracy_kind": "fidelity" if fidelity else "accuracy",
            "val_accuracy": base_acc,
            "test_accuracy": base_acc - 0.01,
            "host_latency_ms": {t: 0.055 for t in targets if t == "host-cpu"},
            "host": "demo host",
            "input_shape": [1, 16, 16],
        },
        "targets": list(targets),
        "objectives": objectives,
        "trials": trials,
        "test_split": "synthetic" if fidelity else "test",
        "prune_unsupported": None,
    }
