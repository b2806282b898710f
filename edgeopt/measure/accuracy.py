"""Accuracy of a model file, run in its runtime on this host (ONNX Runtime for ``.onnx``
and ``.ort``, OpenVINO for ``.xml``, LiteRT for ``.tflite``:
``edgeopt.measure.session.model_session``; the last two in a runtime child,
``edgeopt.runtime_child``, never in this process): top-1
accuracy (or another task metric of ``edgeopt.measure.task_metrics``) on labelled data, or,
without labels, fidelity (top-1 agreement with the original model) on inputs that stand in
for data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data import DataSource, NpzSource, eval_batches
from edgeopt.measure.session import (
    OUT_OF_PROCESS,
    model_session,
    run_batches,
    run_input,
    run_step,
    runtime_of_path,
)
from edgeopt.measure.task_metrics import task_metric, task_metric_entries
from edgeopt.runtime_child import shared_runtime_child


def onnx_logits(
    path: str | Path,
    x: np.ndarray,
    *,
    batch_size: int = 256,
    threads: int = 2,
    precision_hint: str = "f32",
) -> np.ndarray:
    """Outputs of the model's first output for all of ``x``, computed in batches
    (``precision_hint``: an OpenVINO file's inference precision)."""
    with _scorer(path, batch_size, threads, precision_hint) as score:
        return score(x)


def onnx_batch_logits(
    path: str | Path,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    batch_size: int = 256,
    threads: int = 2,
    precision_hint: str = "f32",
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` over labelled ``(x, y)`` batches consumed one at a time (a data
    source's streamed split: only one batch of inputs is held, and the logits are kept). One
    batch of a whole array gives exactly ``onnx_logits``'s runs. ``precision_hint``: an
    OpenVINO file's inference precision."""
    outs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with _scorer(path, batch_size, threads, precision_hint) as score:
        for x, y in batches:
            outs.append(score(x))
            labels.append(np.asarray(y))
    if not outs:
        raise ValueError("no samples to score")
    return np.concatenate(outs), np.concatenate(labels)


@contextlib.contextmanager
def _scorer(
    path: str | Path, batch_size: int, threads: int, hint: str
) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """``x -> path's outputs``, with the model loaded once for the block: in this process
    (ONNX Runtime), or in one runtime child for the block (``OUT_OF_PROCESS`` runtimes)."""
    if runtime_of_path(path) in OUT_OF_PROCESS:
        with shared_runtime_child(threads) as child:
            yield lambda x: child.call(
                run_batches,
                str(path),
                x,
                batch_size=batch_size,
                threads=threads,
                precision_hint=hint,
            )
        return
    sess = model_session(path, threads=threads, precision_hint=hint)

    def score(x: np.ndarray) -> np.ndarray:
        step = run_step(sess, batch_size, x[0]) if len(x) else 1
        outs = [np.asarray(sess.run(run_input(x[i : i + step]))) for i in range(0, len(x), step)]
        return np.concatenate(outs)

    yield score


def onnx_accuracy(
    path: str | Path, x: np.ndarray, y: np.ndarray, *, batch_size: int = 256, threads: int = 2
) -> float:
    """Top-1 accuracy of the ONNX model on ``(x, y)``."""
    logits = onnx_logits(path, x, batch_size=batch_size, threads=threads)
    return float((logits.argmax(axis=1) == y).mean())


def onnx_fidelity(
    path: str | Path,
    reference: str | Path,
    x: np.ndarray,
    *,
    threads: int = 2,
    precision_hint: str = "f32",
) -> float:
    """Top-1 agreement of ``path`` (``precision_hint``: OpenVINO's, for an IR file) with
    ``reference`` on ``x`` (stands in for accuracy without labelled data)."""
    a = onnx_logits(path, x, threads=threads, precision_hint=precision_hint).argmax(axis=1)
    b = onnx_logits(reference, x, threads=threads).argmax(axis=1)
    return float((a == b).mean())


def onnx_task_metric(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    metric: str,
    *,
    threads: int = 2,
    precision_hint: str = "f32",
) -> float:
    """Task metric ``metric`` (``edgeopt.metrics.TASK_METRICS``) of the model file on
    ``(x, y)``."""
    logits = onnx_logits(path, x, threads=threads, precision_hint=precision_hint)
    return task_metric(metric, logits, y)


def onnx_task_metric_entries(
    path: str | Path, x: np.ndarray, y: np.ndarray, *, threads: int = 2
) -> dict[str, dict[str, Any]]:
    """Every task metric of the ONNX model on ``(x, y)``, measured here, with intervals
    (``edgeopt.measure.task_metrics.task_metric_entries``)."""
    return task_metric_entries(onnx_logits(path, x, threads=threads), y)


def onnx_score(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    reference: str | Path,
    threads: int = 2,
    metric: str = "accuracy",
    precision_hint: str = "f32",
) -> float:
    """What the search optimizes as accuracy: task metric ``metric`` (top-1 accuracy by
    default) on ``(x, y)`` when there are labels, else top-1 fidelity to ``reference`` on
    ``x`` (e.g. ``synthetic_inputs``; a run without labels only allows ``accuracy``)."""
    hint = precision_hint
    if y is not None:
        return onnx_task_metric(path, x, y, metric, threads=threads, precision_hint=hint)
    if metric != "accuracy":
        raise ValueError(f"--metric {metric} needs labelled data")
    return onnx_fidelity(path, reference, x, threads=threads, precision_hint=hint)


def source_task_metric(
    path: str | Path,
    source: DataSource,
    split: str,
    metric: str,
    *,
    threads: int = 2,
    precision_hint: str = "f32",
) -> float:
    """``onnx_task_metric`` on ``split`` of ``source`` (``test`` falls back to ``val``): an
    npz's whole split as always, any other source's ``eval_batches`` streamed."""
    hint = precision_hint
    if isinstance(source, NpzSource):
        x, y = source.bundle.split(split)
        return onnx_task_metric(path, x, y, metric, threads=threads, precision_hint=hint)
    batches = eval_batches(source, split)
    logits, y = onnx_batch_logits(path, batches, threads=threads, precision_hint=hint)
    return task_metric(metric, logits, y)


def source_task_metric_entries(
    path: str | Path, source: DataSource, split: str, *, threads: int = 2
) -> dict[str, dict[str, Any]]:
    """``onnx_task_metric_entries`` on ``split`` of ``source``, read as ``source_task_metric``."""
    if isinstance(source, NpzSource):
        return onnx_task_metric_entries(path, *source.bundle.split(split), threads=threads)
    logits, y = onnx_batch_logits(path, eval_batches(source, split), threads=threads)
    return task_metric_entries(logits, y)
