"""Accuracy of a model: batched predictions in torch, top-1 accuracy in torch and in ONNX
Runtime (``fit`` selects its best epoch with them; the stages and benchmarks score with them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.measure.session import ort_session
from edgeopt.training.device import module_device

if TYPE_CHECKING:
    import torch
    from torch import nn


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model``'s outputs for ``x`` in batches, without gradients (the mode is left as is),
    on the model's device (each batch of ``x`` moves there)."""
    import torch

    device = module_device(model)
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
        )


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (the mode is restored)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        inputs = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to("cpu")  # moved per batch
        logits = predict(model, inputs, batch_size)
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
    """Top-1 accuracy of an ONNX model in ONNX Runtime (CPU); ``threads`` = intra-op threads."""
    sess = ort_session(path, threads=threads or 0)  # None: ORT's default threads
    name = sess.get_inputs()[0].name
    xs = np.ascontiguousarray(x, dtype=np.float32)
    preds = [
        sess.run(None, {name: xs[i : i + batch_size]})[0].argmax(1)
        for i in range(0, len(xs), batch_size)
    ]
    return float((np.concatenate(preds) == np.asarray(y)).mean()) if preds else 0.0
