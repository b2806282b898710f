"""Attention as structured pruning sees it: where a model's multi-head attention sites are,
how Torch-Pruning is told about them, how their attributes are fixed after a prune, and which
layers write the residual stream (left whole).

A site is a module in one of the ``LAYOUTS`` (data: the projection attribute names, the
head-count attribute, the width attributes its forward reads). Torch-Pruning's ``num_heads``
keeps each site's q/k/v rows in whole heads (``heads``) or the same dims of every head
(``head_dims``); afterwards ``fix_attributes`` sets the head count and the widths the forward
reshapes with. The residual stream (patch/embedding, every attention output projection, every
MLP output) is never pruned, as Torch-Pruning's ViT/BERT recipes do: ``residual_layers`` finds
its producers in the dependency graph, not by their names.

Torch is imported lazily (this module is imported by the prune config's callers)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.training.batch import forward

if TYPE_CHECKING:
    from torch import nn


class AttentionPruning(StrEnum):
    """What structured pruning does to attention: nothing, whole heads, or dims of every
    head (the head count stays)."""

    NONE = "none"
    HEADS = "heads"
    HEAD_DIMS = "head_dims"


@dataclass(frozen=True)
class Layout:
    """One way users write multi-head attention.

    ``projections``: attribute names of the q/k/v ``nn.Linear`` modules (one when fused);
    ``heads_attr``: the int head count; ``dim_attrs``: attributes set to the per-head width
    after a prune, ``total_attrs``: set to all heads' width (q's out features), where present.
    """

    name: str
    label: str
    projections: tuple[str, ...]
    heads_attr: str
    dim_attrs: tuple[str, ...]
    total_attrs: tuple[str, ...] = ()

    @property
    def fused(self) -> bool:
        """One projection computes q, k and v."""
        return len(self.projections) == 1


LAYOUTS: tuple[Layout, ...] = (
    Layout("fused_qkv", "fused qkv", ("qkv",), "num_heads", ("head_dim",)),
    Layout(
        "separate_qkv",
        "separate query/key/value",
        ("query", "key", "value"),
        "num_attention_heads",
        ("attention_head_size",),
        ("all_head_size",),
    ),
    Layout(
        "qkv_proj",
        "q_proj/k_proj/v_proj",
        ("q_proj", "k_proj", "v_proj"),
        "num_heads",
        ("head_dim",),
        ("embed_dim",),
    ),
)
"""The layouts recognised, first match wins (``nn.MultiheadAttention`` is none of them:
Torch-Pruning prunes its ``embed_dim``, the residual width, so it is left whole)."""


@dataclass(frozen=True)
class AttentionSite:
    """One attention module: its qualified ``name``, ``layout``, head count and the
    qualified names of its q/k/v projections."""

    name: str
    layout: Layout
    heads: int
    projections: tuple[str, ...]

    def head_dim(self, model: nn.Module) -> int:
        """Each head's width, from the first projection's out features."""
        width = _module(model, self.projections[0]).out_features
        return int(width) // (self.heads * (3 if self.layout.fused else 1))


def find_attention(model: nn.Module) -> list[AttentionSite]:
    """Every module of ``model`` in one of the ``LAYOUTS`` whose projections are
    ``nn.Linear`` with out features a multiple of its (int, positive) head count."""
    from torch import nn

    sites: list[AttentionSite] = []
    for name, module in model.named_modules():
        for layout in LAYOUTS:
            heads = getattr(module, layout.heads_attr, None)
            projs = [getattr(module, p, None) for p in layout.projections]
            if type(heads) is not int or heads <= 0:
                continue
            if not all(isinstance(p, nn.Linear) for p in projs):
                continue
            per = 3 * heads if layout.fused else heads
            if any(p.out_features % per for p in projs):
                continue
            prefix = f"{name}." if name else ""
            qualified = tuple(prefix + p for p in layout.projections)
            sites.append(AttentionSite(name, layout, heads, qualified))
            break
    return sites


def describe_sites(sites: list[AttentionSite]) -> str:
    """``2 sites (fused qkv)``."""
    labels = sorted({s.layout.label for s in sites})
    plural = "s" if len(sites) != 1 else ""
    return f"{len(sites)} site{plural} ({', '.join(labels)})"


def num_heads_of(model: nn.Module, sites: list[AttentionSite]) -> dict[Any, int]:
    """Torch-Pruning's ``num_heads``: every q/k/v projection module -> its site's heads."""
    return {_module(model, p): s.heads for s in sites for p in s.projections}


def projections_of(model: nn.Module, sites: list[AttentionSite]) -> list[nn.Module]:
    """The q/k/v projection modules of ``sites``."""
    return [_module(model, p) for s in sites for p in s.projections]


def fix_attributes(model: nn.Module, sites: list[AttentionSite], heads: dict[Any, int]) -> None:
    """After Torch-Pruning's step: set each site's head count to ``heads`` (its
    ``num_heads`` after pruning, by projection module) and the width attributes it has
    (``head_dim``, ``attention_head_size``, ``all_head_size``, ``embed_dim``) from the pruned
    projections. CandidateError when the widths are not whole heads."""
    for site in sites:
        module = _module(model, site.name)
        first = _module(model, site.projections[0])
        h = int(heads.get(first, site.heads))
        total = int(first.out_features) // (3 if site.layout.fused else 1)
        if h <= 0 or total % h:
            raise CandidateError(
                "prune", f"{site.name}: {total} channels after pruning are not {h} whole heads"
            )
        setattr(module, site.layout.heads_attr, h)
        for attr in site.layout.dim_attrs:
            if hasattr(module, attr):
                setattr(module, attr, total // h)
        for attr in site.layout.total_attrs:
            if hasattr(module, attr):
                setattr(module, attr, total)


def removed_heads(heads: int, ratio: float) -> int:
    """Heads Torch-Pruning removes from a site of ``heads`` at ``ratio`` (one step)."""
    return math.ceil(ratio * heads) if ratio > 0 else 0


def expected_width(site: AttentionSite, before: int, mode: AttentionPruning, ratio: float) -> int:
    """Out features of a q/k/v projection of ``before`` features after pruning ``site``:
    whole heads (``heads``, ``removed_heads``) or ``int(d * (1 - ratio))`` dims of every head
    (``head_dims``)."""
    per_head = before // site.heads
    if mode is AttentionPruning.HEADS:
        return (site.heads - removed_heads(site.heads, ratio)) * per_head
    if mode is AttentionPruning.HEAD_DIMS:
        k = 3 if site.layout.fused else 1
        d = per_head // k
        keep = int(d * (1 - ratio)) if ratio > 0 else d
        return site.heads * k * max(keep, 1)
    return before


def residual_layers(graph: Any, model: nn.Module, first: nn.Module) -> list[str]:
    """Qualified names of the layers that write the residual stream: the Conv/Linear/
    Embedding members of the dependency-graph group of ``first``'s (the first layer run)
    output channels whose dependency prunes their *output* channels (the group also reaches
    q/k/v, fc1 and the norms through their inputs: those stay prunable)."""
    from torch import nn

    names = {id(m): n for n, m in model.named_modules()}
    pruner = graph.get_pruner_of_module(first)
    if pruner is None:
        return []
    group = graph.get_pruning_group(first, pruner.prune_out_channels, [0])
    dense = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
    out: list[str] = []
    for dep, _ in group:
        module = dep.target.module
        if (
            isinstance(module, dense)
            and graph.is_out_channel_pruning_fn(dep.handler)
            and id(module) in names
            and names[id(module)] not in out
        ):
            out.append(names[id(module)])
    return out


def first_layer(model: nn.Module, example: Any) -> nn.Module | None:
    """The first Conv/Linear/Embedding module a forward pass on ``example`` runs."""
    import torch
    from torch import nn

    order: list[nn.Module] = []
    kinds = (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd)
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, kinds)
    ]
    try:
        with torch.no_grad():
            forward(model, example)
    finally:
        for h in hooks:
            h.remove()
    return order[0] if order else None


def qkv_split(graph: Any, model: nn.Module, sites: list[AttentionSite]) -> list[str]:
    """Fused sites whose qkv output is split by ``chunk``/``split`` (Torch-Pruning raises
    IndexError ranking their heads): their names."""
    from torch_pruning.ops import OPTYPE

    out = []
    for site in sites:
        qkv = _module(model, site.projections[0])
        node = graph.module2node.get(qkv)
        if site.layout.fused and node is not None and _reaches_split(node, OPTYPE):
            out.append(site.name)
    return out


def _reaches_split(node: Any, optype: Any, depth: int = 4) -> bool:
    """A SPLIT node within ``depth`` element-wise/reshape steps downstream of ``node``."""
    frontier: Iterable[Any] = node.outputs
    for _ in range(depth):
        nxt = []
        for n in frontier:
            if n.type is optype.SPLIT:
                return True
            if n.type in (optype.ELEMENTWISE, optype.RESHAPE):
                nxt.extend(n.outputs)
        frontier = nxt
    return False


def _module(model: nn.Module, name: str) -> Any:
    return model.get_submodule(name) if name else model
