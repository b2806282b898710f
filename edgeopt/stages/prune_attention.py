"""The prune stage's side of attention: what Torch-Pruning is told about a model's attention
sites (``pruner_kwargs``), which layers stay whole (``attention_ignored``), and the check
that a pruned model computes what the original did with the removed rows zeroed
(``check_attention_equivalent``). The sites themselves: ``edgeopt.stages.attention``."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.stages.attention import (
    AttentionPruning,
    AttentionSite,
    first_layer,
    num_heads_of,
    projections_of,
    removed_heads,
    residual_layers,
)
from edgeopt.stages.prune_config import PruneConfig
from edgeopt.stages.prune_trace import EQUIVALENCE_RTOL, PrunedGroup, build_dependency_graph
from edgeopt.training.batch import Batch, Inputs, forward, synthetic, to
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    from torch import nn

SCALE_FOLLOWS_HEAD_DIM = "the attention scale follows head_dim"
"""How ``check_attention_equivalent`` names the refusal of head dims (``head_dims_refusal``)."""


def attention_ignored(
    model: nn.Module, example: Batch, config: PruneConfig, sites: list[AttentionSite]
) -> list[nn.Module]:
    """Layers to leave whole on a model with attention ``sites``: the residual stream's
    writers (``attention.residual_layers``) and, unless ``config`` prunes attention, every
    q/k/v projection. CandidateError when the head ratio would remove every head of a site."""
    if not sites:
        return []
    if config.attention is AttentionPruning.HEADS:
        for site in sites:
            if removed_heads(site.heads, config.head_ratio) >= site.heads:
                raise CandidateError(
                    "prune",
                    f"prune.head_ratio {config.head_ratio:g} removes every head of "
                    f"{site.name} ({site.heads} heads)",
                )
    first = first_layer(model, example)
    names = dict(model.named_modules())
    out: list[nn.Module] = []
    if first is not None:
        graph = build_dependency_graph(model, example)
        out += [names[n] for n in residual_layers(graph, model, first)]
    if config.attention is AttentionPruning.NONE:
        out += projections_of(model, sites)
    return out


def pruner_kwargs(
    model: nn.Module, config: PruneConfig, sites: list[AttentionSite]
) -> tuple[dict[str, Any], dict[Any, float]]:
    """Torch-Pruning ``BasePruner`` keyword arguments for ``sites`` (``num_heads``,
    ``prune_num_heads``, ``prune_head_dims``, ``head_pruning_ratio``) and the per-layer
    ratios of the q/k/v projections (the head ratio: Torch-Pruning removes heads or dims of a
    group only when the group's own ratio is above 0, so the MLP ratio may be 0)."""
    if not sites:
        return {}, {}
    mode = config.attention
    kwargs = {
        "num_heads": num_heads_of(model, sites),
        "prune_num_heads": mode is AttentionPruning.HEADS,
        "prune_head_dims": mode is AttentionPruning.HEAD_DIMS,
        "head_pruning_ratio": config.head_ratio if mode is AttentionPruning.HEADS else 0.0,
    }
    ratios = {}
    if mode is not AttentionPruning.NONE:
        ratios = {p: config.head_ratio for p in projections_of(model, sites)}
    return kwargs, ratios


def _removed(
    record: list[PrunedGroup], names: dict[int, str], originals: dict[str, nn.Module], out: bool
) -> dict[str, list[int]]:
    """Per Linear/Conv (by name): the original out (``out``) or in positions removed over
    every pruned group in ``record``, in order."""
    remaining: dict[str, list[int]] = {}
    for group in record:
        for module, _optype, out_side, positions in group.members:
            name = names.get(id(module))
            if out_side != out or name not in originals:
                continue
            weight = getattr(originals[name], "weight", None)
            if weight is None or weight.dim() < 2:
                continue
            if name not in remaining:
                remaining[name] = list(range(int(weight.shape[0 if out else 1])))
            drop = set(positions)
            remaining[name] = [c for j, c in enumerate(remaining[name]) if j not in drop]
    return {
        name: sorted(set(range(int(originals[name].weight.shape[0 if out else 1]))) - set(kept))
        for name, kept in remaining.items()
    }


def check_attention_equivalent(
    original: nn.Module,
    pruned: nn.Module,
    sites: list[AttentionSite],
    record: list[PrunedGroup],
    config: PruneConfig,
    shape: Inputs,
) -> None:
    """The pruned model must equal a copy of ``original`` whose q/k/v projections have the
    removed rows (weight and bias) zeroed and whose dense layers ignore removed input
    channels (columns zeroed), on two seeded samples (``batch.synthetic``), within
    ``EQUIVALENCE_RTOL``.

    Removing heads or dims does nothing else, unless the forward computes its softmax scale
    from the (pruned) head width: CandidateError naming the scale (``head_dims``) or a
    mis-pruned site (``heads``).
    """
    import torch

    reference = copy.deepcopy(original).eval()
    originals = dict(reference.named_modules())
    names = {id(m): n for n, m in pruned.named_modules()}
    projs = {p for s in sites for p in s.projections}
    rows = {n: r for n, r in _removed(record, names, originals, out=True).items() if n in projs}
    cols = _removed(record, names, originals, out=False)
    gen = torch.Generator().manual_seed(0)
    x = to(synthetic(shape, 2, gen), module_device(pruned))
    with torch.no_grad():
        for name, r in rows.items():
            originals[name].weight[r] = 0
            if originals[name].bias is not None:
                originals[name].bias[r] = 0
        for name, c in cols.items():
            originals[name].weight[:, c] = 0
        want, got = forward(reference, x), forward(pruned, x)
    scale = float(want.abs().max())
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if diff <= EQUIVALENCE_RTOL * max(scale, 1e-12):
        return
    where = ", ".join(s.name for s in sites)
    if config.attention is AttentionPruning.HEAD_DIMS:
        raise CandidateError(
            "prune",
            f"{SCALE_FOLLOWS_HEAD_DIM} in {where}: pruning head dims changes the "
            f"softmax temperature (output differs by {diff:.3g}, outputs up to {scale:.3g})",
            hint="prune whole heads instead (prune.attention = heads), or store the scale "
            "as a constant in the model",
        )
    raise CandidateError(
        "prune",
        f"the pruned attention in {where} computes something else than its kept heads did "
        f"(output differs by {diff:.3g}, outputs up to {scale:.3g})",
        hint="leave attention whole (prune.attention = none)",
    )


def head_dims_refusal(exc: CandidateError) -> str:
    """Why head dims could not be pruned, in a few words for the probe's note: the softmax
    scale computed from ``head_dim``, else the failure's first clause."""
    if exc.reason.startswith(SCALE_FOLLOWS_HEAD_DIM):
        return "the softmax scale is computed from head_dim"
    return exc.reason.split(":", 1)[0][:80]
