"""One trial: draw a candidate, build it in a bounded child, measure it, tell the study.

Failures are data: a candidate that fails to build is a FAIL trial with its stage and
reason, a hopeless one is PRUNED, and an unexpected error in this bookkeeping is a FAIL trial
with its traceback saved. The study goes on in every case.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from edgeopt.data.cache import GB
from edgeopt.data.metadata import carry
from edgeopt.errors import EdgeoptError, disk_full, environment_error
from edgeopt.measure.runners import DeviceError
from edgeopt.measure.runtime import host_description
from edgeopt.measure.service import HostReference, measure_on_targets
from edgeopt.metrics import Measurement, Metric
from edgeopt.search.strategy.halving import (
    PROMOTED_ATTR,
    fidelity_stage,
    history_key,
    peer_value,
    rung_bars,
)
from edgeopt.search.strategy.seeds import SEED_ATTR, SIBLING_ATTR, sibling_params
from edgeopt.search.strategy.space import identity_candidate, suggest_candidate
from edgeopt.search.strategy.user_space import RECIPE_ATTR, inside
from edgeopt.search.study.artifacts import (
    ARTIFACTS_ATTR_PREFIX,
    open_store,
    sha256_of,
    upload_trial_files,
)
from edgeopt.search.study.context import SearchContext
from edgeopt.search.study.shared import reference_latency_ms
from edgeopt.search.trial.builder import TrialChild
from edgeopt.search.trial.policy import (
    HUNG_ATTR,
    blocked_by_earlier_hang,
    culprit,
    disable_after_failure,
    disabled_stages,
    hung,
    rest_after_streak,
    rest_note,
    rested_stages,
)
from edgeopt.search.trial.protocol import STOPPED_REASON, FailureKind, Status, TrialRequest
from edgeopt.search.trial.runtimes import ATTR as TARGET_FILES
from edgeopt.search.trial.runtimes import INFO_KEY as RUNTIME_FILES
from edgeopt.search.trial.runtimes import original_files, study_record, target_paths
from edgeopt.stages.finetune_probe import recorded_round_samples
from edgeopt.training.device import train_device

log = logging.getLogger(__name__)

HOST_LATENCY_BUDGET_S = 2.5
DISABLED_BY_ATTR = "disabled_stage"
"""Trial attribute: the stage this trial's failure switched off for the model."""
RESTED_BY_ATTR = "rested_stage"
"""Trial attribute: the rest this trial's failure (the last of a streak) began,
``{"stage", **RESTED_ATTR's entry}``."""
SAME_AS_ATTR = "same_as_baseline"
"""Trial attribute: the baseline trial whose results this drawn trial took (not rebuilt)."""
REUSED_ATTRS = ("onnx", "onnx_sha256", "val_accuracy", "measurements", "info")


