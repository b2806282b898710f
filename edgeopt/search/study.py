"""Create or resume a study, run trials (ask/tell), and finalize the front.

Each trial: draw a candidate from the composed space, build it in a bounded child process
(``edgeopt.search.child``), then measure it on the host (interleaved against the baseline, in one
process at a time) or estimate it on each target profile, and tell Optuna its objective values
and budget constraints (``trial.set_constraint``). Failures are FAIL trials with their stage and
reason; hopeless ones are PRUNED; the study goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.config import Objective, RunConfig, read_run_config, storage_url
from edgeopt.errors import ConfigError, EdgeoptError
from edgeopt.metrics import Measurement, Metric, MetricValue, Provenance
from edgeopt.search.space import (
    UNCHANGED,
    baseline_candidate,
    baseline_params,
    grid_space,
    suggest_candidate,
)
from edgeopt.stages.quantize import QuantizeStage

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HOST_LATENCY_BUDGET_S = 2.5
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class TrialEvent:
    """What the progress display is told after each trial."""

    number: int
    state: str
    summary: str
    done: int
    total: int | None
    elapsed_s: float
    best: dict[str, float]
    front_size: int


ProgressFn = Callable[[TrialEvent], None]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Worker:
    """One process's view of a run: config, profiles, study, baseline numbers."""

    run_dir: Path
    config: RunConfig
    profiles: list[Any]
    merged: Any
    objectives: list[Objective]
    study: optuna.Study
    baseline: dict[str, Any]
    data: Any
    quantize: Any = None
    stop: bool = False

    # ---------------------------------------------------------------- setup
    @classmethod
    def open(cls, run_dir: Path, worker_index: int = 0) -> Worker:
        """Load the run written by ``prepare`` and connect to its study."""
        from edgeopt.data import load_npz
        from edgeopt.profiles import load_profile
        from edgeopt.targets import merge_profiles

        config = read_run_config(run_dir)
        profiles = [load_profile(t) for t in config.targets]
        merged = merge_profiles(profiles)
        study = _load_or_create_study(config, run_dir, merged, worker_index)
        baseline = json.loads((run_dir / "baseline" / "baseline.json").read_text())
        data = load_npz(config.data) if config.data else None
        objectives = config.objective_list([p.name for p in profiles])
        quantize = QuantizeStage.for_model(run_dir / "baseline" / "model.onnx")
        return cls(run_dir, config, profiles, merged, objectives, study, baseline, data, quantize)

    # ---------------------------------------------------------------- loop
    def run(
        self,
        n_trials: int | None,
        timeout_s: float | None,
        progress: ProgressFn | None = None,
    ) -> int:
        """Run trials until ``n_trials`` have finished in the study (all workers together),
        ``timeout_s`` passed, or ``stop`` was set (Ctrl-C). Returns trials run here."""
        start = time.monotonic()
        ran = 0
        limit = n_trials
        if self.config.sampler == "grid":
            size = 1
            grid = grid_space(self.merged, allow_torch=self._allow_torch(), quantize=self.quantize)
            for values in grid.values():
                size *= len(values)
            limit = size if limit is None else min(limit, size)
        while not self.stop:
            if timeout_s is not None and time.monotonic() - start >= timeout_s:
                break
            trial = self._ask(limit)
            if trial is None:
                break
            try:
                self._run_trial(trial)
            except Exception as exc:  # a bug in one trial's bookkeeping must not end the study
                self._internal_failure(trial, exc)
            ran += 1
            if progress:
                progress(self._event(trial.number, limit, time.monotonic() - start))
        return ran

    def _ask(self, limit: int | None) -> optuna.Trial | None:
        # the lock makes "count, then ask" atomic for local workers: no trial beyond the limit
        with _file_lock(self.run_dir / ".ask.lock"):
            self._reap_dead_workers()
            if limit is not None:
                states = (*FINISHED, TrialState.RUNNING)
                if len(self.study.get_trials(deepcopy=False, states=states)) >= limit:
                    return None
            trial = self.study.ask()
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            return trial

    def _reap_dead_workers(self) -> None:
        """Fail RUNNING trials whose worker process on this machine no longer exists (killed
        or crashed), so a resumed run neither waits for nor counts them as running."""
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            where, _, pid = str(t.user_attrs.get("worker", "")).partition(":")
            if not where:  # died between ask and recording its worker: judge by age
                age = time.time() - t.datetime_start.timestamp() if t.datetime_start else 0
                if age < 60:
                    continue
            elif where != host or not pid.isdigit() or _alive(int(pid)):
                continue
            storage = self.study._storage
            storage.set_trial_user_attr(t._trial_id, "fail_stage", "worker")
            storage.set_trial_user_attr(
                t._trial_id, "fail_reason", "the worker process died during this trial"
            )
            self.study.tell(t.number, state=TrialState.FAIL)

    def _allow_torch(self) -> bool:
        return (
            not self.baseline.get("onnx_input") and "prune_unsupported" not in self.study.user_attrs
        )

    # ---------------------------------------------------------------- one trial
    def _run_trial(self, trial: optuna.Trial) -> None:
        from edgeopt.search.child import run_child

        t0 = time.monotonic()
        try:
            candidate = suggest_candidate(
                trial, self.merged, allow_torch=self._allow_torch(), quantize=self.quantize
            )
            if trial.user_attrs.get("baseline") == UNCHANGED:
                candidate = baseline_candidate(self.merged)
        except EdgeoptError as exc:
            self._fail(trial, "suggest", exc.message)
            return
        key = candidate.key(self.baseline["salt"])
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("candidate_key", key)
        trial.set_user_attr("describe", candidate.describe())
        blocked = self._blocked_by_earlier_hang(candidate)
        if blocked:
            self._fail(trial, "prune", blocked)
            return
        request = {
            "trial_dir": str(self.run_dir / "trials" / str(trial.number)),
            "model": self.config.model.to_dict(),
            "data": self.config.data,
            "targets": list(self.config.targets),
            "seed": self.config.seed,
            "cache_dir": str(self.run_dir / "cache"),
            "salt": self.baseline["salt"],
            "candidate": candidate.to_dict(),
            "hopeless_below": self.baseline.get("hopeless_below"),
            "threads": self.config.threads,
            "reference_onnx": str(self.run_dir / "baseline" / "model.onnx"),
        }
        result = run_child(
            request,
            timeout_s=self.config.trial_timeout_s,
            memory_gb=self.config.trial_memory_gb,
        )
        trial.set_user_attr("build_s", round(result.get("build_seconds", 0.0), 3))
        if result["status"] == "pruned":
            trial.set_user_attr("pruned_reason", result["reason"])
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        if result["status"] != "ok":
            self._fail(
                trial,
                result["stage"],
                result["reason"],
                hung="timed out" in result["reason"] or "memory cap" in result["reason"],
            )
            return
        try:
            t_measure = time.monotonic()
            onnx_path = Path(result["onnx"])
            measurements = self._measure(onnx_path)
            trial.set_user_attr("measure_s", round(time.monotonic() - t_measure, 3))
        except EdgeoptError as exc:
            self._fail(trial, "measure", exc.message)
            return
        accuracy = float(result["accuracy"]["val"])
        trial.set_user_attr("onnx", str(onnx_path.relative_to(self.run_dir)))
        trial.set_user_attr("val_accuracy", accuracy)
        trial.set_user_attr("measurements", {k: m.to_dict() for k, m in measurements.items()})
        trial.set_user_attr("info", result.get("info", {}))
        trial.set_user_attr("cache_hit", bool(result.get("cache_hit")))
        for name, value in self._constraints(accuracy, measurements).items():
            trial.set_constraint(name, value)
        values = [self._value(o, accuracy, measurements) for o in self.objectives]
        trial.set_user_attr("trial_s", round(time.monotonic() - t0, 3))
        self.study.tell(trial, values)

    def _internal_failure(self, trial: optuna.Trial, exc: Exception) -> None:
        """Record an unexpected error as a FAIL trial, traceback in the trial's folder."""
        trial_dir = self.run_dir / "trials" / str(trial.number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "error.txt").write_text(traceback.format_exc())
        log.error("trial %d: unexpected %s: %s", trial.number, type(exc).__name__, exc)
        frozen = self.study.get_trials(deepcopy=False)[trial.number]
        if frozen.state == TrialState.RUNNING:
            self._fail(
                trial,
                "internal",
                f"unexpected {type(exc).__name__}: {exc} (traceback in {trial_dir / 'error.txt'})",
            )

    def _fail(self, trial: optuna.Trial, stage: str, reason: str, *, hung: bool = False) -> None:
        trial.set_user_attr("fail_stage", stage)
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("fail_hung", hung)
        if stage == "prune" and not hung and not self._any_pruned_success():
            # Torch-Pruning cannot handle this architecture: keep to the ONNX stages
            self.study.set_user_attr("prune_unsupported", reason)
        self.study.tell(trial, state=TrialState.FAIL)

    def _any_pruned_success(self) -> bool:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("candidate", {}).get("prune", {}).get("ratio", 0) > 0:
                return True
        return False

    def _blocked_by_earlier_hang(self, candidate: Any) -> str | None:
        """A prune setting that hung or ran out of memory before is not tried again."""
        prune = candidate.to_dict().get("prune", {})
        if not prune.get("ratio"):
            return None
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if (
                t.user_attrs.get("fail_hung")
                and t.user_attrs.get("candidate", {}).get("prune") == prune
            ):
                return f"skipped: the same prune setting failed in trial {t.number} " + (
                    f"({t.user_attrs.get('fail_reason')})"
                )
        return None

    # ---------------------------------------------------------------- numbers
    def _measure(self, onnx_path: Path) -> dict[str, Measurement]:
        """Per target: host numbers measured (latency interleaved vs the baseline), the rest
        estimated from the profile."""
        from edgeopt.measure.estimate import estimate
        from edgeopt.measure.runtime import measure_latency, measure_memory, size_mb

        out: dict[str, Measurement] = {}
        size = MetricValue(size_mb(onnx_path), Provenance.MEASURED)
        for profile in self.profiles:
            est = estimate(onnx_path, profile).to_measurement()
            values = dict(est.values)
            values[Metric.SIZE_MB] = size
            if profile.measured:
                sample = self.data.x_val[:1] if self.data is not None else None
                shape = tuple(self.baseline["input_shape"])
                with _file_lock(self.run_dir / ".measure.lock"):
                    _, cand = measure_latency(
                        [self.run_dir / "baseline" / "model.onnx", onnx_path],
                        threads=profile.threads,
                        input_shape=shape,
                        sample=sample,
                        time_budget_s=HOST_LATENCY_BUDGET_S,
                    )
                    mem = measure_memory(
                        onnx_path, threads=profile.threads, input_shape=shape, sample=sample
                    )
                ref = float(self.baseline["host_latency_ms"][profile.name])
                # the ratio is what interleaving makes trustworthy; scale it by the baseline's
                # reference latency so trials measured minutes apart stay comparable
                latency = cand.ratio_to_first * ref
                values[Metric.LATENCY_MS] = MetricValue(
                    latency, Provenance.MEASURED, spread=latency * cand.ratio_cv
                )
                values[Metric.PEAK_MEMORY_MB] = MetricValue(
                    mem.model_memory_mb, Provenance.MEASURED
                )
                out[profile.name] = Measurement(profile.name, values)
                out[profile.name + ":raw"] = Measurement(
                    profile.name,
                    {
                        Metric.LATENCY_MS: MetricValue(
                            cand.p50_ms, Provenance.MEASURED, spread=cand.p90_ms - cand.p50_ms
                        )
                    },
                )
            else:
                out[profile.name] = Measurement(profile.name, values)
        return out

    def _value(self, o: Objective, accuracy: float, ms: dict[str, Measurement]) -> float:
        if o.metric is Metric.ACCURACY:
            return accuracy
        target = o.target or self.profiles[0].name
        return ms[target][o.metric]

    def _constraints(self, accuracy: float, ms: dict[str, Measurement]) -> dict[str, float]:
        b = self.config.budgets
        out: dict[str, float] = {}
        for p in self.profiles:
            m = ms[p.name]
            if b.max_latency_ms is not None:
                out[f"latency_ms[{p.name}]"] = m[Metric.LATENCY_MS] - b.max_latency_ms
            if b.max_memory_mb is not None:
                out[f"peak_memory_mb[{p.name}]"] = m[Metric.PEAK_MEMORY_MB] - b.max_memory_mb
            if b.max_energy_mj is not None and Metric.ENERGY_MJ in m:
                out[f"energy_mj[{p.name}]"] = m[Metric.ENERGY_MJ] - b.max_energy_mj
        first = ms[self.profiles[0].name]
        if b.max_size_mb is not None:
            out["size_mb"] = first[Metric.SIZE_MB] - b.max_size_mb
        if b.max_accuracy_drop is not None:
            out["accuracy_drop"] = (
                float(self.baseline["val_accuracy"]) - b.max_accuracy_drop - accuracy
            )
        if b.min_accuracy is not None:
            out["min_accuracy"] = b.min_accuracy - accuracy
        return out

    def _event(self, number: int, total: int | None, elapsed: float) -> TrialEvent:
        t = self.study.get_trials(deepcopy=False)[number]
        trials = self.study.get_trials(deepcopy=False, states=FINISHED)
        done_complete = [x for x in trials if x.state == TrialState.COMPLETE]
        best: dict[str, float] = {}
        for i, o in enumerate(self.objectives):
            vals = [x.values[i] for x in done_complete if _feasible(x)]
            if vals:
                best[o.name] = max(vals) if o.direction.value == "maximize" else min(vals)
        if t.state == TrialState.COMPLETE:
            summary = ", ".join(
                f"{o.name} {v:.4g}" for o, v in zip(self.objectives, t.values, strict=True)
            )
            if not _feasible(t):
                summary += " (over budget)"
        elif t.state == TrialState.PRUNED:
            summary = "stopped early: " + str(t.user_attrs.get("pruned_reason", ""))
        else:
            summary = (
                f"failed in {t.user_attrs.get('fail_stage')}: {t.user_attrs.get('fail_reason')}"
            )
        return TrialEvent(
            number=number,
            state=t.state.name,
            summary=f"{t.user_attrs.get('describe', '')}: {summary}",
            done=len(trials),
            total=total,
            elapsed_s=elapsed,
            best=best,
            front_size=len(self.study.best_trials) if done_complete else 0,
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _feasible(t: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in (t.constraints or {}).values())


def make_sampler(
    config: RunConfig, merged: Any, worker_index: int, allow_torch: bool, baseline_onnx: Path
) -> Any:
    """The configured sampler, seeded (each worker offset so workers don't repeat each other)."""
    seed = config.seed + worker_index
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=3
        )
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "grid":
        quantize = QuantizeStage.for_model(baseline_onnx)
        grid = grid_space(merged, allow_torch=allow_torch, quantize=quantize)
        return optuna.samplers.GridSampler(grid, seed=seed)
    if config.sampler == "gp":
        try:
            import scipy  # noqa: F401
        except ImportError as exc:
            raise ConfigError("--sampler gp needs scipy", hint="pip install scipy") from exc
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"unknown sampler {config.sampler!r}")


