"""What ``fit`` trains and validates on: the splits of a ``DataBundle`` as torch batches (one
tensor, or a tuple per input for a multi-input model), a streamed source's, or data-free
synthetic inputs labelled by the teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data import is_streamed
from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.training.augment import NOISE_STD
from edgeopt.training.batch import Batch, Inputs, inputs_of, model_inputs, synthetic, tensors
from edgeopt.training.config import SYNTHETIC_TRAIN
from edgeopt.training.evaluate import predict
from edgeopt.training.stream import Streamed

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeopt.data import DataBundle, DataSource

SYNTHETIC_VAL = 512
"""Fixed synthetic inputs on which data-free 'accuracy' (top-1 agreement) is measured."""
VAL_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Split:
    """Batches ``fit`` trains and validates on; ``x_train`` None: data-free, fresh synthetic
    inputs each epoch, labelled by the teacher."""

    x_train: Batch | None
    y_train: torch.Tensor | None
    x_val: Batch | None
    y_val: torch.Tensor | None
    inputs: ModelInputs
    noise_std: float
    stream: Streamed | None = None
    """A streamed source's splits (then the batches above are None)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The first input's sample shape (a single-input model's)."""
        return self.inputs.first_shape

    @property
    def n_train(self) -> int:
        if self.stream is not None:
            return self.stream.n_train
        if self.x_train is None:
            return SYNTHETIC_TRAIN
        return len(self.x_train[0] if isinstance(self.x_train, tuple) else self.x_train)


def split_of(
    data: DataBundle | DataSource | None,
    teacher: nn.Module | None,
    inputs: Inputs | None,
    seed: int,
    device: torch.device,
) -> Split:
    """The training inputs stay on the CPU (batches move as drawn); labels of the validation
    split live on ``device``, where the predictions are. ``inputs``: what the model takes,
    needed only without ``data``."""
    import torch

    if is_streamed(data):  # type: ignore[arg-type]
        stream = Streamed(data, pin=device.type == "cuda")  # type: ignore[arg-type]
        noise = NOISE_STD * stream.input_std(seed)
        return Split(None, None, None, None, ModelInputs.single(stream.shape), noise, stream)
    if data is not None:
        x_train = tensors(data.x_train)
        std = float(x_train.std()) if isinstance(x_train, torch.Tensor) else 0.0
        return Split(
            x_train=x_train,
            y_train=torch.from_numpy(np.ascontiguousarray(data.y_train, dtype=np.int64)).to("cpu"),
            x_val=tensors(data.x_val),
            y_val=torch.from_numpy(np.ascontiguousarray(data.y_val, dtype=np.int64)).to(device),
            inputs=inputs_of(data.x_train),
            noise_std=NOISE_STD * std,
        )
    assert teacher is not None
    if inputs is None:
        raise ConfigError("data-free distillation needs the teacher's input_shape")
    spec = model_inputs(inputs)
    # its own generator: the validation set is the same whatever the training draws
    val_gen = torch.Generator().manual_seed(seed + VAL_SEED_OFFSET)
    x_val = synthetic(spec, SYNTHETIC_VAL, val_gen)
    y_val = predict(teacher, x_val).argmax(1)
    return Split(None, None, x_val, y_val, spec, NOISE_STD)
