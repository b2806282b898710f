"""``fit`` on a streamed source (an image folder): training batches decoded as each step asks
for them, by the same seeded index lists an in-memory split is sliced with, and validation on
the source's fixed seeded subset (``edgeopt.data.eval_batches``), one batch at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data import DataSource, eval_batches
from edgeopt.training.device import module_device
from edgeopt.training.evaluate import predict

if TYPE_CHECKING:
    import torch
    from torch import nn

NOISE_SAMPLES = 256
"""Training samples (seeded) whose spread scales the augmentation noise of a streamed split."""


@dataclass(frozen=True)
class Streamed:
    """The training and validation splits of ``source``, read on demand."""

    source: DataSource

    @property
    def n_train(self) -> int:
        return self.source.count("train")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.input_shape)

    def input_std(self, seed: int) -> float:
        """The standard deviation of a seeded ``NOISE_SAMPLES`` of the training inputs."""
        n, total, squares = 0, 0.0, 0.0  # summed batch by batch: never the whole sample
        for x, _ in self.source.batches("train", n=NOISE_SAMPLES, seed=seed, batch=32):  # type: ignore[call-arg]
            x64 = x.astype(np.float64)
            n, total, squares = n + x64.size, total + x64.sum(), squares + (x64**2).sum()
        return math.sqrt(max(0.0, squares / n - (total / n) ** 2)) if n else 1.0

    def take(
        self, idx: torch.Tensor, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples at ``idx``, decoded now (an unreadable file is left out), on
        ``device``."""
        import torch

        x, y = self.source.take("train", idx.tolist())  # type: ignore[attr-defined]
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
        return xt, torch.from_numpy(y).to(device)

    def val_accuracy(self, model: nn.Module) -> float:
        """Top-1 accuracy of ``model`` (as it is: the caller sets eval mode) on the source's
        scoring subset of the validation split."""
        import torch

        hits: list[torch.Tensor] = []  # one flag per sample: averaged as an in-memory split is
        for x, y in eval_batches(self.source, "val"):
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(module_device(model))
            logits = predict(model, xt)
            hits.append(logits.argmax(1) == torch.from_numpy(y).to(logits.device))
        return float(torch.cat(hits).float().mean()) if hits else 0.0
