"""Structured channel pruning with Torch-Pruning's DependencyGraph.

The pruned model really has fewer channels (smaller dense tensors, fewer MACs), not masks.
``round_to`` comes from the target profile's channel multiple; with it, the requested ratio is
not the achieved one (channel counts round down, and a group no wider than the multiple is
left whole), so every prune reports its measured MACs/params in ``info["prune_report"]``
(``prune_apply.prune_report``).

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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeopt.stages.attention import AttentionPruning
from edgeopt.stages.base import FailurePolicy, Phase, Stage, StageOutput
from edgeopt.stages.prune_apply import prune_model
from edgeopt.stages.prune_config import Importance, PruneConfig
from edgeopt.stages.prune_depth import max_depth
from edgeopt.stages.prune_preflight import PREFLIGHT_LIMIT_S, preflight
from edgeopt.training.blocks import MIN_BLOCKS, block_stack

if TYPE_CHECKING:
    from torch import nn

    from edgeopt.profiles import HardwareProfile
    from edgeopt.stages.base import ModelFacts, ProbeInput, StageContext, Suggester

GRID_RATIOS = (0.0, 0.25, 0.5)
"""The pruning ratios a grid search tries."""
HEAD_RATIOS = (0.125, 0.5, 0.125)
"""``prune.head_ratio``: low, high, step."""


class PruneStage(Stage[PruneConfig, "nn.Module"]):
    """Structured channel pruning (Torch-Pruning ``BasePruner``), torch phase.

    Enabled only for models Torch-Pruning can handle: its ``probe`` (the pre-flight of
    ``prune_preflight``) finds ``{"prunable", "ignored", "note"}``. ``apply``
    returns a pruned deep copy in the input's train/eval mode, with ``info["prune_report"]``
    set to ``prune_report(input, output)`` plus ``"channels"`` (qualified module name -> out
    channels of each pruning-group root after pruning).
    """

    name = "prune"
    title = "Pruning"
    phase = Phase.TORCH
    # a model Torch-Pruning cannot handle fails every prune alike; a config that hung once
    # hangs again
    failure_policy = FailurePolicy(disable_after_model_failure=True, block_config_after_hang=True)
    config_type = PruneConfig
    # a ratio above 0 reaches the other prune params (and fine-tuning after them), heads the
    # head ratio
    grid_probe = {"prune.ratio": 0.5, "prune.attention": AttentionPruning.HEADS.value}
    # before the probe (a user's space and recipes): heads, head dims, up to 32 blocks removed
    widest_facts = {
        "attention": {"pruning": "heads", "head_dims": True},
        "blocks": {"stack": "", "count": 64},
    }

    def enabled(self, facts: ModelFacts) -> bool:
        """Only models Torch-Pruning can handle (never an ONNX input); an inconclusive
        pre-flight leaves it on: trials find out."""
        return super().enabled(facts) and facts.of(self.name).get("prunable") is not False

    def probe(self, model: ProbeInput) -> dict[str, Any]:
        """The pruning pre-flight (a child process, at most ``PREFLIGHT_LIMIT_S``):
        ``prunable`` (None when it could not conclude, e.g. the model cannot be copied to a
        child), ``ignored`` (layers to leave whole), ``note`` (one line for the user), ``batchnorm``
        (whether it has any: ``bn_scale`` importance needs it) and,
        for a model with attention sites, ``attention`` (``PreflightResult.attention``)."""
        if model.module is None:
            return {}
        shape = model.inputs if model.inputs is not None else tuple(model.input_shape)
        pre = preflight(model.module, shape, time_limit_s=PREFLIGHT_LIMIT_S)
        facts: dict[str, Any] = {
            "prunable": pre.prunable if pre.conclusive else None,
            "ignored": list(pre.ignored_layers),
            "note": pre.reason,
        }
        if pre.attention:
            facts["attention"] = pre.attention
        from torch.nn.modules.batchnorm import _BatchNorm

        facts["batchnorm"] = any(isinstance(m, _BatchNorm) for m in model.module.modules())
        if pre.prunable is not False:
            stack = block_stack(model.module, shape, partial=True)
            if stack is not None:
                facts["blocks"] = {"stack": stack.name, "count": stack.count}
        return facts

    def probe_notes(self, facts: Mapping[str, Any]) -> list[str]:
        """Pruning off, what happens to attention, layers left whole, or an inconclusive
        pre-flight."""
        ignored, note = facts.get("ignored") or [], facts.get("note")
        attention = facts.get("attention") or {}
        if facts.get("prunable") is not False and attention.get("note"):
            return [str(attention["note"])]
        if facts.get("prunable") is False:
            return [
                f"pruning off: {note}; the search keeps to fine-tuning-free "
                "ONNX-side stages (quantization)"
            ]
        if ignored:
            return [
                f"pruning: {len(ignored)} layer(s) left whole "
                f"(coupled to a channel split/shuffle Torch-Pruning cannot follow)"
            ]
        if facts.get("prunable") is None and note:
            return [f"note: {note}; pruning trials will find out"]
        return []

    def suggest(self, space: Suggester, profile: HardwareProfile, facts: ModelFacts) -> PruneConfig:
        """``prune.ratio`` 0..0.7 step 0.05; at 0 nothing else is drawn. Otherwise
        ``prune.importance``, ``prune.global_pruning``, ``prune.iterative_steps`` (1..3);
        ``round_to`` is the profile's channel multiple, ``ignored_layers`` the layers the
        probe found (not an Optuna param: the config records it).

        Where the probe found prunable attention heads, also ``prune.attention`` (none,
        heads, and head_dims where the probe proved the scale stored and ``round_to`` is 1)
        and, unless none, ``prune.head_ratio`` 0.125..0.5 step 0.125; attention pruning is
        one local step (global pruning and iterative steps drawn but not applied).

        Where the probe found a block stack of ``count`` blocks, also ``prune.depth``, the
        blocks removed, 0..``max_depth(count)``."""
        base = self.identity(profile)
        ratio = round(float(space.suggest_float("prune.ratio", 0.0, 0.7, step=0.05)), 4)
        if ratio == 0.0:
            return base
        # bn_scale ranks by BatchNorm weights: without BatchNorm it prunes nothing and fails
        bn = facts.of(self.name).get("batchnorm") is not False
        importance = space.suggest_categorical(
            "prune.importance", [i.value for i in Importance if bn or i is not Importance.BN_SCALE]
        )
        global_pruning = space.suggest_categorical("prune.global_pruning", [False, True])
        steps = space.suggest_int("prune.iterative_steps", 1, 3)
        attention, head_ratio = self._suggest_attention(space, base.round_to, facts)
        if attention is not AttentionPruning.NONE:
            global_pruning, steps = False, 1
        blocks = int((facts.of(self.name).get("blocks") or {}).get("count", 0))
        depth = 0
        if blocks >= MIN_BLOCKS:
            depth = int(space.suggest_int("prune.depth", 0, max_depth(blocks)))
        return PruneConfig(
            ratio=ratio,
            importance=Importance(importance),
            global_pruning=bool(global_pruning),
            iterative_steps=int(steps),
            round_to=base.round_to,
            ignored_layers=tuple(str(x) for x in facts.of(self.name).get("ignored", ())),
            attention=attention,
            head_ratio=head_ratio,
            depth=depth,
        )

    def _suggest_attention(
        self, space: Suggester, round_to: int, facts: ModelFacts
    ) -> tuple[AttentionPruning, float]:
        found = facts.of(self.name).get("attention") or {}
        if found.get("pruning") != "heads":
            return AttentionPruning.NONE, 0.0
        modes = [AttentionPruning.NONE, AttentionPruning.HEADS]
        if found.get("head_dims") and round_to <= 1:
            modes.append(AttentionPruning.HEAD_DIMS)
        mode = AttentionPruning(
            space.suggest_categorical("prune.attention", [m.value for m in modes])
        )
        if mode is AttentionPruning.NONE:
            return mode, 0.0
        low, high, step = HEAD_RATIOS
        head_ratio = float(space.suggest_float("prune.head_ratio", low, high, step=step))
        return mode, round(head_ratio, 4)

    def identity(self, profile: HardwareProfile) -> PruneConfig:
        """Ratio 0 (round_to from the profile, recorded but unused)."""
        return PruneConfig(ratio=0.0, round_to=max(1, int(profile.pruning.channel_multiple)))

    def identity_params(self, profile: HardwareProfile) -> dict[str, Any]:
        """``prune.ratio`` 0."""
        return {"prune.ratio": 0.0}

    def grid_axes(self, profile: HardwareProfile, facts: ModelFacts) -> dict[str, list[Any]]:
        """``prune.ratio`` over ``GRID_RATIOS``; ``prune.attention`` none/heads where the
        probe found prunable heads."""
        axes: dict[str, list[Any]] = {"prune.ratio": list(GRID_RATIOS)}
        if (facts.of(self.name).get("attention") or {}).get("pruning") == "heads":
            axes["prune.attention"] = [AttentionPruning.NONE.value, AttentionPruning.HEADS.value]
        return axes

    def describe(self, config: PruneConfig) -> str:
        """``prune 0.50 l2`` (``prune 0.50 l2 heads 0.25`` with attention pruned, ``... -2
        blocks`` with blocks removed); empty when nothing is pruned."""
        if not config.prunes:
            return ""
        out = f"prune {config.ratio:.2f} {config.importance.value}"
        if config.attention is not AttentionPruning.NONE:
            out += f" {config.attention.value} {config.head_ratio:.2f}"
        if config.depth:
            out += f" -{config.depth} block{'s' if config.depth > 1 else ''}"
        return out

    def is_identity(self, config: PruneConfig) -> bool:
        """Nothing pruned: ratio 0 and no attention head ratio."""
        return not config.prunes

    def apply(
        self, artifact: nn.Module, config: PruneConfig, ctx: StageContext
    ) -> StageOutput[nn.Module]:
        """Prune a deep copy of ``artifact``; see the class docstring for what it carries.

        Raises CandidateError("prune", ...) when Torch-Pruning cannot trace or prune the
        architecture, when the forward pass breaks, when the achieved channel counts are
        not the expected ones (uniform: ``expected_channels`` per group; global: multiples of
        ``round_to`` or unchanged), when a group pruned through a channel-moving op leaves the
        kept channels computing something else (``check_equivalent``), or when a ratio
        above 0 saves under ``MIN_MACS_SAVED`` of the MACs (every group too small to prune at
        this ratio and ``round_to``).
        """
        model, report = prune_model(artifact, config, ctx)
        return StageOutput(model, {"prune_report": report})
