"""Bounded training memory: a fine-tune step whose batch would hold more activations than
``ACTIVATION_BUDGET_BYTES`` runs as several micro-batches whose gradients add up to the
batch's (gradient accumulation), so the batch size the search draws never decides the
memory a trial needs.

A training step keeps every layer's output for the backward pass: its memory grows with
batch x resolution^2, not with the data set's size. MobileNetV2 x0.5 at 224x224 keeps
40.5 MB of layer outputs per sample; a step of 128 samples peaked at 6.0 GB resident here,
64 samples at 3.2 GB (``benchmarks/image_folder.py memory``: a search whose batches reached
128 peaked at 4.8 GB). Small inputs (32x32) never reach the budget, so their steps are the
same single batch as always. The loss of each micro-batch is weighted by its share of the
batch, so the summed gradient is the batch's; BatchNorm's statistics come from each
micro-batch (as in any accumulation), which is the one numerical difference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edgeopt.training.batch import Inputs
from edgeopt.training.device import hooked_forward

if TYPE_CHECKING:
    from torch import nn

ACTIVATION_BUDGET_BYTES = 1 << 29
"""Layer outputs one micro-batch may keep for its backward pass (512 MiB). At 1 GiB a
search over an image folder at 224x224 peaked at 3.3 GB PSS for its process tree
(``benchmarks/image_folder.py memory``; ``throughput`` measures what the smaller
micro-batches cost in samples per second)."""
SAVED_FACTOR = 1.25
"""Resident memory of a training step per byte of layer outputs: measured 1.09 on
MobileNetV2 x0.5 at 224x224 (batches of 16 to 128), with room for other architectures."""
MIN_MICRO = 2
"""BatchNorm in train mode needs two samples."""


def activation_bytes_per_sample(model: nn.Module, input_shape: Inputs) -> int:
    """Bytes of every leaf module's outputs for one sample of ``input_shape`` (no batch dim;
    or a multi-input model's ``ModelInputs``),
    from one forward pass in eval mode without gradients on the model's device."""
    import torch

    total = 0

    def count(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooked_forward(model, input_shape, leaves, count)
    return total


def micro_batch_size(
    per_sample_bytes: int, budget_bytes: int = ACTIVATION_BUDGET_BYTES
) -> int | None:
    """The most samples one micro-batch may hold under ``budget_bytes`` (at least
    ``MIN_MICRO``), or None when any batch fits (nothing measured)."""
    if per_sample_bytes <= 0:
        return None
    return max(MIN_MICRO, math.floor(budget_bytes / (per_sample_bytes * SAVED_FACTOR)))


def chunks(n: int, micro: int | None) -> int:
    """How many micro-batches a batch of ``n`` samples is split into (even sizes, so none
    falls under ``MIN_MICRO`` when the batch itself has that many)."""
    if micro is None or n <= micro:
        return 1
    return min(math.ceil(n / micro), max(1, n // MIN_MICRO))
