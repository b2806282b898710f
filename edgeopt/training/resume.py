"""Continuing a fine-tune from a shorter one's checkpoint, exactly.

A fine-tune of E epochs with the ``wsd`` schedule (warmup-free "warmup-stable-decay": a
constant learning rate, then a linear decay to zero over the last ``decay_epochs(E)``
epochs) or the ``constant`` schedule does the same thing, step for step, as any longer
fine-tune with the same settings up to the end of its constant part (``stable_epochs``):
the learning rate there does not depend on the total budget. So the state at that point
(weights, optimizer moments, the random stream that draws batches and augmentations, the
best weights and history so far) is saved, and a longer fine-tune with the same settings
starts from it instead of from scratch. The result is the model a from-scratch run would
have produced (same operations on the same numbers), so a cached prefix never changes what
a trial's params mean: it only saves the time of the epochs it covers. Cosine and step
schedules depend on the total from the first step, so they are never continued.

Checkpoints live in the run's cache folder, keyed by everything that determines the
prefix: the input weights, the teacher's weights, the data, the seed and every training
setting except ``epochs``. They hold tensors, numbers and lists only and are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.data import DataBundle, DataSource, NpzSource
from edgeopt.training.config import MAX_EPOCH_SAMPLES, SYNTHETIC_TRAIN, Schedule, TrainConfig
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    import torch
    from torch import nn


log = logging.getLogger(__name__)

DECAY_SHARE = 0.25
"""The ``wsd`` schedule decays over the last quarter of the epochs (at least one)."""


def decay_epochs(config: TrainConfig) -> int:
    """Epochs at the end of the fine-tune whose learning rate decays (0 for ``constant``)."""
    if config.schedule is Schedule.WSD and config.epochs > 0:
        return max(1, math.ceil(DECAY_SHARE * config.epochs))
    return 0


def stable_epochs(config: TrainConfig) -> int:
    """Epochs at the start that any longer fine-tune with these settings shares exactly
    (0 for schedules that depend on the total from the first step)."""
    if config.schedule in (Schedule.WSD, Schedule.CONSTANT):
        return config.epochs - decay_epochs(config)
    return 0


@dataclass
class FitState:
    """``fit``'s state after ``epoch`` whole epochs (``step`` optimizer steps)."""

    epoch: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    torch_rng: torch.Tensor
    best_acc: float
    best_epoch: int
    best_model: dict[str, torch.Tensor] | None
    """None: the best weights are ``model``'s (saves storing them twice)."""
    initial: float
    since_best: int
    history: list[tuple[int, float, float]]
    cuda_rng: torch.Tensor | None = None
    """The training GPU's random stream (None on the CPU, and in older checkpoints)."""


class CheckpointStore:
    """A folder of ``FitState`` files for one training prefix (``prefix_key``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def latest(self, max_epoch: int) -> FitState | None:
        """The saved state with the most epochs, at most ``max_epoch``; None when none fits
        (an unreadable file is skipped: a cache is never a reason to fail)."""
        import torch

        names = (p.stem.removeprefix("epoch-") for p in self.folder.glob("epoch-*.pt"))
        epochs = sorted((int(n) for n in names if n.isdigit()), reverse=True)
        for epoch in epochs:
            if epoch > max_epoch or epoch <= 0:
                continue
            path = self.folder / f"epoch-{epoch}.pt"
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True)
                raw["history"] = [tuple(h) for h in raw["history"]]
                return FitState(**raw)
            except Exception as exc:  # noqa: BLE001 - a damaged cache entry is skipped
                log.warning("ignoring unreadable fine-tune checkpoint %s: %s", path, exc)
        return None

    def save(self, state: FitState) -> None:
        """Write ``state`` atomically (a concurrent worker may write the same one)."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".epoch-", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(dataclasses.asdict(state), fh)
            os.replace(tmp, self.folder / f"epoch-{state.epoch}.pt")
        finally:
            Path(tmp).unlink(missing_ok=True)


def prefix_key(
    model: nn.Module,
    teacher: nn.Module | None,
    data: DataBundle | DataSource | None,
    config: TrainConfig,
    seed: int,
    round_samples: int | None = None,
) -> str:
    """A digest of everything a continuable fine-tune's shared prefix depends on, with the
    samples per round (``fit``'s ``round_samples``) when a round is less than an epoch."""
    h = hashlib.sha256()
    settings = {k: str(v) for k, v in dataclasses.asdict(config).items() if k != "epochs"}
    h.update(json.dumps({"settings": settings, "seed": seed}, sort_keys=True).encode())
    if round_samples is not None and round_samples < _epoch_samples(data):
        h.update(f"|round|{round_samples}".encode())  # whole epochs keep their old keys
    device = module_device(model)
    if device.type != "cpu":  # another device's arithmetic: not the same prefix exactly
        h.update(f"|device|{device.type}".encode())
    for module in (model, teacher):
        h.update(b"|module|")
        if module is not None:
            module_digest(h, module)
    if isinstance(data, NpzSource):
        data = data.bundle  # hashed as its arrays always were
    if data is not None and not isinstance(data, DataBundle):  # a streamed source
        h.update(b"|data|")
        h.update(json.dumps([data.fingerprint(), repr(getattr(data, "recipe", None))]).encode())
    elif data is not None:
        for arr in (data.x_train, data.y_train, data.x_val, data.y_val):
            h.update(b"|data|")
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:24]


def _epoch_samples(data: DataBundle | DataSource | None) -> int:
    """The samples one whole epoch of ``fit`` draws from ``data``."""
    if isinstance(data, DataBundle):
        n = len(data.x_train)
    else:
        n = data.count("train") if data is not None else SYNTHETIC_TRAIN
    return min(n, MAX_EPOCH_SAMPLES)


def module_digest(h: Any, module: nn.Module) -> None:
    """Feed ``module``'s parameter and buffer names, shapes and bytes into hash ``h``."""
    import torch

    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        flat = tensor.detach().cpu().contiguous().view(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes())
