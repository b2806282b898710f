"""A model's main block stack: the ``nn.ModuleList``/``nn.Sequential`` of at least
``MIN_BLOCKS`` modules of one class, each run once per forward and returning a tensor of its
first input's shape (a transformer's encoder blocks, a stack of residual blocks); of several,
the one with the most parameters. Depth pruning removes its blocks
(``stages.prune_depth``), hidden-state distillation matches their outputs
(``training.hidden``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeopt.training.batch import Batch, Inputs, example, forward
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    from torch import nn

MIN_BLOCKS = 3
"""A stack of fewer blocks is not a depth to prune (a ResNet stage of two blocks)."""


@dataclass(frozen=True)
class BlockStack:
    """The model's main block stack: the container's qualified name and its block count."""

    name: str
    count: int


def _stacks(model: nn.Module) -> dict[str, list[nn.Module]]:
    from torch import nn

    out: dict[str, list[nn.Module]] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList | nn.Sequential):
            continue
        kids = list(mod.children())
        if len(kids) < MIN_BLOCKS or len({type(k) for k in kids}) != 1:
            continue
        if not any(True for _ in kids[0].parameters()):
            continue
        out[name] = kids
    return out


def find_block_stack(model: nn.Module, x: Batch) -> BlockStack | None:
    """The model's main block stack (see the module docstring), found by one forward pass of
    ``x`` with hooks; None when the model has none."""
    import torch

    stacks = _stacks(model)
    if not stacks:
        return None
    seen: dict[int, list[bool]] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        first = args[0] if args else None
        same = (
            isinstance(first, torch.Tensor)
            and isinstance(out, torch.Tensor)
            and out.shape == first.shape
            and out.dtype == first.dtype
        )
        seen.setdefault(id(mod), []).append(bool(same))

    kids = [k for ks in stacks.values() for k in ks]
    handles = [k.register_forward_hook(hook) for k in kids]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            forward(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    eligible = {
        name: ks for name, ks in stacks.items() if all(seen.get(id(k)) == [True] for k in ks)
    }
    if not eligible:
        return None
    name = max(eligible, key=lambda n: sum(p.numel() for k in eligible[n] for p in k.parameters()))
    return BlockStack(name, len(eligible[name]))


def block_stack(model: nn.Module, inputs: Inputs) -> BlockStack | None:
    """``find_block_stack`` on one example of ``inputs`` (``batch.example``); None also when
    that forward fails (the pruning pre-flight says why)."""
    try:
        return find_block_stack(model, example(inputs, module_device(model)))
    except Exception:  # noqa: BLE001 - a probe: the pre-flight reports a broken forward
        return None


def container_of(model: nn.Module, name: str) -> Any:
    """The stack's container module in ``model`` (``name`` "" is the model itself)."""
    return model.get_submodule(name) if name else model
