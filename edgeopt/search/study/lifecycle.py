"""The study: its storage (with heartbeats), its sampler, and what is queued: the baselines
first, then expert seeds and promotions, one at a time as the search needs a trial.

Dead workers are found through Optuna's own heartbeat: every running trial's worker records
a heartbeat every ``HEARTBEAT_S`` seconds; a trial whose heartbeat is older than the grace
period is failed by ``fail_stale_trials`` (in any worker, on any machine sharing the storage)
and re-queued once by ``RetryHeartbeatStaleTrialCallback``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from edgeopt.config import RunConfig
from edgeopt.errors import ConfigError
from edgeopt.search.strategy.halving import PROMOTED_ATTR, history_key, promotion
from edgeopt.search.strategy.narrowed import NarrowedSampler, narrowed_grid
from edgeopt.search.strategy.samplers import SAMPLER_FACTORIES
from edgeopt.search.strategy.seeds import SEED_ATTR, expert_seeds, torch_params
from edgeopt.search.strategy.space import baseline_params, grid_space
from edgeopt.search.strategy.user_space import RECIPE_ATTR, project
from edgeopt.search.study import storage as storage_mod
from edgeopt.search.study.context import SearchContext
from edgeopt.search.study.shared import check_settings, publish
from edgeopt.stages import ModelFacts

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# edgeopt's ask/tell loop beats itself (``heartbeat`` below); Optuna expects study.optimize
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# seconds between heartbeats; a trial is stale after GRACE_BEATS missed ones. Tests shorten it.
HEARTBEAT_S = int(os.environ.get("EDGEOPT_HEARTBEAT_S", "10"))
GRACE_BEATS = 3


def heartbeat_storage(url: str) -> RDBStorage:
    """An RDB storage (SQLite or PostgreSQL) with heartbeats and one retry of stale trials;
    ConfigError (with a hint) when it cannot be opened."""
    return storage_mod.open_storage(url, heartbeat_s=HEARTBEAT_S, grace_beats=GRACE_BEATS)


def check_joinable(config: RunConfig, url: str) -> None:
    """Before any setup work: the storage opens, and a study of this name that already
    exists was started with the same settings (ConfigError, exit 2, otherwise)."""
    storage = storage_mod.open_storage(url)
    try:
        attrs = _study_attrs(storage, config.study_name)
    except Exception as exc:
        raise storage_mod.storage_error(url, exc, "read") from exc
    finally:
        storage.engine.dispose()
    check_settings(attrs, config, storage_mod.redact(url))


def _study_attrs(storage: RDBStorage, name: str) -> dict[str, Any]:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return {}
    return storage.get_study_user_attrs(study_id)


def sampler_seed(seed: int, worker_index: int, trials_done: int) -> int:
    """The run's seed for the first worker of a new study (so a seed reproduces a run);
    otherwise derived from the seed, the worker and the trials already in the study, so
    neither a second worker nor a resumed run replays the same draws."""
    if worker_index == 0 and trials_done == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{worker_index}:{trials_done}".encode()).hexdigest()
    return int(digest[:8], 16)


def make_sampler(
    ctx: SearchContext, worker_index: int, trials_done: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler (``SAMPLER_FACTORIES``), seeded by ``sampler_seed``, drawing
    only inside the user's space when the run has one (``narrowed``)."""
    config = ctx.config
    factory = SAMPLER_FACTORIES.get(config.sampler)
    if factory is None:
        raise ConfigError(f"unknown sampler {config.sampler!r}")
    seed = sampler_seed(config.seed, worker_index, trials_done)
    space = config.space or {}
    sampler = factory(seed, lambda: narrowed_grid(grid_space(ctx.merged, ctx.facts), space))
    return NarrowedSampler(sampler, space, seed) if space else sampler


def open_study(ctx: SearchContext, worker_index: int = 0) -> tuple[optuna.Study, RDBStorage]:
    """Create the study (first worker anywhere) or join it; under the study lock, a new study
    records the run (``shared.publish``), and a joining worker with other settings is
    refused (ConfigError). Its baselines are queued when a worker needs a trial
    (``missing_baselines``, ``enqueue_next``).

    Returns the study and the storage it was opened with (for heartbeats)."""
    url = ctx.storage_url
    name = ctx.config.study_name
    storage = heartbeat_storage(url)
    with storage_mod.study_lock(storage, name, ctx.run.lock_path("ask")):
        check_settings(_study_attrs(storage, name), ctx.config, storage_mod.redact(url))
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                directions=[o.direction.value for o in ctx.objectives],
                sampler=make_sampler(ctx, worker_index, _trials_in(storage, ctx)),
                load_if_exists=True,
            )
        except ValueError as exc:  # an existing study with other directions
            raise ConfigError(
                f"study {name!r} in {storage_mod.redact(url)} has other objectives: {exc}",
                hint="use another --study name",
            ) from exc
        except Exception as exc:
            raise storage_mod.storage_error(url, exc) from exc
        publish(study, ctx.config, ctx.baseline)
        if not study.user_attrs.get("objectives"):
            study.set_user_attr("objectives", [o.name for o in ctx.objectives])
            study.set_user_attr("directions", [o.direction.value for o in ctx.objectives])
            study.set_metric_names([o.name for o in ctx.objectives])  # optuna-dashboard's axes
    return study, storage


