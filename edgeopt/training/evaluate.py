"""Accuracy of a model: batched predictions in torch, top-1 accuracy in torch and in ONNX
Runtime (``fit`` selects its best epoch with them; the stages and benchmarks score with them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.measure.session import ort_session
from edgeopt.training.batch import Batch, forward, size, take, tensors, to
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    import torch
    from torch import nn


def predict(model: nn.Module, x: Batch, batch_size: int = 256) -> torch.Tensor:
    """``model``'s outputs for ``x`` (a tensor, or a tuple for a multi-input model) in
    batches, without gradients (the mode is left as is), on the model's device (each batch of
    ``x`` moves there)."""
    import torch

    device = module_device(model)
    with torch.no_grad():
        return torch.cat(
            [
                forward(model, to(take(x, slice(i, i + batch_size)), device))
                for i in range(0, size(x), batch_size)
            ]
        )


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (the mode is restored); ``x``
    a float array, or a structured one for a multi-input model."""
    was_training = model.training
    model.eval()
    try:
        logits = predict(model, tensors(x), batch_size)  # on the CPU, moved per batch
    finally:
        model.train(was_training)
    return float((logits.argmax(1).cpu().numpy() == np.asarray(y)).mean())


def evaluate_onnx(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 256,
    threads: int | None = None,
) -> float:
    """Top-1 accuracy of an ONNX model in ONNX Runtime (CPU); ``threads`` = intra-op threads.
    ``x``: a float array for the model's one input, or a structured array whose fields are
    its inputs by name."""
    sess = ort_session(path, threads=threads or 0)  # None: ORT's default threads
    names = [i.name for i in sess.get_inputs()]
    if x.dtype.names is None:
        x = np.ascontiguousarray(x, dtype=np.float32)
    preds = [
        sess.run(None, _feeds(names, x[i : i + batch_size]))[0].argmax(1)
        for i in range(0, len(x), batch_size)
    ]
    return float((np.concatenate(preds) == np.asarray(y)).mean()) if preds else 0.0


def _feeds(names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """One batch's feeds: the array for one input, else each input's field, contiguous."""
    if x.dtype.names is None:
        return {names[0]: x}
    return {n: np.ascontiguousarray(x[n]) for n in names}
