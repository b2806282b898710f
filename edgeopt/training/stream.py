"""``fit`` on a streamed source (an image folder): training batches read through a DataLoader
(``edgeopt.data.loader``; the source's ``loader_workers`` decode ahead of the step) by the same
seeded index lists an in-memory split is sliced with, and validation on the source's fixed
seeded subset (``edgeopt.data.eval_batches``), one batch at a time. The time spent blocked
waiting for a batch is summed (``Waits``): the data-loading share of a fine-tune."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from edgeopt.data import DataSource, eval_batches
from edgeopt.data.augmentation import Augmentation
from edgeopt.data.loader import loader_for
from edgeopt.training.device import module_device
from edgeopt.training.evaluate import predict

if TYPE_CHECKING:
    import torch
    from torch import nn

NOISE_SAMPLES = 256
"""Training samples (seeded) whose spread scales the augmentation noise of a streamed split."""

T = TypeVar("T")


class Waits:
    """Seconds spent blocked in ``next()`` on the iterators passed through ``through``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def through(self, items: Iterable[T]) -> Iterator[T]:
        it = iter(items)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t0
            yield item


@dataclass(frozen=True)
class Streamed:
    """The training and validation splits of ``source``, read on demand; ``pin``: batches in
    page-locked memory (training on a CUDA device)."""

    source: DataSource
    pin: bool = False
    waits: Waits = field(default_factory=Waits)

    @property
    def n_train(self) -> int:
        return self.source.count("train")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.input_shape)

    @property
    def augmentation(self) -> Augmentation | None:
        """What augments the training batches: an image folder's ``augment``; None for any
        other source (the random shifts and noise of in-memory arrays)."""
        found = getattr(self.source, "augment", None)
        return found if isinstance(found, Augmentation) else None

    def input_std(self, seed: int) -> float:
        """The standard deviation of a seeded ``NOISE_SAMPLES`` of the training inputs."""
        n, total, squares = 0, 0.0, 0.0  # summed batch by batch: never the whole sample
        for x, _ in self.source.batches("train", n=NOISE_SAMPLES, seed=seed, batch=32):  # type: ignore[call-arg]
            x64 = x.astype(np.float64)
            n, total, squares = n + x64.size, total + x64.sum(), squares + (x64**2).sum()
        return math.sqrt(max(0.0, squares / n - (total / n) ** 2)) if n else 1.0

    def epoch(self, batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training samples of each index list of ``batches``, in order, decoded by the
        source's loader workers (an unreadable file is left out of its batch)."""
        workers = int(getattr(self.source, "loader_workers", 0))
        loader = loader_for(self.source, "train", workers, self.pin)  # type: ignore[arg-type]
        return self.waits.through(loader.epoch(batches))

    def val_accuracy(self, model: nn.Module) -> float:
        """Top-1 accuracy of ``model`` (as it is: the caller sets eval mode) on the source's
        scoring subset of the validation split."""
        import torch

        hits: list[torch.Tensor] = []  # one flag per sample: averaged as an in-memory split is
        for x, y in self.waits.through(eval_batches(self.source, "val")):
            xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(module_device(model))
            logits = predict(model, xt)
            hits.append(logits.argmax(1) == torch.from_numpy(y).to(logits.device))
        return float(torch.cat(hits).float().mean()) if hits else 0.0