def ask_lock(ctx: SearchContext, storage: RDBStorage) -> contextlib.AbstractContextManager[None]:
    """The lock around "count, then ask": held across machines on PostgreSQL."""
    return storage_mod.study_lock(storage, ctx.config.study_name, ctx.run.lock_path("ask"))


def _trials_in(storage: RDBStorage, ctx: SearchContext) -> int:
    """Trials already run or running (queued baselines are not: a new run keeps its seed)."""
    try:
        study_id = storage.get_study_id_from_name(ctx.config.study_name)
    except KeyError:
        return 0
    states = (*FINISHED, TrialState.RUNNING)
    return len(storage.get_all_trials(study_id, deepcopy=False, states=states))


def missing_baselines(study: optuna.Study, ctx: SearchContext) -> list[tuple[str, dict]]:
    """The tagged params of each baseline with no completed, running or queued trial: all of
    them on a new study, and on a resume those whose trial was lost (killed, say), so the
    front always holds the original. A worker takes this list when it opens the study and
    ``enqueue_next`` queues them from it, so each is queued again at most once per worker
    and only when the search still needs a trial."""
    alive = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    have = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False, states=alive)}
    return [(tag, p) for tag, p in baseline_params(ctx.merged, ctx.facts) if tag not in have]


def enqueue_next(
    study: optuna.Study, ctx: SearchContext, facts: ModelFacts, baselines: list[tuple[str, dict]]
) -> None:
    """When nothing is queued, queue the next of ``baselines`` (``missing_baselines``,
    taken from the list) that still has no live trial, else the next of the user's recipes
    (``--enqueue``) not yet tried, else the next expert seed not yet tried (``seeds``), else
    the next longer fine-tune a completed trial earned (``halving.promotion``); call under
    ``ask_lock``, when the search needs a trial. Seeds and promotions are moved into the
    user's space (``user_space.project``): a value outside it is clamped to its range or
    replaced by its first choice, and one that then repeats a build is not queued.

    Lazily, one at a time: a retry or the sibling variants of the last build run first, and
    a search that has its trials queues nothing more (a baseline queued when a resumed
    search had them already stayed queued for ever). Breadth before depth, as successive
    halving's rungs: every seed's short fine-tune runs before any is continued, so a short
    search sees the whole range of ratios instead of one ratio trained longer. A seed that
    failed (a model pruning cannot handle) is not queued again. Seeds and promotions not on
    a grid, which is exhaustive and rejects values off it, nor in a plain search."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING for t in trials):
        return
    alive = (TrialState.COMPLETE, TrialState.RUNNING)
    have = {t.user_attrs.get("baseline") for t in trials if t.state in alive}
    while baselines:
        tag, params = baselines.pop(0)
        if tag not in have:
            study.enqueue_trial(params, user_attrs={"baseline": tag})
            return
    have = {t.user_attrs.get(RECIPE_ATTR) for t in trials}
    for recipe in ctx.config.recipes:
        if recipe["tag"] not in have:
            study.enqueue_trial(dict(recipe["params"]), user_attrs={RECIPE_ATTR: recipe["tag"]})
            return
    if ctx.config.sampler == "grid" or ctx.config.plain_search:
        return
    space = ctx.config.space or {}
    have = {t.user_attrs.get(SEED_ATTR) for t in trials}
    built = {_key(_queued(t)) for t in trials}
    for tag, params in expert_seeds(ctx.merged, facts):
        params = project(params, space)
        if tag not in have and _key(params) not in built:
            study.enqueue_trial(params, user_attrs={SEED_ATTR: tag})
            return
    _enqueue_next_promotion(study, trials, ctx.baseline.val_accuracy, space)


def _queued(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's params, with its fixed params while it waits to be suggested."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def _enqueue_next_promotion(
    study: optuna.Study,
    trials: list[optuna.trial.FrozenTrial],
    original_accuracy: float,
    space: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Queue the longer fine-tune of the oldest completed trial that earned one and whose
    torch phase no trial has built, tried or is queued to build yet. The Pareto front (which
    reads every trial) is read only when a trial passes the cheap checks."""
    # in any state: a promotion that failed (timed out, say) is not queued again and again;
    # a queued trial's params are its fixed params until a worker has suggested them all
    built = {_key(torch_params(_queued(t))) for t in trials}
    # a sibling reused its builder's fine-tune (a cache hit records no history of its own)
    key = history_key()
    history = {
        _key(torch_params(t.params)): t.user_attrs[key]
        for t in trials
        if t.state == TrialState.COMPLETE and key and key in t.user_attrs
    }
    front: set[int] | None = None
    for trial in trials:
        if trial.state != TrialState.COMPLETE or "val_accuracy" not in trial.user_attrs:
            continue
        params = promotion(
            trial.params,
            history.get(_key(torch_params(trial.params)), []),
            on_front=True,  # checked last
            val_accuracy=float(trial.user_attrs["val_accuracy"]),
            original_accuracy=original_accuracy,
        )
        if params is None:
            continue
        params = project(params, space or {})  # clamped back to its own budget: built already
        if _key(torch_params(params)) in built:
            continue
        if front is None:
            front = {t.number for t in study.best_trials}
        if trial.number in front:
            study.enqueue_trial(params, user_attrs={PROMOTED_ATTR: trial.number})
            return


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def counted_trials(
    study: optuna.Study, states: tuple[TrialState, ...] = (*FINISHED, TrialState.RUNNING)
) -> int:
    """Trials that count toward ``--trials``: finished or running (``states``), except a
    failed trial that was re-queued (its retry counts instead), so the total stays exact.
    Re-queued are stale trials (heartbeat) and trials whose device failed to measure them
    (``retry_of``)."""
    trials = study.get_trials(deepcopy=False)
    retried = {retry_of(t) for t in trials} - {None}
    return sum(1 for t in trials if t.state in states and t.number not in retried)


