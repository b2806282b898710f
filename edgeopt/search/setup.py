"""Set a run up before the search (validate, export and measure the original) and finish it
afterwards (test-split numbers for the front, never seen by the search)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.rundir import Baseline, RunDir
from edgeopt.search.protocol import SYNTHETIC_N, scoring_inputs

BASELINE_LATENCY_BUDGET_S = 6.0


def prepare(config: RunConfig, run_dir: Path) -> Baseline:
    """Validate everything before any search work, then write the run directory, the
    baseline (the original model as ONNX, its validation accuracy and, for the host, its
    reference latency) and the study. Idempotent: a resumed run reuses them; two processes
    setting up one directory at once take turns."""
    from edgeopt.data import load_npz
    from edgeopt.loading import check_model_and_data
    from edgeopt.profiles import load_profile, merge_profiles
    from edgeopt.search.artifacts import open_store
    from edgeopt.search.context import SearchContext
    from edgeopt.search.study import check_joinable, open_study

    profiles = [load_profile(t) for t in config.targets]
    merge_profiles(profiles)  # fails fast when the targets share no model format
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError(f"--target names a profile twice: {', '.join(names)}")
    data = load_npz(config.data) if config.data else None
    loaded = config.model.load(data.input_shape if data is not None else None)
    # an input shape taken from the data is recorded: workers and a resume load alike
    config = replace(config, model=config.model.with_data_shape(loaded))
    check_model_and_data(loaded, data)  # sample shape, labels < the model's outputs
    if config.storage:  # a shared study: reachable, and started with these settings
        check_joinable(config, config.storage)
    if config.artifacts:
        open_store(config.artifacts)  # a folder every machine writes to: fail fast if not
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    with run.lock("setup"):
        run.write_config(config)
        if run.baseline_file.exists():
            baseline = run.read_baseline()
        else:
            baseline = _make_baseline(config, loaded, data, profiles, run)
            run.write_baseline(baseline)
    open_study(SearchContext.open(run.path))
    return baseline


def _make_baseline(
    config: RunConfig, loaded: Any, data: Any, profiles: list[Any], run: RunDir
) -> Baseline:
    from edgeopt.export import loaded_to_onnx
    from edgeopt.measure.accuracy import onnx_accuracy
    from edgeopt.measure.runtime import host_description
    from edgeopt.measure.service import reference_latency_ms

    run.baseline_dir.mkdir(parents=True, exist_ok=True)
    sample = data.x_val[:8] if data is not None else None
    src = Path(loaded_to_onnx(loaded, run.baseline_dir, sample))
    dst = run.baseline_onnx
    if src != dst:
        dst.write_bytes(src.read_bytes())
        if src.parent == run.baseline_dir:
            src.unlink()
    if data is not None:
        val = onnx_accuracy(dst, data.x_val, data.y_val)
        test = onnx_accuracy(dst, *data.split("test"))
    else:
        val = test = 1.0  # fidelity of the model to itself
    latency: dict[str, float] = {}
    for p in profiles:
        if p.measured:  # on the profile's runner: this host or its [runner] device
            latency[p.name] = reference_latency_ms(
                dst,
                p,
                input_shape=loaded.input_shape,
                sample=sample,
                time_budget_s=BASELINE_LATENCY_BUDGET_S,
            )
    return Baseline(
        salt=_salt(config),
        input_shape=tuple(loaded.input_shape),
        onnx_input=bool(loaded.is_onnx),
        host=host_description(),
        accuracy_kind="accuracy" if data is not None else "fidelity",
        val_accuracy=val,
        test_accuracy=test,
        host_latency_ms=latency,
        hopeless_below=_hopeless_below(config, val),
        synthetic_inputs=None if data is not None else SYNTHETIC_N,
    )


def _salt(config: RunConfig) -> str:
    """Identifies model + data + seed: part of every cache key."""
    h = hashlib.sha256(Path(config.model.path).read_bytes())
    if config.data:
        h.update(Path(config.data).read_bytes())
    h.update(str(config.seed).encode())
    return h.hexdigest()[:16]


def _hopeless_below(config: RunConfig, val_accuracy: float) -> float | None:
    """A fine-tune whose first epoch ends under 3/4 of the accuracy budget is abandoned."""
    b = config.budgets
    bars = []
    if b.min_accuracy is not None:
        bars.append(b.min_accuracy)
    if b.max_accuracy_drop is not None:
        bars.append(val_accuracy - b.max_accuracy_drop)
    return 0.75 * max(bars) if bars else None


def finalize(run_dir: Path) -> dict[str, Any]:
    """Test-split accuracy for the front and the baselines (never seen by the search).

    Stored in ``final.json`` as ``{"test_accuracy": {trial number: value}, "test_split"}``
    and in the study (``shared.record_test_numbers``), so that every machine's report has
    them. A trial another machine built is read from the artifact store; one already scored
    by any machine is not scored again.
    """
    from edgeopt.data import load_npz
    from edgeopt.measure.accuracy import onnx_score
    from edgeopt.search.artifacts import trial_artifacts
    from edgeopt.search.shared import record_test_numbers
    from edgeopt.search.source import RunSource, scratch_dir

    run = RunDir(run_dir)
    opened = RunSource.local(run.path).open()
    study, config = opened.study, opened.config
    local_baseline = run.read_baseline()
    data = load_npz(config.data) if config.data else None
    final = dict(opened.final)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    wanted = {t.number for t in study.best_trials} if complete else set()
    wanted |= {t.number for t in complete if t.user_attrs.get("baseline")}
    with scratch_dir() as tmp:
        for t in complete:
            if t.number not in wanted or str(t.number) in final["test_accuracy"]:
                continue
            record = {
                "number": t.number,
                "onnx": t.user_attrs.get("onnx"),
                "onnx_sha256": t.user_attrs.get("onnx_sha256"),
                "artifacts": trial_artifacts(t.system_attrs),
                "machine": t.user_attrs.get("machine"),
            }
            x, y = scoring_inputs(data, "test", local_baseline.input_shape)
            final["test_accuracy"][str(t.number)] = onnx_score(
                opened.trial_onnx(record, Path(tmp)), x, y, reference=run.baseline_onnx
            )
    if data is None:
        final["test_split"] = "synthetic"
    else:
        final["test_split"] = "test" if data.has_test else "val"
    run.write_final(final)
    record_test_numbers(study, final)
    return final
