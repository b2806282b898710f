"""Expert seeds and sibling variants: trials the search enqueues besides what it samples.

**Expert seeds** are the recipes an engineer types by hand with public tools
(``edgeopt.stages.recipes``), queued right after the baselines. Their fp32 variants come
from the sibling mechanism below, so the seeds themselves carry the by-hand (int8) variant
only.

**Sibling variants**: a pruned and fine-tuned model costs minutes to build, its ONNX-side
variants (fp32, int8) seconds, because the torch phase is cached (``pipeline``). After a
trial that built a new torch phase completes, the same torch params are queued with every
ONNX-phase stage at each of its ``variants`` (by default its identity and its by-hand
config), so one expensive build adds several points to the front. Siblings have no siblings
of their own.

This module names no stage: the recipes live with the stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeopt.search.strategy.space import params_with
from edgeopt.stages import STAGES, ModelFacts, Phase
from edgeopt.stages.recipes import RECIPES

if TYPE_CHECKING:
    from edgeopt.profiles import HardwareProfile

SEED_ATTR = "seed"
"""User attr naming the expert seed a trial was queued as."""
SIBLING_ATTR = "sibling_of"
"""User attr: the number of the trial whose torch phase this one reuses."""


def expert_seeds(profile: HardwareProfile, facts: ModelFacts) -> list[tuple[str, dict[str, Any]]]:
    """Tagged Optuna params of the expert recipes this model and target allow: a recipe
    needs every stage it names enabled, and ends with each enabled ONNX-phase stage's
    by-hand config; none when no ONNX-phase stage offers one (no by-hand int8)."""
    hands = [
        stage.by_hand(profile, facts)
        for stage in STAGES.values()
        if stage.phase is Phase.ONNX and stage.enabled(facts)
    ]
    by_hand = [h for h in hands if h is not None]
    if not by_hand:
        return []
    out = []
    for recipe in RECIPES:
        named = recipe.stages()
        if not named <= STAGES.keys() or not all(STAGES[n].enabled(facts) for n in named):
            continue
        params = params_with(profile)
        params.update(recipe.params)
        for hand in by_hand:
            params.update(hand.params)
        out.append((recipe.tag, params))
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
