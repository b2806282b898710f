"""Torch batches of any model's inputs: one tensor for a single float input (unchanged), a
tuple of tensors in the model's input order for a multi-input one (from a structured sample
array, see ``edgeopt.inputs``). Every torch forward over data goes through these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

Batch: TypeAlias = "torch.Tensor | tuple[torch.Tensor, ...]"


def tensors(x: np.ndarray) -> Batch:
    """``x`` as torch: a plain array becomes one tensor, a structured array a tuple with one
    contiguous tensor per field (field order = the model's input order)."""
    import torch

    if x.dtype.names is None:
        return torch.from_numpy(np.ascontiguousarray(x))
    return tuple(torch.from_numpy(np.ascontiguousarray(x[f])) for f in x.dtype.names)


def take(x: Batch, idx: Any) -> Batch:
    """The samples ``idx`` (an index tensor, slice or array) of batch ``x``."""
    if isinstance(x, tuple):
        return tuple(t[idx] for t in x)
    return x[idx]


def to(x: Batch, device: Any) -> Batch:
    """Batch ``x`` on ``device``."""
    if isinstance(x, tuple):
        return tuple(t.to(device) for t in x)
    return x.to(device)


def size(x: Batch) -> int:
    """The number of samples in batch ``x``."""
    return int((x[0] if isinstance(x, tuple) else x).shape[0])


def forward(model: nn.Module, x: Batch) -> Any:
    """``model`` on batch ``x``: ``model(x)``, or ``model(*x)`` for a multi-input batch."""
    return model(*x) if isinstance(x, tuple) else model(x)
