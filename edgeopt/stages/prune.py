"""Structured channel pruning with Torch-Pruning's DependencyGraph.

The pruned model really has fewer channels (smaller dense tensors, fewer MACs), not masks.
``round_to`` comes from the target profile's channel multiple; with it, the requested ratio is
not the achieved one (a layer whose kept count rounds down to 0 is left unpruned, so a higher
ratio can save *fewer* MACs), so every pruned module carries its measured MACs/params: see
``prune_report`` and ``get_prune_report``.

Per-group channel count after one-shot uniform pruning of a group with ``C`` channels (what
Torch-Pruning 1.6 computes, checked after every apply): ``k = int(C * (1 - ratio))``, then
``k -= k % round_to``; if that leaves 0 the group keeps all ``C`` channels. Iterative pruning
applies that rule per step; see ``expected_channels``.

Torch-Pruning traces the model through ``trace_forward`` (its ``forward_fn`` hook), which
rewrites two kinds of call for the trace only (the model and its values are unchanged):

- ``chunk`` and ``split`` by a size become ``split`` by a list of sizes. Torch-Pruning 1.6
  reads a split's sizes only from ``_saved_split_sizes``; a ``chunk`` node on torch 2 has
  ``_saved_split_size`` (its other branch needs ``_saved_self_sizes``, which torch 2 renamed
  ``_saved_self_sym_sizes``), so it guessed the sizes from the consumers, wrongly.
- A reshape that regroups the channel axis other than a flatten to, or unflatten from,
  (batch, features), e.g. ShuffleNet's channel shuffle ``view(n, g, c // g, h, w)`` and its
  way back, becomes an opaque op that Torch-Pruning treats as element-wise. Its reshape
  index mapping only knows flattens; on these it divided mis-inferred channel counts (a
  ``cat`` fed straight by a split output counts the split's whole input) and raised
  ZeroDivisionError building the graph.

Neither makes channel shuffles prunable: Torch-Pruning maps channels across a transpose as
if it were element-wise. The layers whose channels reach such ops must be left whole
(``prune_preflight`` finds them); and whenever a pruned group passes a channel-moving op
(``moves_channels``), ``PruneStage.apply`` checks the pruned model against the original with
the removed channels' inputs zeroed, and fails the candidate if the kept channels compute
anything else.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError, ConfigError
from edgeopt.stages.base import Phase, Stage, StageConfig, check_range

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

EQUIVALENCE_RTOL = 1e-3
"""A pruned model whose output differs from the masked original's by more than this fraction
of the largest output magnitude computes something else (see ``PruneStage.apply``)."""
REGROUP_GRAD = "_ChannelRegroupBackward"
"""The autograd node name of the opaque reshape ``trace_forward`` puts in the trace (no
Torch-Pruning keyword in it, so Torch-Pruning takes it for an element-wise op)."""
_CHANNEL_MOVING_GRADS = (
    "TransposeBackward",
    "PermuteBackward",
    "PixelShuffleBackward",
    "PixelUnshuffleBackward",
    REGROUP_GRAD,
)
"""Autograd nodes Torch-Pruning takes for element-wise ops although they move channels."""


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


def expected_channels(channels: int, ratio: float, round_to: int = 1, steps: int = 1) -> int:
    """Channels a group of ``channels`` keeps after uniform pruning at ``ratio`` in ``steps``.

    Step ``k`` targets ``int(channels * (1 - ratio * k / steps))`` kept channels, rounded down
    to a multiple of ``round_to``; a step whose rounded target is 0 leaves the group as it is
    (so with several steps an early step can prune a group the one-shot rule leaves whole).
    """
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
        kept channels computing something else (``_check_equivalent``), or when a ratio
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
            record: list[_PrunedGroup] = []
            roots = _prune(model, example, config, ignored, ctx, type(artifact).__name__, record)
            channels = _checked_channels(model, roots, config)
            out = _forward(model, example, "pruned model forward fails")
            if tuple(out.shape) != tuple(ref_out.shape):
                raise CandidateError(
                    "prune", f"pruned output shape {tuple(out.shape)} != {tuple(ref_out.shape)}"
                )
            if any(g.moves_channels for g in record):
                _check_equivalent(artifact, model, record, shape)
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
    record: list[_PrunedGroup],
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
                record.append(_PrunedGroup.of(group, pruner.DG))
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


def trace_forward(model: nn.Module, example: Any) -> Any:
    """``model(example)`` as Torch-Pruning's ``forward_fn``: under a torch-function mode that
    rewrites ``chunk``/``split`` by a size into ``split`` by sizes and makes reshapes that
    regroup the channel axis opaque (see the module docstring). Same values as
    ``model(example)``; ``example`` is a tensor, a tuple of positional inputs or a dict.
    """
    with _trace_mode()():
        if isinstance(example, dict):
            return model(**example)
        if isinstance(example, tuple | list):
            return model(*example)
        return model(example)


def build_dependency_graph(model: nn.Module, example: Any) -> Any:
    """Torch-Pruning's ``DependencyGraph`` of ``model`` traced with ``trace_forward``, as the
    prune stage builds it (gradients on, no warnings printed)."""
    import torch
    import torch_pruning as tp

    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model, example, forward_fn=trace_forward, verbose=False
        )


def moves_channels(node: Any) -> bool:
    """Whether a Torch-Pruning graph node moves channels: concatenation, split, slice,
    unbind, expand, a reshape other than a flatten of 1x1 maps, or a transpose, permute,
    pixel (un)shuffle or ``trace_forward``'s opaque regroup (element-wise to Torch-Pruning)."""
    from torch_pruning.ops import OPTYPE

    if node.type in (OPTYPE.CONCAT, OPTYPE.SPLIT, OPTYPE.SLICE, OPTYPE.UNBIND, OPTYPE.EXPAND):
        return True
    if node.type is OPTYPE.RESHAPE:
        sizes = tuple(getattr(node.grad_fn, "_saved_self_sym_sizes", ()) or ())
        return not (len(sizes) >= 2 and all(int(s) == 1 for s in sizes[2:]))
    grad = type(node.grad_fn).__name__ if node.grad_fn is not None else ""
    return grad.startswith(_CHANNEL_MOVING_GRADS)


