"""A sampler that draws only from the user's space (``user_space``), around any other.

The study keeps each param's full distribution as the stage declares it (Optuna refuses a
changed choice list between trials, and the baselines sit outside a narrowed space); only
what the sampler draws is narrowed. A narrowed param leaves the inner sampler's joint
(relative) draw and is drawn on its own: a range from the inner sampler over the narrowed
range, a fixed value as it is, choices by the inner sampler over the full list, replaced by
a uniform draw among the user's choices when it falls outside them. Queued trials (the
baselines, seeds, recipes) bypass the sampler, as in Optuna.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from edgeopt.search.strategy.user_space import allows


class NarrowedSampler(optuna.samplers.BaseSampler):
    """``inner``, drawing each param of ``space`` (``{param: {"low","high"}|{"choices"}}``)
    only inside it."""

    def __init__(
        self, inner: optuna.samplers.BaseSampler, space: Mapping[str, Mapping[str, Any]], seed: int
    ) -> None:
        self.inner = inner
        self.space = {k: dict(v) for k, v in space.items()}
        self.rng = np.random.RandomState(seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        found = self.inner.infer_relative_search_space(study, trial)
        return {k: v for k, v in found.items() if k not in self.space}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        spec = self.space.get(param_name)
        if spec is None:
            return self.inner.sample_independent(study, trial, param_name, param_distribution)
        if "choices" in spec:
            choices = spec["choices"]
            if len(choices) == 1:
                return choices[0]
            value = self.inner.sample_independent(study, trial, param_name, param_distribution)
            if allows(self.space, param_name, value):
                return value
            return choices[self.rng.randint(len(choices))]
        low, high = spec["low"], spec["high"]
        if low == high:
            return low
        narrow = _narrowed(param_distribution, low, high)
        return self.inner.sample_independent(study, trial, param_name, narrow)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self.rng.seed()


def _narrowed(dist: BaseDistribution, low: float, high: float) -> BaseDistribution:
    """``dist`` over ``[low, high]`` (a numeric one; a choice list is never narrowed here)."""
    if isinstance(dist, FloatDistribution):
        return FloatDistribution(float(low), float(high), log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return IntDistribution(int(low), int(high), log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):  # not reached: validated as choices
        raise TypeError(f"a range for a choice param: {dist}")
    return dist


def narrowed_grid(
    grid: Mapping[str, list[Any]], space: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """A grid sampler's grid with each axis cut to ``space``; an axis with no value left
    takes the space's own (its choices, or its range's ends)."""
    out = {}
    for name, values in grid.items():
        kept = [v for v in values if allows(space, name, v)]
        if not kept:
            spec = space[name]
            kept = list(spec["choices"]) if "choices" in spec else [spec["low"], spec["high"]]
            kept = list(dict.fromkeys(kept))
        out[name] = kept
    return out
