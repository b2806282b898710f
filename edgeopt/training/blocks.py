"""A model's main block stack: the ``nn.ModuleList``/``nn.Sequential`` of at least
``MIN_BLOCKS`` modules of one class, each run once per forward and returning a tensor of its
first input's shape (a transformer's encoder blocks, a stack of residual blocks); of several,
the one with the most parameters. Depth pruning removes its blocks
(``stages.prune_depth``), hidden-state distillation matches their outputs
(``training.hidden``).

A CNN's stack is rarely all alike: MobileNetV2's ``features`` runs a stem conv, then inverted
residual blocks of which only the stride-1, same-width ones return their input's shape (the
ones with a residual connection), then a last conv. ``partial=True`` also accepts such a
container: its removable blocks are its composite children of one class that keep their
input's shape, at least ``MIN_BLOCKS`` of them (``BlockStack.positions``); dropping one passes
its input on, as in a transformer. Only depth pruning asks for it: hidden-state distillation
compares every block's output, which width pruning changes in a CNN."""

from __future__ import annotations

from collections import Counter
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
    """The model's main block stack: the container's qualified name and its blocks' positions
    in it (every child of a uniform stack; the removable ones of a partial stack)."""

    name: str
    positions: tuple[int, ...]

    @property
    def count(self) -> int:
        """How many blocks the stack holds."""
        return len(self.positions)


def _containers(model: nn.Module) -> dict[str, list[nn.Module]]:
    from torch import nn

    out: dict[str, list[nn.Module]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList | nn.Sequential):
            kids = list(mod.children())
            if len(kids) >= MIN_BLOCKS:
                out[name] = kids
    return out


def _has_params(mod: nn.Module) -> bool:
    return any(True for _ in mod.parameters())


def _uniform(kids: list[nn.Module], keeps: list[bool]) -> tuple[int, ...] | None:
    """Every child one class with parameters, each keeping its input's shape: all of them."""
    if len({type(k) for k in kids}) != 1 or not _has_params(kids[0]) or not all(keeps):
        return None
    return tuple(range(len(kids)))


def _partial(kids: list[nn.Module], keeps: list[bool]) -> tuple[int, ...] | None:
    """The composite children of the most common class among those that keep their input's
    shape, when there are at least ``MIN_BLOCKS``."""
    fit = [
        i
        for i, (k, keep) in enumerate(zip(kids, keeps, strict=True))
        if keep and _has_params(k) and any(True for _ in k.children())
    ]
    if not fit:
        return None
    kind, n = Counter(type(kids[i]) for i in fit).most_common(1)[0]
    return tuple(i for i in fit if type(kids[i]) is kind) if n >= MIN_BLOCKS else None


def find_block_stack(model: nn.Module, x: Batch, *, partial: bool = False) -> BlockStack | None:
    """The model's main block stack (see the module docstring), found by one forward pass of
    ``x`` with hooks; with ``partial``, a partial stack where the model has no uniform one;
    None when the model has none."""
    import torch

    containers = _containers(model)
    if not containers:
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

    kids = {id(k): k for ks in containers.values() for k in ks}
    handles = [k.register_forward_hook(hook) for k in kids.values()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            forward(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    keeps = {n: [seen.get(id(k)) == [True] for k in ks] for n, ks in containers.items()}
    for rule in (_uniform, _partial) if partial else (_uniform,):
        found = {n: rule(ks, keeps[n]) for n, ks in containers.items()}
        eligible = {n: ix for n, ix in found.items() if ix is not None}
        if eligible:
            name = max(
                eligible,
                key=lambda n: sum(
                    p.numel() for i in eligible[n] for p in containers[n][i].parameters()
                ),
            )
            return BlockStack(name, eligible[name])
    return None


def block_stack(model: nn.Module, inputs: Inputs, *, partial: bool = False) -> BlockStack | None:
    """``find_block_stack`` on one example of ``inputs`` (``batch.example``); None also when
    that forward fails (the pruning pre-flight says why)."""
    try:
        return find_block_stack(model, example(inputs, module_device(model)), partial=partial)
    except Exception:  # noqa: BLE001 - a probe: the pre-flight reports a broken forward
        return None


def container_of(model: nn.Module, name: str) -> Any:
    """The stack's container module in ``model`` (``name`` "" is the model itself)."""
    return model.get_submodule(name) if name else model
