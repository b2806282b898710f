"""A sampler that draws only from the user's space (``user_space``), around any other.

The study keeps each param's full distribution as the stage declares it (Optuna refuses a
changed choice list between trials, and the baselines sit outside a narrowed space); only
what the sampler draws is narrowed. A fixed value is never drawn; a range is drawn on its
own by the inner sampler over the narrowed range (TPE's univariate model, within it);
choices stay in the inner sampler's joint draw over the full list, and a draw outside them
is replaced by a uniform draw among them. Queued trials (the baselines, seeds, recipes)
bypass the sampler, as in Optuna.
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
        self.uniform = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        found = self.inner.infer_relative_search_space(study, trial)
        # a range is drawn on its own over the narrowed range; choices stay in the joint draw
        return {k: v for k, v in found.items() if "low" not in self.space.get(k, {"choices": 0})}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        drawn = self.inner.sample_relative(study, trial, search_space)
        for name, value in drawn.items():
            if not allows(self.space, name, value):
                drawn[name] = self._inside(study, trial, name, search_space[name])
        return drawn

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
        fixed = _fixed(spec)
        if fixed is not None:
            return fixed[0]
        if "choices" not in spec:
            narrow = _narrowed(param_distribution, spec["low"], spec["high"])
            return self.inner.sample_independent(study, trial, param_name, narrow)
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        if allows(self.space, param_name, value):
            return value
        return self._inside(study, trial, param_name, param_distribution)

    def _inside(
        self, study: optuna.Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        """A uniform draw inside the space for param ``name`` (declared as ``dist``)."""
        spec = self.space[name]
        if "choices" in spec:
            return spec["choices"][self.rng.randint(len(spec["choices"]))]
        narrow = _narrowed(dist, spec["low"], spec["high"])
        return self.uniform.sample_independent(study, trial, name, narrow)

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
        self.uniform.reseed_rng()
        self.rng.seed()


def _fixed(spec: Mapping[str, Any] | None) -> tuple[Any] | None:
    """``(value,)`` when ``spec`` allows one value only, else None."""
    if spec is None:
        return None
    if "choices" in spec:
        return (spec["choices"][0],) if len(spec["choices"]) == 1 else None
    return (spec["low"],) if spec["low"] == spec["high"] else None


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
