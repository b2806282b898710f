"""The median stopping rule compares fine-tunes at the same fraction of their own schedule: a
long fine-tune judged at epoch 1 against 2-epoch seeds lost by construction. Real functions,
and a real Optuna study in a temp SQLite file."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution, IntDistribution

from edgeopt.search.strategy.halving import below_bar, history_key, rung_bars
from edgeopt.search.trial.objective import study_rung_bars

SEEDS = [({"prune.ratio": 0.5, "finetune.epochs": 2}, [0.6, 0.8])] * 3
"""Three 2-epoch fine-tunes: 0.6 half-way through their schedule, 0.8 at its end."""
# an 8-epoch fine-tune whose learning rate decays 4x more slowly: as good as the seeds at
# the same fraction of its schedule (0.6 half-way), far below them at epoch 1
MATCHING = [0.3, 0.45, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8]
BAD = [0.1, 0.12, 0.14, 0.2]


def _stopped_at(history: list[float], bars: dict[int, float]) -> int | None:
    """The epoch at which the rule stops a fine-tune that reaches ``history``."""
    for epoch in range(1, len(history) + 1):
        if below_bar(history[:epoch], bars) is not None:
            return epoch
    return None


def test_a_long_fine_tune_is_judged_at_the_same_fraction_of_its_schedule() -> None:
    bars = rung_bars(SEEDS, 0.5, budget=8)
    assert bars == {4: 0.6}  # epochs 1 and 2 of 8 are matched with no epoch of a 2-epoch one
    assert _stopped_at(MATCHING, bars) is None
    assert _stopped_at(BAD, bars) == 4  # a truly bad one still stops
    # the same budget as the seeds: compared epoch for epoch, as before
    same = rung_bars(SEEDS, 0.5, budget=2)
    assert same == {1: 0.6, 2: 0.8}
    assert _stopped_at([0.5, 0.9], same) == 1
    # a short fine-tune against long peers: its epoch 1 of 2 is their epoch 4 of 8
    assert rung_bars(
        [({"prune.ratio": 0.5, "finetune.epochs": 8}, MATCHING)] * 3, 0.5, budget=2
    ) == {
        1: 0.6,
        2: 0.8,
    }


def test_the_trials_budget_reaches_the_rule_from_a_real_study(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    dists = {
        "prune.ratio": FloatDistribution(0, 0.7, step=0.05),
        "finetune.epochs": IntDistribution(1, 8),
    }
    for params, history in SEEDS:
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dists, value=0.0, user_attrs={history_key(): history}
            )
        )
    long = study_rung_bars(study, {"prune.ratio": 0.5, "finetune.epochs": 8})
    assert _stopped_at(MATCHING, long) is None and _stopped_at(BAD, long) == 4
    assert study_rung_bars(study, {"prune.ratio": 0.5, "finetune.epochs": 2}) == {1: 0.6, 2: 0.8}


def test_a_model_with_blocks_removed_is_judged_among_those_with_as_many(tmp_path: Path) -> None:
    # it starts its fine-tune further behind than a same-ratio model with every block: among
    # those it was stopped at its first rung (the ViT's depth trials, seed 1)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    dists = {
        "prune.ratio": FloatDistribution(0, 0.7, step=0.05),
        "prune.depth": IntDistribution(0, 3),
        "finetune.epochs": IntDistribution(1, 8),
    }
    whole = [0.9, 0.95, 0.96, 0.97]
    for depth, history in [(0, whole)] * 3 + [(2, [0.5, 0.7, 0.8, 0.9])] * 3:
        params = {"prune.ratio": 0.5, "prune.depth": depth, "finetune.epochs": 4}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dists, value=0.0, user_attrs={history_key(): history}
            )
        )
    deep = study_rung_bars(study, {"prune.ratio": 0.5, "prune.depth": 2, "finetune.epochs": 4})
    assert deep == {1: 0.5, 2: 0.7, 4: 0.9}
    assert _stopped_at([0.6, 0.75, 0.85, 0.92], deep) is None
    # an unpruned-depth candidate (prune.depth absent: a model without a block stack) is
    # compared with depth 0 only
    flat = study_rung_bars(study, {"prune.ratio": 0.5, "finetune.epochs": 4})
    assert flat == {1: 0.9, 2: 0.95, 4: 0.97}
