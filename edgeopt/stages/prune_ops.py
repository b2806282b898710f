"""The Torch-Pruning mechanics behind ``PruneStage.apply``: importance criteria, Taylor
gradients, the pruner run in place, the per-layer floor ratios for rounded channel counts,
and the checks that each group kept the channels its config implies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.stages.attention import (
    AttentionPruning,
    AttentionSite,
    expected_width,
    fix_attributes,
    projections_of,
)
from edgeopt.stages.prune_attention import pruner_kwargs
from edgeopt.stages.prune_config import (
    MAX_RATIO,
    Importance,
    PruneConfig,
    expected_channels,
    layer_ratio,
)
from edgeopt.stages.prune_trace import PrunedGroup, trace_forward, unwrapped_parameters
from edgeopt.training.batch import Batch, Inputs, example, forward, synthetic, take, tensors, to
from edgeopt.training.device import hooked_forward, module_device

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.stages.base import StageContext

TAYLOR_SAMPLES = 128
"""Training samples (or synthetic inputs) whose gradients rank channels for Taylor importance."""
TAYLOR_BATCH = 64


def count_macs_params(model: nn.Module, input_shape: Inputs) -> tuple[int, int]:
    """MACs for one sample (``batch.example``) and parameter count, via
    ``tp.utils.count_ops_and_params``."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        x = example(input_shape, module_device(model))
        macs, params = tp.utils.count_ops_and_params(model, x)
    finally:
        model.train(was_training)
    return int(macs), int(params)