class TrialRunner:
    """Runs trials of one study for one worker process."""

    def __init__(self, ctx: SearchContext, study: optuna.Study, device: str | None = None) -> None:
        self.ctx = ctx
        self.study = study
        # latency = measured ratio x the study's reference (the first machine's baseline),
        # so trials measured on different machines compare
        self.reference_ms = reference_latency_ms(study.user_attrs, ctx.baseline)
        self.store = open_store(ctx.config.artifacts) if ctx.config.artifacts else None
        self.machine = machine_description(ctx)
        # None: the run's --train-device for one worker on this machine
        device = device if device is not None else train_device(ctx.config.train_device)
        data_ref = ctx.config.data.ref if ctx.config.data else None  # on its argv, not in files
        self.child = TrialChild(
            ctx.run.trial_dir(0).parent, ctx.config.trial_memory_gb, device, data_ref=data_ref
        )

    def close(self) -> None:
        """Stop this worker's trial child."""
        self.child.close()

    def facts(self, number: int | None = None) -> Any:
        """The model facts, with the stages a failure switched off for this model, and
        those resting at trial ``number`` after a streak of failures (``policy``)."""
        attrs = self.study.user_attrs
        disabled = set(disabled_stages(attrs))
        if number is not None:
            disabled |= set(rested_stages(attrs, number))
        if disabled:
            return dataclasses.replace(self.ctx.facts, disabled=frozenset(disabled))
        return self.ctx.facts

    def run(self, trial: optuna.Trial) -> None:
        """Run ``trial`` to a final state; never raises for a problem of this candidate."""
        try:
            self._run(trial)
        except Exception as exc:  # a bug in one trial's bookkeeping must not end the study
            if environment_error(exc) is not None:
                raise  # a full disk ends the search: every next trial would fail alike
            self._internal_failure(trial, exc)

    def _run(self, trial: optuna.Trial) -> None:
        ctx = self.ctx
        t0 = time.monotonic()
        trial.set_user_attr("machine", self.machine)
        try:
            candidate = suggest_candidate(trial, ctx.merged, self.facts(trial.number))
            if trial.user_attrs.get("baseline") == "unchanged":
                candidate = identity_candidate(ctx.merged)
        except EdgeoptError as exc:
            self._fail(trial, "suggest", exc.message)
            return
        key = candidate.key(ctx.baseline.salt)
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("candidate_key", key)
        mine = trial.user_attrs.get(RECIPE_ATTR)
        mark = f" (your recipe {mine!r})" if mine else ""
        trial.set_user_attr("describe", candidate.describe() + mark)
        built = self._baseline_with(key, trial)
        if built is not None:
            self._reuse(trial, built, t0)
            return
        blocked = blocked_by_earlier_hang(self.study, candidate.to_dict())
        if blocked:
            self._fail(trial, *blocked)
            return
        request = self._request(trial.number, candidate.to_dict())
        exempt = {SEED_ATTR, PROMOTED_ATTR, RECIPE_ATTR}
        if not ctx.config.plain_search and not exempt & set(trial.user_attrs):
            # a seed or the user's recipe runs out; a promoted trial earned its budget
            request = dataclasses.replace(request, rung_bars=self._rung_bars(trial))
        result = self.child.run(request, timeout_s=ctx.trial_timeout_s)
        trial.set_user_attr("build_s", round(result.build_seconds, 3))
        key = history_key()
        if key and result.info.get(key):
            trial.set_user_attr(key, list(result.info[key]))
        if result.status is Status.STOPPED:
            trial.set_user_attr(STOPPED_REASON, result.reason)
            self._tell(trial, state=TrialState.PRUNED)
            return
        if result.status is not Status.OK or result.onnx is None or result.val_accuracy is None:
            reason = str(result.reason)
            full = disk_full(self.ctx.run.trial_dir(trial.number), reason, need_bytes=self._room())
            if full is not None:
                raise full  # not the candidate's fault: ``run`` ends the search, it is re-queued
            self._fail(trial, str(result.stage), reason, result.failure)
            return
        onnx_path = Path(result.onnx)
        carry(onnx_path, ctx.config.data.recipe if ctx.config.data else None)  # before its digest
        info = dict(result.info)
        files = study_record(ctx.run, info)  # the file each target's runtime loads
        info.pop(RUNTIME_FILES, None)  # absolute paths: the study keeps relative ones
        if files:
            info[TARGET_FILES] = files
        try:
            t_measure = time.monotonic()
            measurements = self._measure(onnx_path, target_paths(ctx.run, files))
            trial.set_user_attr("measure_s", round(time.monotonic() - t_measure, 3))
        except EdgeoptError as exc:
            self._fail(trial, "measure", exc.message)
            if _device_error(exc):
                self._retry_once(trial)
            return
        accuracy = float(result.val_accuracy)
        trial.set_user_attr("onnx", ctx.run.relative(onnx_path))
        trial.set_user_attr("onnx_sha256", sha256_of(onnx_path))
        trial.set_user_attr("val_accuracy", accuracy)
        trial.set_user_attr("measurements", {k: m.to_dict() for k, m in measurements.items()})
        trial.set_user_attr("info", info)
        trial.set_user_attr("cache_hit", result.cache_hit)
        constraints = ctx.config.budgets.constraints(
            accuracy=accuracy,
            baseline_accuracy=ctx.baseline.val_accuracy,
            measurements=measurements,
            targets=[p.name for p in ctx.profiles],
        )
        for name, value in constraints.items():
            trial.set_constraint(name, value)
        values = [self._value(o.metric, o.target, accuracy, measurements) for o in ctx.objectives]
        trial.set_user_attr("trial_s", round(time.monotonic() - t0, 3))
        self._tell(trial, values, strict=True)
        if not ctx.config.plain_search:
            self._enqueue_siblings(trial, result.cache_hit)

    def _baseline_with(self, key: str, trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The complete baseline trial that built the candidate ``key`` already, if any
        (the sampler drew the unchanged model again, say: a small space draws it often)."""
        if "baseline" in trial.user_attrs:
            return None
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if "baseline" in t.user_attrs and t.user_attrs.get("candidate_key") == key:
                return t
        return None

    def _reuse(self, trial: optuna.Trial, built: optuna.trial.FrozenTrial, t0: float) -> None:
        """Complete ``trial`` with the results of the baseline trial ``built``: a baseline
        is never built and measured twice."""
        for attr in REUSED_ATTRS:
            if attr in built.user_attrs:
                trial.set_user_attr(attr, built.user_attrs[attr])
        trial.set_user_attr(SAME_AS_ATTR, built.number)
        for key, value in built.system_attrs.items():  # its uploaded files: other machines
            if key.startswith(ARTIFACTS_ATTR_PREFIX):  # read them through this trial too
                trial.storage.set_trial_system_attr(trial._trial_id, key, value)
        trial.set_user_attr("build_s", 0.0)
        trial.set_user_attr("cache_hit", True)
        for name, value in (built.constraints or {}).items():
            trial.set_constraint(name, value)
        trial.set_user_attr("trial_s", round(time.monotonic() - t0, 3))
        self._tell(trial, list(built.values or []))

    def _enqueue_siblings(self, trial: optuna.Trial, cache_hit: bool) -> None:
        """Queue the ONNX-side variants of a torch phase this trial built (``seeds``), those
        inside the user's space (``--space``)."""
        if cache_hit or SIBLING_ATTR in trial.user_attrs:
            return  # the trial that built this torch phase queued them already
        for params in sibling_params(trial.params, self.ctx.merged, self.facts(trial.number)):
            if inside(params, self.ctx.config.space or {}):
                self.study.enqueue_trial(params, user_attrs={SIBLING_ATTR: trial.number})

    def _rung_bars(self, trial: optuna.Trial) -> dict[int, float]:
        """The median stopping rule's bars for this trial's fine-tune (``halving``)."""
        return study_rung_bars(self.study, trial.params)

    def _request(self, number: int, candidate: dict[str, Any]) -> TrialRequest:
        ctx = self.ctx
        return TrialRequest(
            trial_dir=str(ctx.run.trial_dir(number)),
            model=ctx.config.model.to_dict(),
            data=ctx.config.data.to_dict() if ctx.config.data else None,
            profiles=ctx.targets.texts,
            seed=ctx.config.seed,
            cache_dir=str(ctx.run.cache_dir),
            salt=ctx.baseline.salt,
            candidate=candidate,
            reference_onnx=str(ctx.run.baseline_onnx),
            threads=ctx.config.threads,
            hopeless_below=ctx.baseline.hopeless_below,
            metric=ctx.config.metric,
            round_samples=recorded_round_samples(ctx.baseline.stage_facts),
            data_workers=ctx.config.data_workers,
            data_cache_bytes=int(ctx.config.data_cache_gb * GB),
        )

    def _room(self) -> int:
        """Bytes a trial needs free: twice the original ONNX (a candidate, its cache), >= 1 MiB."""
        baseline = self.ctx.run.baseline_onnx
        return max(1 << 20, 2 * baseline.stat().st_size if baseline.exists() else 0)

    def _measure(self, onnx_path: Path, files: dict[str, Path]) -> dict[str, Measurement]:
        """Host numbers measured (latency interleaved vs the original, each target on its
        runtime's file in ``files``), the rest estimated."""
        ctx = self.ctx
        originals = original_files(ctx.run, ctx.profiles)
        return measure_on_targets(
            onnx_path,
            ctx.profiles,
            input_shape=ctx.baseline.input_shape,
            sample=ctx.sample,
            reference=HostReference(ctx.run.baseline_onnx, self.reference_ms, originals),
            lock_path=ctx.run.lock_path("measure"),
            time_budget_s=HOST_LATENCY_BUDGET_S,
            files=files,
        )

    def _value(
        self, metric: Metric, target: str | None, accuracy: float, ms: dict[str, Measurement]
    ) -> float:
        if metric is Metric.ACCURACY:
            return accuracy
        return ms[target or self.ctx.profiles[0].name][metric]

    # ------------------------------------------------------------------ failures
    def _internal_failure(self, trial: optuna.Trial, exc: Exception) -> None:
        """Record an unexpected error as a FAIL trial, traceback in the trial's folder."""
        trial_dir = self.ctx.run.trial_dir(trial.number)
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

    def abandon(self, trial: optuna.Trial, reason: str, *, requeue: bool = False) -> None:
        """Fail a trial that was interrupted (left RUNNING it would wait for a heartbeat);
        ``requeue``: queue it again, to run first on a resume (a stop signal aborted it:
        nothing the candidate did, and an expert seed that failed is never queued again)."""
        frozen = self.study.get_trials(deepcopy=False)[trial.number]
        if frozen.state != TrialState.RUNNING:
            return
        self._fail(trial, "interrupted", reason)
        if requeue:
            roles = ("baseline", SEED_ATTR, SIBLING_ATTR, PROMOTED_ATTR, RECIPE_ATTR)
            attrs = {k: trial.user_attrs[k] for k in roles if k in trial.user_attrs}
            self.study.enqueue_trial(
                dict(trial.params), user_attrs={**attrs, "retry_of": trial.number}
            )

    def _retry_once(self, trial: optuna.Trial) -> None:
        """Queue the same candidate again after its device failed to measure it (a board
        rebooting, a dropped link); a retry that fails too is not retried again."""
        if "retry_of" in trial.user_attrs:
            return
        attrs = {"retry_of": trial.number}
        if "baseline" in trial.user_attrs:
            attrs["baseline"] = trial.user_attrs["baseline"]
        self.study.enqueue_trial(dict(trial.params), user_attrs=attrs)

    def _fail(
        self, trial: optuna.Trial, stage: str, reason: str, failure: FailureKind | None = None
    ) -> None:
        trial.set_user_attr("fail_stage", stage)
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr(HUNG_ATTR, hung(failure))
        if disable_after_failure(self.study, stage, reason, failure):
            trial.set_user_attr(DISABLED_BY_ATTR, stage)  # the progress line says it, once
            log.warning("%s is off for this model from now on: %s", stage, reason)
        else:
            candidate = trial.user_attrs.get("candidate") or {}
            blamed = culprit(self.study, stage, candidate)
            to_rest, failed_in = (stage, None) if blamed is None else (blamed, stage)
            rest = rest_after_streak(
                self.study, to_rest, trial.number, candidate, reason, failed_in
            )
            if rest is not None:
                trial.set_user_attr(RESTED_BY_ATTR, {"stage": to_rest, **rest})  # said once
                log.info("%s", rest_note(to_rest, rest))
        self._tell(trial, state=TrialState.FAIL)

    def _tell(
        self,
        trial: optuna.Trial,
        values: list[float] | None = None,
        *,
        state: TrialState = TrialState.COMPLETE,
        strict: bool = False,
    ) -> None:
        """Upload the trial's files to the shared store (if any), then tell the study.

        ``strict``: an upload error raises (a complete trial other machines cannot read
        becomes a FAIL trial); otherwise it is logged and the trial keeps its state."""
        if self.store is not None:
            try:
                upload_trial_files(self.store, trial, self.ctx.run.trial_dir(trial.number))
            except Exception as exc:
                if strict:
                    raise
                log.warning("trial %d: uploading its files failed: %s", trial.number, exc)
        self.study.tell(trial, values, state=state)


def machine_description(ctx: SearchContext) -> dict[str, Any]:
    """The machine trials run on: its name (``EDGEOPT_MACHINE``, else the host name), CPU
    line, and its own measured latency of the original per host profile (the study scales
    every machine's ratios by one reference)."""
    return {
        "hostname": os.environ.get("EDGEOPT_MACHINE") or socket.gethostname(),
        "cpu": host_description(),
        "baseline_latency_ms": dict(ctx.baseline.host_latency_ms),
    }


def _device_error(exc: BaseException) -> bool:
    """True when a remote device (not the candidate) failed the measurement."""
    return isinstance(exc, DeviceError)


def study_rung_bars(study: optuna.Study, params: dict[str, Any]) -> dict[int, float]:
    """The median stopping rule's bars for a fine-tune drawn with ``params``, from the
    study's finished fine-tunes, each at the same fraction of its budget (``halving``)."""
    found = fidelity_stage()
    if found is None or peer_value(params, found[1]) <= 0:
        return {}
    name, fidelity = found
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    key = fidelity.history_key
    peers = [(t.params, t.user_attrs[key]) for t in done if key in t.user_attrs]
    budget = params.get(f"{name}.{fidelity.budget}")
    return rung_bars(peers, peer_value(params, fidelity), fidelity, budget, same=params)