@functools.cache
def _trace_mode() -> type:
    """The ``TorchFunctionMode`` class of ``trace_forward`` (built on first use: torch is
    imported lazily)."""
    import torch
    from torch.overrides import TorchFunctionMode

    class _ChannelRegroup(torch.autograd.Function):
        """A reshape whose autograd node Torch-Pruning files as element-wise."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
            ctx.in_shape = x.shape
            return x.reshape(shape).clone()

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            return grad.reshape(ctx.in_shape), None

    chunks = {torch.chunk, torch.Tensor.chunk}
    splits = {torch.split, torch.Tensor.split}
    reshapes = {
        torch.Tensor.view,
        torch.Tensor.view_as,
        torch.Tensor.reshape,
        torch.Tensor.reshape_as,
        torch.reshape,
        torch.Tensor.flatten,
        torch.flatten,
        torch.Tensor.unflatten,
        torch.unflatten,
    }

    class _TraceMode(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
        ) -> Any:
            kwargs = kwargs or {}
            if func in chunks or func in splits:
                sized = _sized_split(func in chunks, args, kwargs)
                if sized is not None:
                    return torch.split(*sized)
            out = func(*args, **kwargs)
            if func in reshapes and args and _regroups_channels(args[0], out):
                return _ChannelRegroup.apply(args[0], tuple(out.shape))
            return out

    return _TraceMode


def _sized_split(chunk: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``(tensor, sizes, dim)`` for a ``chunk``/``split`` call by one size on a tensor that
    requires grad; None to leave the call as it is."""
    import torch

    x = args[0] if args else None
    if len(args) > 1:
        n = args[1]
    else:
        keys = ("chunks",) if chunk else ("split_size", "split_size_or_sections")
        n = next((kwargs[k] for k in keys if k in kwargs), None)
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    if not isinstance(x, torch.Tensor) or not x.requires_grad or type(n) is not int or n <= 0:
        return None
    length = int(x.shape[dim])
    if length == 0:
        return None
    size = -(-length // n) if chunk else n
    return x, [min(size, length - s) for s in range(0, length, size)], dim


def _regroups_channels(x: Any, out: Any) -> bool:
    """A grad-tracked reshape that keeps the batch axis and changes the channel axis (dim 1),
    other than a flatten to, or an unflatten from, (batch, features)."""
    import math

    import torch

    if not (isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and out.requires_grad):
        return False
    if x.dim() < 2 or out.dim() < 2 or x.dtype != out.dtype or x.numel() != out.numel():
        return False
    if x.shape[0] != out.shape[0] or x.shape[1] == out.shape[1]:
        return False
    if out.dim() == 2 and out.shape[1] == math.prod(x.shape[1:]):
        return False
    return not (x.dim() == 2 and x.shape[1] == math.prod(out.shape[1:]))


@dataclass(frozen=True)
class _PrunedGroup:
    """One pruned group as ``(module, OPTYPE, out side, positions)`` per member, positions
    in the member's channels at the time (before this group), and whether any member moves
    channels."""

    members: tuple[tuple[Any, Any, bool, tuple[int, ...]], ...]
    moves_channels: bool

    @classmethod
    def of(cls, group: Any, graph: Any) -> _PrunedGroup:
        """Record ``group`` (a Torch-Pruning ``Group``) of ``graph`` before it is pruned."""
        members = []
        for dep, idxs in group:
            node = dep.target
            positions = tuple(sorted({int(getattr(i, "idx", i)) for i in idxs}))
            out_side = bool(graph.is_out_channel_pruning_fn(dep.handler))
            members.append((node.module, node.type, out_side, positions))
        return cls(tuple(members), any(moves_channels(dep.target) for dep, _ in group))


def _masked_columns(
    record: list[_PrunedGroup], names: dict[int, str], originals: dict[str, nn.Module]
) -> dict[str, list[int]] | None:
    """Per dense Conv/Linear (by name) whose input channels were pruned: the original input
    positions removed. None when a pruned member's channels are not independent of each
    other (norms other than BN, grouped convs, attention, parameters...): then zeroing the
    removed channels is not what pruning them does, and there is nothing to compare."""
    from torch_pruning.ops import OPTYPE

    per_channel = (
        OPTYPE.BN,
        OPTYPE.DEPTHWISE_CONV,
        OPTYPE.ELEMENTWISE,
        OPTYPE.CONCAT,
        OPTYPE.SPLIT,
        OPTYPE.SLICE,
        OPTYPE.UNBIND,
        OPTYPE.RESHAPE,
    )
    remaining: dict[str, list[int]] = {}
    for group in record:
        for module, optype, out_side, positions in group.members:
            if optype in per_channel:
                continue
            dense = optype is OPTYPE.LINEAR or (
                optype is OPTYPE.CONV and getattr(module, "groups", 1) == 1
            )
            if not dense or id(module) not in names:
                return None
            if out_side:
                continue
            name = names[id(module)]
            if name not in remaining:
                remaining[name] = list(range(int(originals[name].weight.shape[1])))
            drop = set(positions)
            remaining[name] = [c for j, c in enumerate(remaining[name]) if j not in drop]
    return {
        name: sorted(set(range(int(originals[name].weight.shape[1]))) - set(kept))
        for name, kept in remaining.items()
    }


def _check_equivalent(
    original: nn.Module, pruned: nn.Module, record: list[_PrunedGroup], shape: tuple[int, ...]
) -> None:
    """Compare ``pruned`` with a copy of ``original`` whose dense layers ignore the removed
    input channels (their weight columns zeroed), on two seeded Gaussian samples.

    Pruning removes channels and nothing else, so the two must agree (within
    ``EQUIVALENCE_RTOL``); a misplaced channel index (a split, concatenation or shuffle
    Torch-Pruning mapped wrongly) makes them differ: CandidateError. Skipped (debug log)
    when the groups hold members whose channels interact or the model does not take float
    inputs.
    """
    import torch

    reference = copy.deepcopy(original).eval()
    originals = dict(reference.named_modules())
    names = {id(m): n for n, m in pruned.named_modules()}
    columns = _masked_columns(record, names, originals)
    if columns is None:
        log.debug("prune: groups hold channel-mixing members; equivalence not checked")
        return
    x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            for name, cols in columns.items():
                originals[name].weight[:, cols] = 0
            want = _tensors(reference(x))
            got = _tensors(pruned(x))
    except Exception as exc:  # e.g. integer inputs: the forward on zeros passed already
        log.debug("prune: equivalence not checked: %s", exc)
        return
    scale = max((float(w.abs().max()) for w in want if w.numel()), default=0.0)
    diff = float("inf")
    if [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]:
        diff = max(
            (float((g - w).abs().max()) for g, w in zip(got, want, strict=True) if w.numel()),
            default=0.0,
        )
    if not diff <= EQUIVALENCE_RTOL * max(scale, 1e-12):
        raise CandidateError(
            "prune",
            f"the pruned model computes something else for the kept channels (output differs "
            f"by {diff:.3g}, outputs up to {scale:.3g}): Torch-Pruning mis-mapped channels "
            "through a split, concatenation, reshape or shuffle",
            hint="leave the layers whose channels reach those ops whole (prune.ignored_layers; "
            "the prune pre-flight finds them)",
        )


def _tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor, or nested tuples/lists/dicts of them)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, tuple | list):
        return [t for item in out for t in _tensors(item)]
    return []
