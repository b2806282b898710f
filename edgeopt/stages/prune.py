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
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError, ConfigError
from edgeopt.stages.base import Phase, Stage, StageConfig, check_range
from edgeopt.stages.prune_trace import PrunedGroup, check_equivalent, trace_forward

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.profiles import HardwareProfile
    from edgeopt.stages.base import ModelFacts, StageContext, Suggester

log = logging.getLogger(__name__)

MAX_RATIO = 0.9
MIN_MACS_SAVED = 0.001
"""A ratio above 0 that saves less than this fraction of the MACs fails: "nothing was pruned"
(the candidate's label, e.g. ``prune 0.70``, must say what was done)."""
GRID_RATIOS = (0.0, 0.25, 0.5)
"""The pruning ratios a grid search tries."""
PRUNE_REPORT_ATTR = "edgeopt_prune_report"
"""Attribute set on every module returned by ``PruneStage.apply``: a ``prune_report`` dict."""

_TAYLOR_SAMPLES = 128
_TAYLOR_BATCH = 64


class Importance(StrEnum):
    """How channel groups are ranked: group L1/L2 weight norm, first-order Taylor, BN scale."""

    L1 = "l1"
    L2 = "l2"
    TAYLOR = "taylor"
    BN_SCALE = "bn_scale"


@dataclass(frozen=True, kw_only=True)
class PruneConfig(StageConfig):
    """Structured pruning settings.

    ``ratio``: fraction of channels removed per group (uniform) or over all groups (global),
    in [0, 0.9]; 0 leaves the model unchanged. ``iterative_steps`` prunes in that many
    increments, re-ranking importance in between. ``round_to``: kept channel counts are
    multiples of it (1 = no rounding). ``ignored_layers``: qualified module names whose
    output channels are never pruned, in addition to the model's output layer, which is
    always kept whole.
    """

    ratio: float = 0.0
    importance: Importance = Importance.L2
    global_pruning: bool = False
    iterative_steps: int = 1
    round_to: int = 1
    ignored_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_types()
        check_range("prune.ratio", self.ratio, 0.0, MAX_RATIO)
        check_range("prune.iterative_steps", self.iterative_steps, 1, 100)
        check_range("prune.round_to", self.round_to, 1, 4096)
        if any(not isinstance(n, str) or not n for n in self.ignored_layers):
            raise ConfigError("prune.ignored_layers must be non-empty module names")


def layer_ratio(channels: int, ratio: float, round_to: int = 1) -> float:
    """The uniform ratio a group of ``channels`` is pruned at: ``ratio``, except where the
    kept count ``int(channels * (1 - ratio))`` rounds down to 0 channels in multiples of
    ``round_to`` and the group is wider than ``round_to``: then a ratio that keeps exactly
    ``round_to`` channels (half a channel of margin against float truncation)."""
    if round_to <= 1 or channels <= round_to:
        return ratio
    keep = int(channels * (1 - ratio))
    if keep - keep % round_to > 0:
        return ratio
    return 1.0 - (round_to + 0.5) / channels


def expected_channels(channels: int, ratio: float, round_to: int = 1, steps: int = 1) -> int:
    """Channels a group of ``channels`` keeps after uniform pruning at ``ratio`` in ``steps``.

    The group's ratio is ``layer_ratio``; step ``k`` targets ``int(channels * (1 - r * k /
    steps))`` kept channels, rounded down to a multiple of ``round_to``; a step whose rounded
    target is 0 leaves the group as it is.
    """
    ratio = layer_ratio(channels, ratio, round_to)
    current = channels
    for k in range(1, steps + 1):
        step_ratio = (k / float(steps)) * ratio  # Torch-Pruning's linear scheduler, same floats
        target = int(channels * (1 - step_ratio))
        if current - target <= 0 or current <= 1:
            continue
        keep = target - target % round_to
        if keep > 0:
            current = keep
    return current


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs for one sample and parameter count, via ``tp.utils.count_ops_and_params``."""
    import torch
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(model, torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
    return int(macs), int(params)


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


def output_layer(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module | None:
    """The last Conv/Linear module executed in a forward pass (the classifier head)."""
    import torch
    from torch import nn

    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order[-1] if order else None


def _importance(kind: Importance) -> Any:
    import torch_pruning as tp

    if kind is Importance.L1:
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind is Importance.L2:
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind is Importance.TAYLOR:
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


def _taylor_batches(ctx: StageContext, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few (x, y) batches for Taylor gradients: training data, or the model's own labels on
    synthetic Gaussian inputs when there is no data."""
    import numpy as np
    import torch

    if ctx.data is not None:
        n = min(_TAYLOR_SAMPLES, len(ctx.data.x_train))
        idx = np.random.default_rng(ctx.seed).permutation(len(ctx.data.x_train))[:n]
        x = torch.from_numpy(ctx.data.x_train[idx])
        y = torch.from_numpy(ctx.data.y_train[idx])
    else:
        g = torch.Generator().manual_seed(ctx.seed)
        x = torch.randn((_TAYLOR_SAMPLES, *ctx.input_shape), generator=g)
        with torch.no_grad():
            y = model(x).argmax(1)
    return [
        (x[i : i + _TAYLOR_BATCH], y[i : i + _TAYLOR_BATCH])
        for i in range(0, len(x), _TAYLOR_BATCH)
    ]


