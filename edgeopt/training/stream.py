"""``fit`` on a streamed source (an image folder): training batches decoded as each step asks
for them, by the same seeded index lists an in-memory split is sliced with, and validation on
the source's fixed seeded subset (``edgeopt.data.eval_batches``), one batch at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data import DataSource, eval_batches
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
        x, _ = self.source.subset("train", NOISE_SAMPLES, seed)
        return float(x.std()) if len(x) else 1.0

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training samples at ``idx``, decoded now (an unreadable file is left out)."""
        import torch

        x, y = self.source.take("train", idx.tolist())  # type: ignore[attr-defined]
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)

    def val_accuracy(self, model: nn.Module) -> float:
        """Top-1 accuracy of ``model`` (as it is: the caller sets eval mode) on the source's
        scoring subset of the validation split."""
        import torch

        hits = total = 0
        for x, y in eval_batches(self.source, "val"):
            logits = predict(model, torch.from_numpy(np.ascontiguousarray(x, np.float32)))
            hits += int((logits.argmax(1).numpy() == y).sum())
            total += len(y)
        return hits / total if total else 0.0
