"""Torch batches of any model's inputs: one tensor for a single float input (unchanged), a
tuple of tensors in the model's input order for a multi-input one (from a structured sample
array, see ``edgeopt.inputs``). Every torch forward over data goes through these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from edgeopt.inputs import InputSpec, ModelInputs

if TYPE_CHECKING:
    import torch
    from torch import nn

Batch: TypeAlias = "torch.Tensor | tuple[torch.Tensor, ...]"
Inputs: TypeAlias = "tuple[int, ...] | ModelInputs"
"""What a model takes: one float sample's shape (the single-input case), or its inputs."""


def model_inputs(inputs: Inputs) -> ModelInputs:
    """``inputs`` as ``ModelInputs`` (a shape is one float input)."""
    if isinstance(inputs, ModelInputs):
        return inputs
    return ModelInputs.single(tuple(int(d) for d in inputs))


def inputs_of(x: np.ndarray) -> ModelInputs:
    """The inputs samples ``x`` hold: one float input of ``x``'s sample shape, or one input
    per field of a structured array (vocabulary unknown)."""
    if x.dtype.names is None:
        return ModelInputs.single(tuple(int(d) for d in x.shape[1:]))
    specs = []
    for name in x.dtype.names:
        sub = x.dtype.fields[name][0]  # type: ignore[index]
        dtype = "float32" if sub.base.kind == "f" else str(sub.base)
        specs.append(InputSpec.of(name, sub.shape, dtype))
    return ModelInputs(tuple(specs))


def tensors(x: np.ndarray, device: Any = "cpu") -> Batch:
    """``x`` as torch on ``device`` (host memory by default: batches move one at a time): a
    plain array becomes one float32 tensor, a structured array a tuple with one contiguous
    tensor per field (field order = the model's input order)."""
    import torch

    if x.dtype.names is None:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    return tuple(torch.from_numpy(np.ascontiguousarray(x[f])).to(device) for f in x.dtype.names)


def synthetic(inputs: Inputs, n: int, gen: torch.Generator) -> Batch:
    """``n`` stand-in samples drawn from ``gen`` (a CPU generator): standard normal for one
    float input (as always), ``ModelInputs.synthetic`` seeded from ``gen`` otherwise."""
    import torch

    spec = model_inputs(inputs)
    if spec.is_single:
        return torch.randn((n, *spec.first_shape), generator=gen, device=gen.device)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device))
    return tensors(spec.synthetic(n, seed))


def example(inputs: Inputs, device: Any = "cpu", n: int = 1) -> Batch:
    """A fixed batch of ``n`` for probing a model (a trace, a hook pass, a MAC count): zeros
    for one float input (as always), ``ModelInputs.synthetic(n, 0)`` otherwise (valid ids, a
    mask with ones)."""
    import torch

    spec = model_inputs(inputs)
    if spec.is_single:
        return torch.zeros((n, *spec.first_shape), device=device)
    return to(tensors(spec.synthetic(n, 0)), device)


def take(x: Batch, idx: Any) -> Batch:
    """The samples ``idx`` (an index tensor, slice or array) of batch ``x``."""
    if isinstance(x, tuple):
        return tuple(t[idx] for t in x)
    return x[idx]


def to(x: Batch, device: Any, non_blocking: bool = False) -> Batch:
    """Batch ``x`` on ``device``."""
    if isinstance(x, tuple):
        return tuple(t.to(device, non_blocking=non_blocking) for t in x)
    return x.to(device, non_blocking=non_blocking)


def size(x: Batch) -> int:
    """The number of samples in batch ``x``."""
    return int((x[0] if isinstance(x, tuple) else x).shape[0])


def forward(model: nn.Module, x: Batch) -> Any:
    """``model`` on batch ``x``: ``model(x)``, or ``model(*x)`` for a multi-input batch."""
    return model(*x) if isinstance(x, tuple) else model(x)


def is_float_image(inputs: Inputs) -> bool:
    """One float input of shape (C, H, W): what image augmentation applies to."""
    spec = model_inputs(inputs)
    return spec.is_single and len(spec.first_shape) == 3