def _group_roots(pruner: Any) -> list[tuple[nn.Module, int]]:
    """(root module, out channels) of every group the pruner may prune."""
    roots: list[tuple[nn.Module, int]] = []
    for group in pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        module = group[0].dep.target.module
        ch = pruner.DG.get_out_channels(module)
        if ch is not None:
            roots.append((module, int(ch)))
    return roots


def _out_channels(module: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "hidden_size"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    raise CandidateError("prune", f"cannot read the channel count of {type(module).__name__}")


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
        ref_out = _forward(model, example, f"model forward fails on input {shape}")
        ignored = _ignored_layers(model, config, shape)
        macs_before, params_before = count_macs_params(model, shape)
        channels: dict[str, int] = {}
        if config.ratio > 0.0:
            record: list[PrunedGroup] = []
            roots = _prune(model, example, config, ignored, ctx, type(artifact).__name__, record)
            channels = _checked_channels(model, roots, config)
            out = _forward(model, example, "pruned model forward fails")
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


def _forward(model: nn.Module, x: torch.Tensor, failure: str) -> torch.Tensor:
    """``model(x)`` without gradients; CandidateError("prune", "<failure>: <reason>")."""
    import torch

    try:
        with torch.no_grad():
            return model(x)
    except Exception as exc:
        raise CandidateError("prune", f"{failure}: {exc}") from exc


def _ignored_layers(
    model: nn.Module, config: PruneConfig, shape: tuple[int, ...]
) -> list[nn.Module]:
    """The output layer and the configured ``ignored_layers``, as modules of ``model``."""
    names = dict(model.named_modules())
    head = output_layer(model, shape)
    ignored = [head] if head is not None else []
    for n in config.ignored_layers:
        if n not in names:
            raise CandidateError("prune", f"ignored layer {n!r} is not a module of the model")
        ignored.append(names[n])
    return ignored


def _prune(
    model: nn.Module,
    example: torch.Tensor,
    config: PruneConfig,
    ignored: list[nn.Module],
    ctx: StageContext,
    arch: str,
    record: list[PrunedGroup],
) -> list[tuple[nn.Module, int]]:
    """Prune ``model`` in place; returns the group roots with their channels before, and
    appends every group pruned to ``record`` (in order).

    Any Torch-Pruning failure becomes a CandidateError naming the architecture ``arch``.
    """
    import torch_pruning as tp
    from torch import nn

    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=_importance(config.importance),
            global_pruning=config.global_pruning,
            pruning_ratio=config.ratio,
            pruning_ratio_dict=_floor_ratios(model, config, ignored) or None,
            max_pruning_ratio=MAX_RATIO if config.global_pruning else 1.0,
            iterative_steps=config.iterative_steps,
            ignored_layers=ignored,
            round_to=config.round_to if config.round_to > 1 else None,
            forward_fn=trace_forward,
        )
        roots = _group_roots(pruner)
        batches = _taylor_batches(ctx, model) if config.importance is Importance.TAYLOR else []
        for _ in range(config.iterative_steps):
            if batches:  # Taylor importance ranks by gradients: compute them before each step
                model.zero_grad(set_to_none=True)
                for x, y in batches:
                    nn.functional.cross_entropy(model(x), y).backward()
            for group in pruner.step(interactive=True):
                record.append(PrunedGroup.of(group, pruner.DG))
                group.prune()
        model.zero_grad(set_to_none=True)
    except CandidateError:
        raise
    except Exception as exc:
        raise CandidateError(
            "prune",
            f"Torch-Pruning could not prune {arch}: {type(exc).__name__}: {exc}",
            hint="the architecture may not be traceable by DepGraph; "
            "quantization-only candidates still apply",
        ) from exc
    return roots


def _floor_ratios(model: nn.Module, config: PruneConfig, ignored: list[nn.Module]) -> dict:
    """Uniform pruning only: ``layer_ratio`` of every layer where it differs from the
    config's ratio (Torch-Pruning reads a group's ratio from any of its layers here)."""
    from torch import nn

    if config.global_pruning or config.round_to <= 1:
        return {}
    skip = {id(m) for m in ignored}
    out = {}
    for module in model.modules():
        if id(module) in skip or not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        channels = _out_channels(module)
        ratio = layer_ratio(channels, config.ratio, config.round_to)
        if ratio != config.ratio:
            out[module] = ratio
    return out


def _checked_channels(
    model: nn.Module, roots: list[tuple[nn.Module, int]], config: PruneConfig
) -> dict[str, int]:
    """Out channels of every group root after pruning, by qualified module name.

    Raises CandidateError unless each is what the config implies: uniform,
    ``expected_channels``; global, a multiple of ``round_to`` or unchanged.
    """
    module_names = {id(m): n for n, m in model.named_modules()}
    channels: dict[str, int] = {}
    for module, before in roots:
        after = _out_channels(module)
        label = module_names.get(id(module), type(module).__name__)
        channels[label] = after
        if config.global_pruning:
            ok = after == before or (after % config.round_to == 0 and 0 < after <= before)
            want = f"a multiple of {config.round_to} or {before}"
        else:
            want_n = expected_channels(
                before, config.ratio, config.round_to, config.iterative_steps
            )
            ok, want = after == want_n, str(want_n)
        if not ok:
            raise CandidateError(
                "prune", f"{label}: {after} channels after pruning {before}, expected {want}"
            )
    return channels