def _load_or_create_study(
    config: RunConfig, run_dir: Path, merged: Any, worker_index: int
) -> optuna.Study:
    objectives = config.objective_list([t for t in _target_names(config)])
    baseline = json.loads((run_dir / "baseline" / "baseline.json").read_text())
    allow_torch = not baseline.get("onnx_input")
    sampler = make_sampler(
        config, merged, worker_index, allow_torch, run_dir / "baseline" / "model.onnx"
    )
    url = storage_url(config, run_dir)
    with _file_lock(run_dir / ".ask.lock"):
        try:
            study = optuna.create_study(
                storage=url,
                study_name=config.study_name,
                directions=[o.direction.value for o in objectives],
                sampler=sampler,
                load_if_exists=True,
            )
        except ValueError as exc:  # existing study with other directions
            raise ConfigError(
                f"study {config.study_name!r} in {url} has other objectives: {exc}",
                hint="use another --study name",
            ) from exc
        except Exception as exc:
            raise ConfigError(f"cannot open storage {url}: {exc}") from exc
        if not study.user_attrs.get("objectives"):
            study.set_user_attr("objectives", [o.name for o in objectives])
            study.set_user_attr("directions", [o.direction.value for o in objectives])
            for tag, params in baseline_params(merged):
                study.enqueue_trial(params, user_attrs={"baseline": tag}, skip_if_exists=True)
    return study


