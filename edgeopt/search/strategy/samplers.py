"""The samplers ``--sampler`` names: one factory per name.

``edgeopt.config.SAMPLERS`` holds the names (the run config validates them without importing
optuna); :data:`SAMPLER_FACTORIES` builds each one (tests/test_tables.py checks that both
list the same names). Adding a sampler is one name there and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

Grid = Callable[[], dict[str, list[Any]]]
"""The grid a grid sampler walks (param -> values); called only by samplers that need it."""

SAMPLER_FACTORIES: dict[str, Callable[[int, Grid], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed, grid: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=3
    ),
    "nsga2": lambda seed, grid: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
    "random": lambda seed, grid: optuna.samplers.RandomSampler(seed=seed),
    "grid": lambda seed, grid: optuna.samplers.GridSampler(grid(), seed=seed),
    "gp": lambda seed, grid: optuna.samplers.GPSampler(seed=seed),
}
"""``--sampler`` name -> ``factory(seed, grid)``: the seeded sampler."""
