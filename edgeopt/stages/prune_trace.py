"""Tracing a model for Torch-Pruning, and checking what pruning did to it.

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
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeopt.errors import CandidateError
from edgeopt.training.batch import Inputs, forward, synthetic, to
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

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
    prune stage builds it (gradients on, ``unwrapped_parameters`` named, no warnings printed)."""
    import torch
    import torch_pruning as tp

    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(
            model,
            example,
            forward_fn=trace_forward,
            unwrapped_parameters=unwrapped_parameters(model),
            verbose=False,
        )


def unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """The parameters of ``model`` that no layer Torch-Pruning prunes owns (a ViT's class
    token and position embedding, a layer scale), each with the dim that holds its channels:
    the last one longer than 1 (the embedding width of a ``(1, tokens, dim)`` position
    embedding, the channels of a ``(C, 1, 1)`` layer scale). Named to Torch-Pruning's
    ``unwrapped_parameters``, they are pruned with the channels they are added to, as its
    default does, without its warning on every prune. Parameters of size 1 in every dim
    hold no channel: Torch-Pruning leaves them alone either way."""
    import torch_pruning as tp

    boxed = tp.pruner.function.PrunerBox
    wrapped = {
        id(p)
        for m in model.modules()
        if (kind := tp.ops.module2type(m)) in boxed and kind is not tp.ops.OPTYPE.ELEMENTWISE
        for p in m.parameters()
    }
    out: list[tuple[nn.Parameter, int]] = []
    for param in model.parameters():
        dims = [i for i, size in enumerate(param.shape) if size > 1]
        if id(param) not in wrapped and dims:
            out.append((param, dims[-1]))
    return out


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
class PrunedGroup:
    """One pruned group as ``(module, OPTYPE, out side, positions)`` per member, positions
    in the member's channels at the time (before this group), and whether any member moves
    channels."""

    members: tuple[tuple[Any, Any, bool, tuple[int, ...]], ...]
    moves_channels: bool

    @classmethod
    def of(cls, group: Any, graph: Any) -> PrunedGroup:
        """Record ``group`` (a Torch-Pruning ``Group``) of ``graph`` before it is pruned."""
        members = []
        for dep, idxs in group:
            node = dep.target
            positions = tuple(sorted({int(getattr(i, "idx", i)) for i in idxs}))
            out_side = bool(graph.is_out_channel_pruning_fn(dep.handler))
            members.append((node.module, node.type, out_side, positions))
        return cls(tuple(members), any(moves_channels(dep.target) for dep, _ in group))


def _masked_columns(
    record: list[PrunedGroup], names: dict[int, str], originals: dict[str, nn.Module]
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


def check_equivalent(
    original: nn.Module, pruned: nn.Module, record: list[PrunedGroup], shape: Inputs
) -> None:
    """Compare ``pruned`` with a copy of ``original`` whose dense layers ignore the removed
    input channels (their weight columns zeroed), on two seeded samples (``batch.synthetic``:
    Gaussian for one float input).

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
    # drawn on the CPU (the same inputs on any device), run where the models are
    gen = torch.Generator().manual_seed(0)
    x = to(synthetic(shape, 2, gen), module_device(pruned))
    try:
        with torch.no_grad():
            for name, cols in columns.items():
                originals[name].weight[:, cols] = 0
            want = _tensors(forward(reference, x))
            got = _tensors(forward(pruned, x))
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
