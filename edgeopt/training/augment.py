"""Training-time augmentation of ``fit``'s batches (never of scoring, calibration or the
evaluation subsets): random shifts plus Gaussian noise for in-memory arrays and Datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAX_SHIFT_PX = 2
NOISE_STD = 0.1
"""Gaussian augmentation noise, as a fraction of the training inputs' standard deviation."""


def augment_batch(x: torch.Tensor, gen: torch.Generator, noise_std: float) -> torch.Tensor:
    """Random per-sample shifts of up to ``MAX_SHIFT_PX`` (zero fill) plus Gaussian noise."""
    import torch
    from torch.nn import functional as F

    if x.dim() != 4 or min(x.shape[2:]) < 4:
        return x
    b, c, h, w = x.shape
    s = MAX_SHIFT_PX
    padded = F.pad(x, (s, s, s, s))
    dev = x.device  # ``gen`` is a CPU generator: draws there (the same stream), then move
    dy = torch.randint(-s, s + 1, (b,), generator=gen).to(dev)
    dx = torch.randint(-s, s + 1, (b,), generator=gen).to(dev)
    rows = (torch.arange(h, device=dev)[None, :] + s + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w, device=dev)[None, :] + s + dx[:, None])[:, None, None, :]
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    out = padded[bi, ci, rows, cols]
    if noise_std > 0:
        out = out + noise_std * torch.randn(out.shape, generator=gen).to(dev)
    return out
