"""Structured channel pruning with Torch-Pruning's DependencyGraph.

The pruned model really has fewer channels (smaller dense tensors, fewer MACs), not masks.
``round_to`` comes from the target profile's channel multiple; with it, the requested ratio is
not the achieved one (channel counts round down, and a group no wider than the multiple is
left whole), so every pruned module carries its measured MACs/params: see ``prune_report``
and ``get_prune_report``.

Per-group channel count after one-shot uniform pruning of a group with ``C`` channels (what
Torch-Pruning 1.6 computes, checked after every apply): ``k = int(C * (1 - ratio))``, then
``k -= k % round_to``. Where that leaves 0 Torch-Pruning would keep all ``C`` channels, so on a
16-lane NPU a 32-channel layer stayed whole at ratio 0.7 but was halved at 0.5: a higher ratio
saved fewer MACs, and the seeds 0.3/0.5/0.7 built nearly the same model. Such a group is
given its own ratio instead (``layer_ratio``) and keeps ``round_to`` channels, the smallest
multiple; a group of at most ``round_to`` channels is left whole. Iterative pruning applies
the rule per step; see ``expected_channels``.

Torch-Pruning traces the model through ``prune_trace.trace_forward``, which works around
two Torch-Pruning 1.6 bugs on channel splits and shuffles; pruned groups that pass a
channel-moving op are checked for equivalence (``prune_trace.check_equivalent``).
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.stages.base import Phase, Stage
from edgeopt.stages.prune_config import Importance, PruneConfig
from edgeopt.stages.prune_ops import (
    checked_channels,
    count_macs_params,
    forward_checked,
    ignored_layers_of,
    prune_in_place,
)
from edgeopt.stages.prune_trace import PrunedGroup, check_equivalent

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.profiles import HardwareProfile
    from edgeopt.stages.base import ModelFacts, StageContext, Suggester

log = logging.getLogger(__name__)

MIN_MACS_SAVED = 0.001
"""A ratio above 0 that saves less than this fraction of the MACs fails: "nothing was pruned"
(the candidate's label, e.g. ``prune 0.70``, must say what was done)."""
GRID_RATIOS = (0.0, 0.25, 0.5)
"""The pruning ratios a grid search tries."""
PRUNE_REPORT_ATTR = "edgeopt_prune_report"
"""Attribute set on every module returned by ``PruneStage.apply``: a ``prune_report`` dict."""


def prune_report(
    before: nn.Module, after: nn.Module, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """Achieved MACs/params before and after pruning, and their ratios (after / before)."""
    macs_b, params_b = count_macs_params(before, input_shape)
    return _report(macs_b, params_b, after, input_shape)


def _report(
    macs_b: int, params_b: int, after: nn.Module, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    macs_a, params_a = count_macs_params(after, input_shape)
    return {
        "macs_before": macs_b,
        "macs_after": macs_a,
        "params_before": params_b,
        "params_after": params_a,
        "macs_ratio": macs_a / macs_b if macs_b else 1.0,
        "params_ratio": params_a / params_b if params_b else 1.0,
    }


def get_prune_report(model: nn.Module) -> dict[str, Any] | None:
    """The ``prune_report`` dict ``PruneStage.apply`` attached to ``model``, if any."""
    report = getattr(model, PRUNE_REPORT_ATTR, None)
    return dict(report) if isinstance(report, dict) else None


class PruneStage(Stage[PruneConfig, "nn.Module"]):
    """Structured channel pruning (Torch-Pruning ``BasePruner``), torch phase.

    Enabled only for models Torch-Pruning can handle (``ModelFacts.prunable``). ``apply``
    returns a pruned deep copy in the input's train/eval mode, with ``PRUNE_REPORT_ATTR`` set
    to ``prune_report(input, output)`` plus ``"channels"`` (qualified module name -> out
    channels of each pruning-group root after pruning).
    """

    name = "prune"
    phase = Phase.TORCH
    config_type = PruneConfig
    # a ratio above 0 reaches the other prune params (and fine-tuning after them)
    grid_probe = {"prune.ratio": 0.5}

    def enabled(self, facts: ModelFacts) -> bool:
        """Only models Torch-Pruning can handle (never an ONNX input)."""
        return facts.prunable

    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> PruneConfig:
        """``prune.ratio`` 0..0.7 step 0.05; at 0 nothing else is drawn. Otherwise
        ``prune.importance``, ``prune.global_pruning``, ``prune.iterative_steps`` (1..3);
        ``round_to`` is the profile's channel multiple, ``ignored_layers`` the model's
        ``facts.prune_ignored`` (not an Optuna param: the config records it)."""
        base = self.identity(profile)
        ratio = round(float(space.suggest_float("prune.ratio", 0.0, 0.7, step=0.05)), 4)
        if ratio == 0.0:
            return base
        importance = space.suggest_categorical("prune.importance", [i.value for i in Importance])
        global_pruning = space.suggest_categorical("prune.global_pruning", [False, True])
        steps = space.suggest_int("prune.iterative_steps", 1, 3)
        return PruneConfig(
            ratio=ratio,
            importance=Importance(importance),
            global_pruning=bool(global_pruning),
            iterative_steps=int(steps),
            round_to=base.round_to,
            ignored_layers=facts.prune_ignored,
        )

    def identity(self, profile: HardwareProfile) -> PruneConfig:
        """Ratio 0 (round_to from the profile, recorded but unused)."""
        return PruneConfig(ratio=0.0, round_to=max(1, int(profile.pruning.channel_multiple)))

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        """``prune.ratio`` 0."""
        return {"prune.ratio": 0.0}

    def grid_axes(self, profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
        """``prune.ratio`` over ``GRID_RATIOS``."""
        return {"prune.ratio": list(GRID_RATIOS)}

    def describe(self, config: PruneConfig) -> str:
        """``prune 0.50 l2``; empty at ratio 0."""
        return f"prune {config.ratio:.2f} {config.importance.value}" if config.ratio > 0 else ""

    def is_identity(self, config: PruneConfig) -> bool:
        """Ratio 0 prunes nothing."""
        return config.ratio == 0.0

    def apply(self, artifact: nn.Module, config: PruneConfig, ctx: StageContext) -> nn.Module:
        """Prune a deep copy of ``artifact``; see the class docstring for what it carries.

        Raises CandidateError("prune", ...) when Torch-Pruning cannot trace or prune the
        architecture, when the forward pass breaks, when the achieved channel counts are
        not the expected ones (uniform: ``expected_channels`` per group; global: multiples of
        ``round_to`` or unchanged), when a group pruned through a channel-moving op leaves the
        kept channels computing something else (``check_equivalent``), or when a ratio
        above 0 saves under ``MIN_MACS_SAVED`` of the MACs (every group too small to prune at
        this ratio and ``round_to``).
        """
        import torch

        model = copy.deepcopy(artifact)
        was_training = artifact.training
        model.eval()
        shape = tuple(ctx.input_shape)
        example = torch.zeros((1, *shape))
        ref_out = forward_checked(model, example, f"model forward fails on input {shape}")
        ignored = ignored_layers_of(model, config, shape)
        macs_before, params_before = count_macs_params(model, shape)
        channels: dict[str, int] = {}
        if config.ratio > 0.0:
            record: list[PrunedGroup] = []
            roots = prune_in_place(
                model, example, config, ignored, ctx, type(artifact).__name__, record
            )
            channels = checked_channels(model, roots, config)
            out = forward_checked(model, example, "pruned model forward fails")
            if tuple(out.shape) != tuple(ref_out.shape):
                raise CandidateError(
                    "prune", f"pruned output shape {tuple(out.shape)} != {tuple(ref_out.shape)}"
                )
            if any(g.moves_channels for g in record):
                check_equivalent(artifact, model, record, shape)
        model.train(was_training)
        report = _report(macs_before, params_before, model, shape)
        report["channels"] = channels
        if config.ratio > 0.0 and report["macs_ratio"] > 1.0 - MIN_MACS_SAVED:
            raise CandidateError(
                "prune",
                f"nothing was pruned: ratio {config.ratio:.2f} in multiples of "
                f"{config.round_to} channels kept {report['macs_ratio']:.1%} of the MACs",
                hint="every channel group is too small to prune at this ratio and channel "
                "multiple; the unpruned model is its own candidate",
            )
        setattr(model, PRUNE_REPORT_ATTR, report)
        if config.ratio > 0.0:
            log.info(
                "pruned %.2f (%s): MACs %d -> %d",
                config.ratio,
                config.importance,
                report["macs_before"],
                report["macs_after"],
            )
        return model
