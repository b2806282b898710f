"""Training-time augmentation of ``fit``'s batches (never of scoring, calibration or the
evaluation subsets): random shifts plus Gaussian noise for in-memory arrays and Datasets
(``augment_batch``); for an image folder, its ``Augmentation`` (random resized crop, horizontal
flip) plus the same noise (``augment_images``).

Every random number is drawn from ``fit``'s CPU generator, a fixed count per batch, so a seed
draws the same augmentations on every device; the pixels are moved on the batch's device. The
crop and flip run on the normalised batch: bilinear resampling is a weighted mean with weights
summing to one, and the padding mode is ``border`` (the edge pixel), so they commute with the
per-channel ``(x - mean) / std``. The crop window always lies inside the image; padding only
reaches the outer half pixel, where ``border`` repeats the edge as PIL's and torchvision's
resizing do (``zeros`` would blend in 0, the mean colour after normalising: darkened or
lightened edges; ``reflection`` gives the same values here, at more cost)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from edgeopt.data.augmentation import Augmentation

if TYPE_CHECKING:
    import torch

MAX_SHIFT_PX = 2
NOISE_STD = 0.1
"""Gaussian augmentation noise, as a fraction of the training inputs' standard deviation."""
CPU = "cpu"
"""Where the draws are made: ``gen`` is a CPU generator, so a seed draws the same on every
device; the theta and the flags move to the batch's device."""
CROP_AREA = (0.35, 1.0)
"""The random resized crop's share of the image's area (torchvision's default is 0.08-1; an
edge-deployed classifier's objects fill less of a 224 px frame than ImageNet's do, and few
fine-tuning steps learn little from 8 % crops)."""
CROP_RATIO = (3 / 4, 4 / 3)
"""The crop's aspect ratio (width / height) range, drawn log-uniformly, as torchvision."""
CROP_TRIES = 10
"""Boxes drawn per sample; the first that fits the image is taken (none: the whole image)."""


def augment_training(
    x: torch.Tensor, gen: torch.Generator, noise_std: float, images: Augmentation | None
) -> torch.Tensor:
    """``x`` augmented for a training step: by ``images`` (an image folder's setting) with
    ``augment_images``, else (None) with ``augment_batch``'s shifts and noise."""
    if images is None:
        return augment_batch(x, gen, noise_std)
    return augment_images(x, gen, noise_std, images)


def augment_images(
    x: torch.Tensor, gen: torch.Generator, noise_std: float, how: Augmentation
) -> torch.Tensor:
    """``x`` (N, C, H, W, normalised) with, per sample, a random resized crop back to H x W
    (``how.crop``: area ``CROP_AREA``, aspect ratio ``CROP_RATIO``, bilinear) and a horizontal
    flip with probability 1/2 (``how.flip``), in one ``grid_sample`` for the whole batch (a
    flip alone: an exact mirror), then Gaussian noise of ``noise_std``. Anything but a 4-D
    batch is returned as is."""
    import torch
    from torch.nn import functional as F

    if x.dim() != 4:
        return x
    b, dev = x.shape[0], x.device
    flip = (
        torch.rand(b, generator=gen, device=CPU) < 0.5
        if how.flip
        else torch.zeros(b, dtype=torch.bool, device=CPU)
    )
    out = x
    if how.crop:
        fw, fh = _crop_fractions(b, x.shape[2], x.shape[3], gen)
        theta = torch.zeros(b, 2, 3, device=CPU)
        theta[:, 0, 0] = torch.where(flip, -fw, fw)  # the flip: the x scale's sign
        theta[:, 1, 1] = fh
        theta[:, 0, 2] = (1 - fw) * (
            2 * torch.rand(b, generator=gen, device=CPU) - 1
        )  # window centre
        theta[:, 1, 2] = (1 - fh) * (2 * torch.rand(b, generator=gen, device=CPU) - 1)
        grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif how.flip:
        out = torch.where(flip.to(dev)[:, None, None, None], x.flip(3), x)
    if noise_std > 0:
        out = out + noise_std * torch.randn(out.shape, generator=gen).to(dev)
    return out


def _crop_fractions(
    b: int, h: int, w: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the crop's width and height as fractions of the image's: the first of
    ``CROP_TRIES`` boxes (area and log aspect ratio uniform) that fits, else the whole image."""
    import torch

    area = CROP_AREA[0] + (CROP_AREA[1] - CROP_AREA[0]) * torch.rand(
        b, CROP_TRIES, generator=gen, device=CPU
    )
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * torch.rand(b, CROP_TRIES, generator=gen, device=CPU))
    cw = torch.sqrt(area * h * w * ratio) / w
    ch = torch.sqrt(area * h * w / ratio) / h
    fits = (cw <= 1) & (ch <= 1)
    first = fits.float().argmax(1, keepdim=True)  # the first box that fits (0 when none)
    whole = ~fits.any(1)
    fw = torch.where(whole, 1.0, cw.gather(1, first)[:, 0])
    fh = torch.where(whole, 1.0, ch.gather(1, first)[:, 0])
    return fw, fh


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