def _target_names(config: RunConfig) -> list[str]:
    from edgeopt.profiles import load_profile

    return [load_profile(t).name for t in config.targets]


# -------------------------------------------------------------------- setup of a run
def prepare(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Validate everything before any search work, then write the run directory and the
    baseline: the original model as ONNX, its validation accuracy and, for the host, its
    reference latency. Returns the baseline record. Idempotent: a resumed run reuses it."""
    from edgeopt.config import write_run_config
    from edgeopt.data import load_npz
    from edgeopt.loading import check_input_shape
    from edgeopt.profiles import load_profile
    from edgeopt.targets import merge_profiles

    profiles = [load_profile(t) for t in config.targets]
    merge_profiles(profiles)  # fails fast when the targets share no model format
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError(f"--target names a profile twice: {', '.join(names)}")
    loaded = config.model.load()
    data = load_npz(config.data) if config.data else None
    check_input_shape(loaded, data.input_shape if data else loaded.input_shape)
    write_run_config(run_dir, config)
    base_dir = run_dir / "baseline"
    record_path = base_dir / "baseline.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
    else:
        record = _make_baseline(config, loaded, data, profiles, base_dir)
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(record_path)
    _load_or_create_study(config, run_dir, merge_profiles(profiles), 0)
    return record


def _make_baseline(
    config: RunConfig, loaded: Any, data: Any, profiles: list[Any], base_dir: Path
) -> dict[str, Any]:
    import hashlib

    from edgeopt.export import loaded_to_onnx
    from edgeopt.measure.accuracy import onnx_accuracy
    from edgeopt.measure.runtime import host_description, measure_latency
    from edgeopt.search.child import SYNTHETIC_N

    base_dir.mkdir(parents=True, exist_ok=True)
    sample = data.x_val[:8] if data is not None else None
    src = loaded_to_onnx(loaded, base_dir, sample)
    dst = base_dir / "model.onnx"
    if src != dst:
        dst.write_bytes(Path(src).read_bytes())
        if Path(src).parent == base_dir:
            Path(src).unlink()
    h = hashlib.sha256(Path(config.model.path).read_bytes())
    if config.data:
        h.update(Path(config.data).read_bytes())
    h.update(str(config.seed).encode())
    record: dict[str, Any] = {
        "salt": h.hexdigest()[:16],
        "input_shape": list(loaded.input_shape),
        "onnx_input": loaded.is_onnx,
        "host": host_description(),
        "accuracy_kind": "accuracy" if data is not None else "fidelity",
        "host_latency_ms": {},
    }
    if data is not None:
        record["val_accuracy"] = onnx_accuracy(dst, data.x_val, data.y_val)
        x, y = data.split("test")
        record["test_accuracy"] = onnx_accuracy(dst, x, y)
    else:
        record["val_accuracy"] = record["test_accuracy"] = 1.0  # fidelity of the model to itself
        record["synthetic_inputs"] = SYNTHETIC_N
    b = config.budgets
    required = None
    if b.min_accuracy is not None:
        required = b.min_accuracy
    if b.max_accuracy_drop is not None:
        drop_bar = record["val_accuracy"] - b.max_accuracy_drop
        required = drop_bar if required is None else max(required, drop_bar)
    if required is not None:
        record["hopeless_below"] = 0.75 * required
    for p in profiles:
        if p.measured:
            (stats,) = measure_latency(
                [dst],
                threads=p.threads,
                input_shape=loaded.input_shape,
                sample=sample,
                time_budget_s=6.0,
            )
            record["host_latency_ms"][p.name] = stats.p50_ms
    return record


# -------------------------------------------------------------------- finalize
def finalize(run_dir: Path) -> dict[str, Any]:
    """Test-split accuracy for the front and the baselines (never seen by the search).

    Stored in ``run_dir/final.json`` as ``{trial number: test accuracy}``.
    """
    from edgeopt.data import load_npz
    from edgeopt.measure.accuracy import onnx_accuracy

    config = read_run_config(run_dir)
    study = optuna.load_study(study_name=config.study_name, storage=storage_url(config, run_dir))
    base = json.loads((run_dir / "baseline" / "baseline.json").read_text())
    data = load_npz(config.data) if config.data else None
    path = run_dir / "final.json"
    final = json.loads(path.read_text()) if path.exists() else {"test_accuracy": {}}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    wanted = {t.number for t in study.best_trials} if complete else set()
    wanted |= {t.number for t in complete if t.user_attrs.get("baseline")}
    for t in complete:
        if t.number not in wanted or str(t.number) in final["test_accuracy"]:
            continue
        onnx_path = run_dir / t.user_attrs["onnx"]
        if data is not None:
            x, y = data.split("test")
            final["test_accuracy"][str(t.number)] = onnx_accuracy(onnx_path, x, y)
        else:
            from edgeopt.data import synthetic_inputs
            from edgeopt.measure.accuracy import onnx_fidelity
            from edgeopt.search.child import SYNTHETIC_N, SYNTHETIC_TEST_SEED

            x = synthetic_inputs(tuple(base["input_shape"]), SYNTHETIC_N, SYNTHETIC_TEST_SEED)
            final["test_accuracy"][str(t.number)] = onnx_fidelity(
                onnx_path, run_dir / "baseline" / "model.onnx", x
            )
    final["test_split"] = (
        "test"
        if data is not None and data.has_test
        else ("val" if data is not None else "synthetic")
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(final, indent=2))
    tmp.replace(path)
    return final


# -------------------------------------------------------------------- entry points
def optimize(
    run_dir: Path,
    *,
    n_trials: int | None,
    timeout_s: float | None,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> None:
    """Run the search on a prepared run directory with ``workers`` processes.

    With one worker the trials run in this process and ``progress`` sees each one; with
    more, worker processes join the same storage and this process reports their progress.
    A first Ctrl-C stops after the running trial(s); everything finished is kept.
    """
    if workers <= 1:
        worker = Worker.open(run_dir)

        def _stop(signum: int, frame: Any) -> None:
            if worker.stop:
                raise KeyboardInterrupt
            worker.stop = True

        old = signal.signal(signal.SIGINT, _stop)
        try:
            worker.run(n_trials, timeout_s, progress)
        finally:
            signal.signal(signal.SIGINT, old)
        return
    _run_pool(run_dir, n_trials, timeout_s, workers, progress)


def _run_pool(
    run_dir: Path,
    n_trials: int | None,
    timeout_s: float | None,
    workers: int,
    progress: ProgressFn | None,
) -> None:
    args = [sys.executable, "-m", "edgeopt.search.worker", str(run_dir)]
    if n_trials is not None:
        args += ["--trials", str(n_trials)]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    procs = [
        subprocess.Popen([*args, "--index", str(i)], start_new_session=True) for i in range(workers)
    ]
    watcher = Worker.open(run_dir)
    seen = {t.number for t in watcher.study.get_trials(deepcopy=False, states=FINISHED)}
    start = time.monotonic()
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(1.0)
            seen = _report_new(watcher, seen, n_trials, start, progress)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGINT)  # each finishes its running trial
        for p in procs:
            p.wait()
    _report_new(watcher, seen, n_trials, start, progress)
    bad = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGINT)]
    if bad:
        raise EdgeoptError(f"{len(bad)} worker process(es) failed (exit codes {bad})")


def _report_new(
    watcher: Worker, seen: set[int], total: int | None, start: float, progress: ProgressFn | None
) -> set[int]:
    finished = {t.number for t in watcher.study.get_trials(deepcopy=False, states=FINISHED)}
    if progress:
        for n in sorted(finished - seen):
            progress(watcher._event(n, total, time.monotonic() - start))
    return seen | finished
