"""The one place an ONNX Runtime session is built: CPU provider, explicit thread counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ort_session(
    path: str | Path,
    *,
    threads: int,
    optimization: str = "all",
    sequential: bool = True,
    optimized_model_path: str | Path | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider.

    ``threads`` sets intra-op threads (inter-op is 1): every process edgeopt starts sets its
    thread counts, since two processes with default threads on 2 cores slow each other ~10x.
    ``threads=0`` leaves ORT's default (one per core), for callers that ask for it.
    ``optimization`` is ``all`` (ORT's default, what users deploy), ``extended``, ``basic``
    or ``none``. ``sequential`` runs nodes one at a time (ORT's default execution mode).
    ``optimized_model_path`` asks ORT to write the graph it runs (tests count kernels there).
    """
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if sequential:
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = levels[optimization]
    opts.log_severity_level = 3
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
