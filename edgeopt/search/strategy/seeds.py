"""Expert seeds and sibling variants: trials the search enqueues besides what it samples.

**Expert seeds** are the recipes an engineer types by hand with public tools, queued right
after the baselines so that the front dominates them after the first few trials instead of
whenever the sampler happens to wander there. A by-hand recipe is Torch-Pruning's default
(uniform per-layer L2 magnitude pruning, one step) at a round ratio, a short fine-tune with
distillation from the original (SGD with momentum, lr 0.01 as in Torch-Pruning's CIFAR
examples; Hinton's T=4, alpha 0.7), then ORT static int8 with the
target's types. Three ratios span the range where a user would start: 0.3 (safe), 0.5 (the
usual first try) and 0.7 (aggressive, given more epochs to recover). Their fp32 variants come
from the sibling mechanism below, so the seeds themselves carry the int8 variant only.
Their schedule is ``wsd`` (constant, then a linear decay over the last quarter) instead of
the examples' cosine: it reaches about the same accuracy in short budgets, and a seed that
proves competitive is promoted (``halving.promotion``) to a longer fine-tune that continues
from its checkpoint instead of starting again.

**Sibling variants**: a pruned and fine-tuned model costs minutes to build, its ONNX-side
variants (fp32, int8) seconds, because the torch phase is cached (``pipeline``). After a
trial that built a new torch phase completes, the same torch params are queued with every
ONNX-phase stage at each of its ``variants`` (by default its identity and its by-hand
config), so one expensive build adds several points to the front. Siblings have no siblings
of their own.

Seeds name stage params: they are recipes, written as a user would write them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeopt.search.strategy.space import params_with
from edgeopt.stages import STAGES, ModelFacts, Phase

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile

SEED_ATTR = "seed"
"""User attr naming the expert seed a trial was queued as."""
SIBLING_ATTR = "sibling_of"
"""User attr: the number of the trial whose torch phase this one reuses."""

RECIPES: tuple[tuple[str, float, int], ...] = (
    ("expert: prune 0.5 + 3ep kd + int8", 0.5, 3),
    ("expert: prune 0.3 + 2ep kd + int8", 0.3, 2),
    ("expert: prune 0.7 + 5ep kd + int8", 0.7, 5),
)
"""(tag, pruning ratio, fine-tune epochs), queued in this order."""

FINETUNE = {
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
}
PRUNE = {"prune.importance": "l2", "prune.global_pruning": False, "prune.iterative_steps": 1}


def expert_seeds(profile: HardwareProfile, facts: ModelFacts) -> list[tuple[str, dict[str, Any]]]:
    """Tagged Optuna params of the expert recipes this model and target allow: none when
    the model cannot be pruned or the target has no by-hand int8."""
    prune, quantize = STAGES.get("prune"), STAGES.get("quantize")
    if prune is None or quantize is None or not prune.enabled(facts):
        return []
    hand = quantize.by_hand(profile, facts) if quantize.enabled(facts) else None
    if hand is None:
        return []
    out = []
    for tag, ratio, epochs in RECIPES:
        params = params_with(profile)
        params.update(PRUNE, **{"prune.ratio": ratio})
        params.update(FINETUNE, **{"finetune.epochs": epochs})
        params.update(hand.params)
        out.append((tag, params))
    return out


def sibling_params(
    params: Mapping[str, Any], profile: HardwareProfile, facts: ModelFacts
) -> list[dict[str, Any]]:
    """``params`` with the ONNX-phase stages at each of their identity and by-hand configs,
    except the one ``params`` already has; empty when no torch stage is active (an
    unpruned model's variants are the baselines already)."""
    torch_active = any(
        stage.phase is Phase.TORCH
        and stage.enabled(facts)
        and any(k in params and params[k] != v for k, v in stage.identity_params(profile).items())
        for stage in STAGES.values()
        if not stage.requires
    )
    if not torch_active:
        return []
    torch_only = torch_params(params)
    out: list[dict[str, Any]] = []
    for stage in STAGES.values():
        if stage.phase is not Phase.ONNX or not stage.enabled(facts):
            continue
        for variant in stage.variants(profile, facts):
            if all(params.get(k) == v for k, v in variant.items()):
                continue  # the trial itself
            sibling = {**params_with(profile), **torch_only, **variant}
            if sibling not in out:
                out.append(sibling)
    return out


def torch_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The torch-phase stages' params of ``params`` (what the cached build depends on)."""
    return {k: v for k, v in params.items() if _stage_of(k).phase is Phase.TORCH}


def _stage_of(param: str) -> Any:
    return STAGES[param.split(".", 1)[0]]
