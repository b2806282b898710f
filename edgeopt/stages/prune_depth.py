"""Depth pruning: whole blocks of a model's main block stack removed.

A transformer's encoder blocks (and any stack of residual blocks that keep their input's
shape) can be dropped whole: the residual stream passes a removed block unchanged, so what
is left computes with fewer layers, and every op of the block leaves the exported graph
(not only its widths). Width pruning keeps every block at a fraction of its width; depth
pruning is what ShortGPT and Minitron pair with it on encoders, and it is the only way to
remove a block's LayerNorms, residual Adds and attention softmax.

The stack is the ``nn.ModuleList``/``nn.Sequential`` whose children are at least
``MIN_BLOCKS`` modules of one class, each run once per forward, each returning a tensor of
its first input's shape (``training.blocks``); of several, the one with the most
parameters. Blocks are ranked by the damage their removal alone does to the model's output
on a seeded sample of training inputs (``rank_blocks``: KL divergence of class
probabilities, or relative squared error for other outputs; Minitron's finding is that
output-based ranking beats ShortGPT's input/output cosine for depth), and the least
damaging are replaced by ``SkippedBlock``, which returns its first input. Indices stay
valid, so a forward that indexes its stack still works.

A CNN's stack may be partial (``training.blocks``): MobileNetV2's stride-1 inverted residual
blocks among its other layers. Only those blocks are ranked and removed; on a small network
at low resolution, where each op's fixed cost dominates the latency, removing blocks cuts
time that narrowing them cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.training.batch import Batch, forward, synthetic, tensors, to
from edgeopt.training.blocks import MIN_BLOCKS, BlockStack, container_of, find_block_stack
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.inputs import ModelInputs
    from edgeopt.stages.base import StageContext

RANK_SAMPLES = 128
"""Training samples (or synthetic inputs) on which each block's removal is scored."""


def max_depth(blocks: int) -> int:
    """The most blocks ``prune.depth`` removes from a stack of ``blocks``: up to half."""
    return blocks // 2


def _damage(ref: torch.Tensor, out: torch.Tensor) -> float:
    """KL(ref || out) of class probabilities for (batch, classes) outputs, else the relative
    squared error."""
    import torch.nn.functional as F

    if ref.dim() == 2:
        return float(
            F.kl_div(out.log_softmax(1), ref.log_softmax(1), log_target=True, reduction="batchmean")
        )
    return float(((out - ref) ** 2).sum() / (ref**2).sum().clamp_min(1e-12))


def rank_blocks(model: nn.Module, stack: BlockStack, x: Batch) -> list[float]:
    """Per block of ``stack``, the damage to the output on ``x`` when it alone is removed."""
    import torch

    from edgeopt.stages.skipped_block import SkippedBlock

    container = container_of(model, stack.name)
    was_training = model.training
    model.eval()
    damage: list[float] = []
    try:
        with torch.no_grad():
            ref = forward(model, x)
            for i in stack.positions:
                block = container[i]
                container[i] = SkippedBlock(type(block).__name__)
                try:
                    damage.append(_damage(ref, forward(model, x)))
                finally:
                    container[i] = block
    finally:
        model.train(was_training)
    return damage


def rank_inputs(ctx: StageContext, inputs: ModelInputs, device: Any) -> Batch:
    """``RANK_SAMPLES`` seeded training inputs, or seeded synthetic ones without data."""
    import torch

    if ctx.data is not None:
        xs, _ = ctx.data.subset("train", RANK_SAMPLES, ctx.seed)
        return to(tensors(xs), device)
    g = torch.Generator().manual_seed(ctx.seed)
    return to(synthetic(inputs, RANK_SAMPLES, g), device)


def drop_blocks(model: nn.Module, x: Batch, depth: int, ctx: StageContext) -> dict[str, Any]:
    """Remove the ``depth`` least damaging blocks of ``model``'s stack (a partial one too:
    ``training.blocks``) in place; what was done: ``{"stack", "blocks", "removed":
    [positions in the container], "damage": [per block, in stack order]}``.

    CandidateError when the model has no block stack or ``depth`` would leave none."""
    stack = find_block_stack(model, x, partial=True)
    if stack is None:
        raise CandidateError(
            "prune",
            f"prune.depth {depth} needs a stack of at least {MIN_BLOCKS} same-shape blocks "
            "(blocks of one class in an nn.ModuleList or nn.Sequential that return their "
            "input's shape); this model has none",
            hint="set prune.depth to 0",
        )
    if depth >= stack.count:
        raise CandidateError(
            "prune",
            f"prune.depth {depth} removes every block of {stack.name} ({stack.count} blocks)",
            hint=f"prune.depth at most {stack.count - 1}",
        )
    samples = rank_inputs(ctx, ctx.model_inputs, module_device(model))
    damage = rank_blocks(model, stack, samples)
    ranked = sorted(range(stack.count), key=lambda j: (damage[j], j))[:depth]
    removed = sorted(stack.positions[j] for j in ranked)
    from edgeopt.stages.skipped_block import SkippedBlock

    container = container_of(model, stack.name)
    for i in removed:
        container[i] = SkippedBlock(type(container[i]).__name__)
    return {
        "stack": stack.name,
        "blocks": stack.count,
        "removed": removed,
        "damage": [round(d, 6) for d in damage],
    }
