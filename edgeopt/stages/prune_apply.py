"""The prune stage's transformation: Torch-Pruning run on a copy, then checked.

Kept apart from ``prune.py`` so that the pruning pre-flight (``prune_preflight``), which the
stage's ``probe`` runs, prunes exactly as the stage does without importing the stage.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.stages.attention import AttentionPruning, find_attention
from edgeopt.stages.prune_attention import attention_ignored, check_attention_equivalent
from edgeopt.stages.prune_config import PruneConfig
from edgeopt.stages.prune_depth import drop_blocks
from edgeopt.stages.prune_ops import (
    checked_channels,
    count_macs_params,
    forward_checked,
    ignored_layers_of,
    prune_in_place,
)
from edgeopt.stages.prune_trace import PrunedGroup, check_equivalent
from edgeopt.training.batch import Inputs, example
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.stages.base import StageContext

log = logging.getLogger(__name__)

MIN_MACS_SAVED = 0.001
"""A ratio above 0 that saves less than this fraction of the MACs fails: "nothing was pruned"
(the candidate's label, e.g. ``prune 0.70``, must say what was done)."""


def prune_report(before: nn.Module, after: nn.Module, input_shape: Inputs) -> dict[str, Any]:
    """Achieved MACs/params before and after pruning, and their ratios (after / before)."""
    macs_b, params_b = count_macs_params(before, input_shape)
    return _report(macs_b, params_b, after, input_shape)


def _report(macs_b: int, params_b: int, after: nn.Module, input_shape: Inputs) -> dict[str, Any]:
    macs_a, params_a = count_macs_params(after, input_shape)
    return {
        "macs_before": macs_b,
        "macs_after": macs_a,
        "params_before": params_b,
        "params_after": params_a,
        "macs_ratio": macs_a / macs_b if macs_b else 1.0,
        "params_ratio": params_a / params_b if params_b else 1.0,
    }


def prune_model(
    artifact: nn.Module, config: PruneConfig, ctx: StageContext
) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned deep copy of ``artifact`` and its ``prune_report`` (plus ``"channels"``);
    see ``PruneStage.apply`` for what is checked and raised."""
    model = copy.deepcopy(artifact)
    was_training = artifact.training
    model.eval()
    shape = ctx.inputs if ctx.inputs is not None else tuple(ctx.input_shape)
    x = example(shape, module_device(model))
    what = ctx.inputs.text() if ctx.inputs is not None else str(shape)
    ref_out = forward_checked(model, x, f"model forward fails on input {what}")
    ignored = ignored_layers_of(model, config, shape)
    macs_before, params_before = count_macs_params(model, shape)
    depth: dict[str, Any] = {}
    reference = artifact  # what the width pruning is checked against
    if config.depth > 0:
        depth = drop_blocks(model, x, config.depth, ctx)
        reference = copy.deepcopy(model).train(was_training)
    channels: dict[str, int] = {}
    if config.prunes_width:
        sites = find_attention(model)
        ignored += attention_ignored(model, x, config, sites)
        record: list[PrunedGroup] = []
        roots = prune_in_place(
            model, x, config, ignored, ctx, type(artifact).__name__, record, sites
        )
        channels = checked_channels(model, roots, config, sites)
        out = forward_checked(model, x, "pruned model forward fails")
        if tuple(out.shape) != tuple(ref_out.shape):
            raise CandidateError(
                "prune", f"pruned output shape {tuple(out.shape)} != {tuple(ref_out.shape)}"
            )
        if sites and config.attention is not AttentionPruning.NONE:
            check_attention_equivalent(reference, model, sites, record, config, shape)
        elif any(g.moves_channels for g in record):
            check_equivalent(reference, model, record, shape)
    model.train(was_training)
    report = _report(macs_before, params_before, model, shape)
    report["channels"] = channels
    if depth:
        report["depth"] = depth
    if config.prunes and report["macs_ratio"] > 1.0 - MIN_MACS_SAVED:
        raise CandidateError(
            "prune",
            f"nothing was pruned: ratio {config.ratio:.2f} in multiples of "
            f"{config.round_to} channels kept {report['macs_ratio']:.1%} of the MACs",
            hint="every channel group is too small to prune at this ratio and channel "
            "multiple; the unpruned model is its own candidate",
        )
    if config.prunes:
        log.info(
            "pruned %.2f (%s), %d block(s): MACs %d -> %d",
            config.ratio,
            config.importance,
            config.depth,
            report["macs_before"],
            report["macs_after"],
        )
    return model, report