def output_layer(model: nn.Module, input_shape: Inputs) -> nn.Module | None:
    """The last Conv/Linear module executed in a forward pass (the classifier head)."""
    from torch import nn

    order: list[nn.Module] = []
    convs = [m for m in model.modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    hooked_forward(model, input_shape, convs, lambda mod, _i, _o: order.append(mod))
    return order[-1] if order else None


def importance_of(kind: Importance) -> Any:
    """The Torch-Pruning importance criterion for ``kind``."""
    import torch_pruning as tp

    if kind is Importance.L1:
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind is Importance.L2:
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind is Importance.TAYLOR:
        return tp.importance.GroupTaylorImportance()
    return tp.importance.BNScaleImportance()


def taylor_batches(ctx: StageContext, model: nn.Module) -> list[tuple[Batch, torch.Tensor]]:
    """A few (x, y) batches for Taylor gradients: training data, or the model's own labels on
    synthetic inputs (``batch.synthetic``) when there is no data."""
    import torch

    device = module_device(model)
    if ctx.data is not None:
        xs, ys = ctx.data.subset("train", TAYLOR_SAMPLES, ctx.seed)
        x, y = to(tensors(xs), device), torch.from_numpy(ys).to(device)
    else:
        g = torch.Generator().manual_seed(ctx.seed)  # on the CPU: the same draw on any device
        x = to(synthetic(ctx.model_inputs, TAYLOR_SAMPLES, g), device)
        with torch.no_grad():
            y = forward(model, x).argmax(1)
    return [
        (take(x, slice(i, i + TAYLOR_BATCH)), y[i : i + TAYLOR_BATCH])
        for i in range(0, len(y), TAYLOR_BATCH)
    ]


def group_roots(pruner: Any) -> list[tuple[nn.Module, int]]:
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


def out_channels(module: nn.Module) -> int:
    """Output channels of a Conv/Linear/RNN-like module; CandidateError("prune") otherwise."""
    for attr in ("out_channels", "out_features", "hidden_size"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    raise CandidateError("prune", f"cannot read the channel count of {type(module).__name__}")


def forward_checked(model: nn.Module, x: Batch, failure: str) -> torch.Tensor:
    """``model(x)`` (``batch.forward``) without gradients; CandidateError("prune",
    "<failure>: <reason>")."""
    import torch

    try:
        with torch.no_grad():
            return forward(model, x)
    except Exception as exc:
        raise CandidateError("prune", f"{failure}: {exc}") from exc


def ignored_layers_of(model: nn.Module, config: PruneConfig, shape: Inputs) -> list[nn.Module]:
    """The output layer and the configured ``ignored_layers``, as modules of ``model``."""
    names = dict(model.named_modules())
    head = output_layer(model, shape)
    ignored = [head] if head is not None else []
    for n in config.ignored_layers:
        if n not in names:
            raise CandidateError("prune", f"ignored layer {n!r} is not a module of the model")
        ignored.append(names[n])
    return ignored


def prune_in_place(
    model: nn.Module,
    example: Batch,
    config: PruneConfig,
    ignored: list[nn.Module],
    ctx: StageContext,
    arch: str,
    record: list[PrunedGroup],
    sites: list[AttentionSite] | None = None,
) -> list[tuple[nn.Module, int]]:
    """Prune ``model`` in place; returns the group roots with their channels before, and
    appends every group pruned to ``record`` (in order). With attention ``sites``,
    Torch-Pruning is told their heads (``prune_attention.pruner_kwargs``) and their
    attributes are fixed after each step (``attention.fix_attributes``).

    Any Torch-Pruning failure becomes a CandidateError naming the architecture ``arch``.
    """
    import torch_pruning as tp
    from torch import nn

    sites = sites or []
    heads_kwargs, head_ratios = pruner_kwargs(model, config, sites)
    ratios = {**floor_ratios(model, config, ignored + projections_of(model, sites)), **head_ratios}
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=importance_of(config.importance),
            global_pruning=config.global_pruning,
            pruning_ratio=config.ratio,
            pruning_ratio_dict=ratios or None,
            max_pruning_ratio=MAX_RATIO if config.global_pruning else 1.0,
            iterative_steps=config.iterative_steps,
            ignored_layers=ignored,
            round_to=config.round_to if config.round_to > 1 else None,
            forward_fn=trace_forward,
            unwrapped_parameters=unwrapped_parameters(model),
            **heads_kwargs,
        )
        roots = group_roots(pruner)
        batches = taylor_batches(ctx, model) if config.importance is Importance.TAYLOR else []
        for _ in range(config.iterative_steps):
            if batches:  # Taylor importance ranks by gradients: compute them before each step
                model.zero_grad(set_to_none=True)
                for x, y in batches:
                    nn.functional.cross_entropy(forward(model, x), y).backward()
            for group in pruner.step(interactive=True):
                record.append(PrunedGroup.of(group, pruner.DG))
                group.prune()
            fix_attributes(model, sites, pruner.num_heads)
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


def floor_ratios(model: nn.Module, config: PruneConfig, ignored: list[nn.Module]) -> dict:
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
        channels = out_channels(module)
        ratio = layer_ratio(channels, config.ratio, config.round_to)
        if ratio != config.ratio:
            out[module] = ratio
    return out


def checked_channels(
    model: nn.Module,
    roots: list[tuple[nn.Module, int]],
    config: PruneConfig,
    sites: list[AttentionSite] | None = None,
) -> dict[str, int]:
    """Out channels of every group root after pruning, by qualified module name.

    Raises CandidateError unless each is what the config implies: a q/k/v projection of an
    attention site, whole heads or dims (``attention.expected_width``); uniform,
    ``expected_channels``; global, a multiple of ``round_to`` or unchanged.
    """
    module_names = {id(m): n for n, m in model.named_modules()}
    site_of = {p: s for s in sites or [] for p in s.projections}
    channels: dict[str, int] = {}
    for module, before in roots:
        after = out_channels(module)
        label = module_names.get(id(module), type(module).__name__)
        channels[label] = after
        if label in site_of and config.attention is not AttentionPruning.NONE:
            want_n = expected_width(site_of[label], before, config.attention, config.head_ratio)
            ok, want = after == want_n, f"{want_n} ({config.attention.value})"
        elif config.global_pruning:
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
