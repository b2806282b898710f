"""The one place an ONNX Runtime session is built: execution providers (CPU unless a profile's
runner names others), explicit thread counts. Imports only the standard library (and
onnxruntime inside the call), so the timing child can carry it to a remote device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CPU = "CPUExecutionProvider"


def ort_session(
    path: str | Path,
    *,
    threads: int,
    optimization: str = "all",
    sequential: bool = True,
    optimized_model_path: str | Path | None = None,
    providers: Sequence[str] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``providers`` (default: the CPU provider).

    ``threads`` sets intra-op threads (inter-op is 1): every process edgeopt starts sets its
    thread counts, since two processes with default threads on 2 cores slow each other ~10x.
    ``threads=0`` leaves ORT's default (one per core), for callers that ask for it.
    ``optimization`` is ``all`` (ORT's default, what users deploy), ``extended``, ``basic``
    or ``none``. ``sequential`` runs nodes one at a time (ORT's default execution mode).
    ``optimized_model_path`` asks ORT to write the graph it runs (tests count kernels there).
    ``providers`` lists execution providers in order of preference (CUDA, TensorRT, ...);
    the CPU provider is added last as ORT's fallback for ops the others lack. Raises
    RuntimeError naming a provider this onnxruntime build lacks, or one that failed to start
    (ORT would otherwise fall back to the CPU silently and the numbers would lie).
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
    wanted = list(providers or [CPU])
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise RuntimeError(
            f"onnxruntime {ort.__version__} has no {', '.join(missing)} "
            f"(available: {', '.join(available)})"
        )
    chain = wanted if CPU in wanted else [*wanted, CPU]
    sess = ort.InferenceSession(str(path), opts, providers=chain)
    if wanted[0] not in sess.get_providers():
        raise RuntimeError(
            f"{wanted[0]} is installed but did not start (running on {sess.get_providers()}); "
            "check the device's drivers and libraries"
        )
    return sess
