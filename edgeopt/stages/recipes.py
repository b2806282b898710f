"""Expert recipes: what an engineer types by hand with public tools, as stage params.

The search queues them right after the baselines (``search/strategy/seeds.py``, which knows
no stage by name) so that the front dominates them after the first few trials instead of
whenever the sampler happens to wander there. A by-hand recipe is Torch-Pruning's default
(uniform per-layer L2 magnitude pruning, one step) at a round ratio, a short fine-tune with
distillation from the original (SGD with momentum, lr 0.01 as in Torch-Pruning's CIFAR
examples; Hinton's T=4, alpha 0.7), then each ONNX-phase stage's by-hand config (plain int8
with the target's types: dynamic for a MatMul-heavy graph where the target offers it).
Where the pruning probe found prunable attention heads, the recipe also removes heads
(Torch-Pruning's ``prune_num_heads``, ``head_ratio``); on other models those params are
never asked, so the same recipe runs unchanged. Three ratios span the range where a user
would start: 0.3 (safe), 0.5 (the usual first try) and 0.7 (aggressive, given more epochs
to recover). Their schedule is ``wsd`` (constant, then a linear decay over the last
quarter) instead of the examples' cosine: it reaches about the same accuracy in short
budgets, and a seed that proves competitive is promoted to a longer fine-tune that continues
from its checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FINETUNE: Mapping[str, Any] = {
    "finetune.lr": 0.01,
    "finetune.batch_size": 64,
    "finetune.optimizer": "sgd",
    "finetune.weight_decay": 5e-4,
    "finetune.schedule": "wsd",
    "finetune.label_smoothing": 0.0,
    "finetune.augment": True,
    "finetune.distill": True,
    "finetune.temperature": 4.0,
    "finetune.alpha": 0.7,
    "finetune.hidden_distill": False,
}
HEAD_RATIO_MAX, HEAD_RATIO_STEP = 0.5, 0.125
"""A recipe's share of heads removed: its channel ratio rounded down to the searched grid
(``prune.head_ratio``), at most Torch-Pruning's examples' 0.5 (``prune_hf_bert.py``)."""
PRUNE: Mapping[str, Any] = {
    "prune.importance": "l2",
    "prune.global_pruning": False,
    "prune.iterative_steps": 1,
    "prune.depth": 0,
}
"""Torch-Pruning's default, every block kept: removing blocks (``prune.depth``) is not in a
user's by-hand recipe (a model without a block stack never asks it)."""


@dataclass(frozen=True)
class Recipe:
    """``tag`` names the seed trial; ``params`` are its torch-phase stage params (Optuna
    names). It ends with every ONNX-phase stage's by-hand config, and runs only where every
    stage it names is enabled for the model and an ONNX-phase stage offers a by-hand config.
    """

    tag: str
    params: Mapping[str, Any]

    def stages(self) -> set[str]:
        """The stages whose params the recipe names."""
        return {key.split(".", 1)[0] for key in self.params}


def _recipe(ratio: float, epochs: int) -> Recipe:
    heads = {"prune.attention": "heads", "prune.head_ratio": head_ratio(ratio)}
    return Recipe(
        f"expert: prune {ratio} + {epochs}ep kd + int8",
        {**PRUNE, **heads, "prune.ratio": ratio, **FINETUNE, "finetune.epochs": epochs},
    )


def head_ratio(ratio: float) -> float:
    """The heads a recipe at channel ``ratio`` removes (see ``HEAD_RATIO_MAX``)."""
    steps = math.floor(round(ratio / HEAD_RATIO_STEP, 6))
    return min(HEAD_RATIO_MAX, max(HEAD_RATIO_STEP, steps * HEAD_RATIO_STEP))


RECIPES: tuple[Recipe, ...] = (_recipe(0.5, 3), _recipe(0.3, 2), _recipe(0.7, 5))
"""Queued in this order."""