def retry_of(trial: optuna.trial.FrozenTrial) -> int | None:
    """The number of the trial ``trial`` re-runs, or None when it is no retry."""
    number = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    if number is None:
        number = trial.user_attrs.get("retry_of")
    return None if number is None else int(number)


def pop_retry(study: optuna.Study, storage: RDBStorage) -> optuna.Trial | None:
    """Claim the oldest queued retry as this worker's next trial, before anything else
    queued; None when no retry waits. Call under ``ask_lock``.

    A retry stands for a trial that already counted toward ``--trials``. Optuna's queue is
    first in, first out, and a stale trial is found only when its grace period ends: by
    then the sibling variants of a trial run meanwhile are queued ahead of its retry, one
    of them ran in its place and filled ``--trials``, and the retry stayed queued."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if retry_of(t) is None:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        # as study.ask pops the queue: False (or the error) when another worker took it
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
    return None


def fail_stale_trials(study: optuna.Study, storage: RDBStorage) -> None:
    """Fail (and re-queue once) trials whose worker stopped sending heartbeats, and trials
    whose worker died before their first heartbeat. Call under ``ask_lock``.

    A worker asks a trial and records its first heartbeat under that lock
    (``first_heartbeat``), so whoever holds the lock knows that a RUNNING trial without any
    heartbeat belongs to a worker that was killed in between: Optuna's own check never
    finds such a trial (it times the gap since the last beat), and it stayed RUNNING and
    counted forever.
    """
    optuna.storages.fail_stale_trials(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    failed = []
    for trial_id in storage_mod.running_without_heartbeat(storage, study_id):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
    retry = storage.get_heartbeat_stale_trial_callback()
    if retry is None:
        return
    for trial_id in failed:
        retry(study, copy.deepcopy(storage.get_trial(trial_id)))


def first_heartbeat(storage: RDBStorage, study: optuna.Study, number: int) -> None:
    """Record trial ``number``'s first heartbeat at once, under the ask lock: a worker killed
    before its heartbeat thread's first beat would leave a RUNNING trial without any
    heartbeat, which Optuna never finds stale (it stayed RUNNING, counted, forever)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, number))


@contextlib.contextmanager
def heartbeat(storage: RDBStorage, study: optuna.Study, number: int) -> Iterator[None]:
    """Record the trial's heartbeat every ``HEARTBEAT_S`` seconds while the block runs.

    Optuna beats only inside ``study.optimize``; edgeopt's ask/tell loop beats here, through
    the storage's public heartbeat API.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried next interval
                storage.record_heartbeat(trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
