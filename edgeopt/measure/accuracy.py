"""Accuracy of an ONNX model on a data split, run in ONNX Runtime on this host."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_logits(
    path: str | Path, x: np.ndarray, *, batch_size: int = 256, threads: int = 2
) -> np.ndarray:
    """Outputs of the model's first output for all of ``x``, computed in batches."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    outs = [
        sess.run(None, {name: np.ascontiguousarray(x[i : i + step], dtype=np.float32)})[0]
        for i in range(0, len(x), step)
    ]
    return np.concatenate(outs)


def onnx_accuracy(
    path: str | Path, x: np.ndarray, y: np.ndarray, *, batch_size: int = 256, threads: int = 2
) -> float:
    """Top-1 accuracy of the ONNX model on ``(x, y)``."""
    logits = onnx_logits(path, x, batch_size=batch_size, threads=threads)
    return float((logits.argmax(axis=1) == y).mean())


def onnx_fidelity(
    path: str | Path, reference: str | Path, x: np.ndarray, *, threads: int = 2
) -> float:
    """Top-1 agreement of ``path`` with ``reference`` on ``x`` (stands in for accuracy without
    labelled data)."""
    a = onnx_logits(path, x, threads=threads).argmax(axis=1)
    b = onnx_logits(reference, x, threads=threads).argmax(axis=1)
    return float((a == b).mean())
