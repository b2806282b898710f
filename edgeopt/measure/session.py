"""The one place a model is loaded for timing and scoring: an ONNX Runtime session
(execution providers: CPU unless a profile's runner names others; explicit thread counts) for
``.onnx`` and ``.ort`` files, an OpenVINO compiled model for IR ``.xml`` files, a LiteRT
interpreter (XNNPACK) for ``.tflite`` files (``model_session``, one factory per runtime in
``SESSION_FACTORIES``). Imports only the standard library and numpy (and the runtime inside
the call), so the timing child can carry it to a remote device."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


OPENVINO_EXTENSIONS = (".xml",)
"""Files OpenVINO loads (its IR; the ``.bin`` beside it holds the weights). Every other file
goes to ONNX Runtime, which loads ``.onnx`` and ORT Mobile's ``.ort`` alike, but
``.tflite`` (LiteRT)."""


@dataclass(frozen=True)
class ModelSession:
    """A model loaded in its runtime: ``run(x)`` gives the first output for the float input
    ``x`` (a numpy array; ORT also takes a structured one, one field per input); ``batch``
    is the model's fixed batch size, None when any batch goes; ``raw`` the runtime's own
    object (an ORT session, an OpenVINO compiled model)."""

    runtime: str
    run: Callable[[Any], Any]
    batch: int | None
    raw: Any


def runtime_of_path(path: str | Path) -> str:
    """``openvino`` for an OpenVINO IR file, ``litert`` for a ``.tflite``, else ``ort``
    (``.onnx`` and ``.ort``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".tflite":
        return "litert"
    return "openvino" if suffix in OPENVINO_EXTENSIONS else "ort"


def model_session(
    path: str | Path,
    *,
    threads: int,
    runtime: str | None = None,
    providers: Sequence[str] | None = None,
    precision_hint: str = "f32",
) -> ModelSession:
    """``path`` loaded in ``runtime`` (``SESSION_FACTORIES``; by default the one its suffix
    names): ``threads`` inference threads, ``providers`` (ORT only) as ``ort_session``,
    ``precision_hint`` (OpenVINO only) the inference precision, f32 unless asked."""
    name = runtime or runtime_of_path(path)
    factory = SESSION_FACTORIES.get(name)
    if factory is None:
        known = ", ".join(SESSION_FACTORIES)
        raise RuntimeError(f"no session for runtime {name!r} (known: {known})")
    return factory(path, threads, providers, precision_hint)


OUT_OF_PROCESS = ("openvino", "litert")
"""Runtimes edgeopt runs only in a runtime child (``edgeopt.runtime_child``), never in its own
process: their thread pools crashed it (``.ort`` files run in ONNX Runtime, which edgeopt's
process holds anyway). The timing child is such a process already."""

_OPEN: dict[tuple[Any, ...], ModelSession] = {}

RUN_INPUT_BYTES = 8 << 20
"""The most input bytes one scoring run feeds a model at once (8 MiB: 13 samples at
3x224x224, the whole ``batch_size`` at 32x32). The runtime's memory grows with the batch's
activations: MobileNetV2 x0.5 at 224x224 peaked at 442 MB resident scoring 64 samples per
run, 193 MB at 16, and ran no slower per sample (ONNX Runtime, 2 threads, measured here)."""


def run_step(sess: ModelSession, batch_size: int, sample: np.ndarray) -> int:
    """Samples per run when scoring: the model's fixed batch, else ``batch_size`` bounded
    by ``RUN_INPUT_BYTES`` of float32 inputs shaped like ``sample`` (one sample; a
    structured one, several inputs: its bytes)."""
    if sess.batch:
        return sess.batch
    if sample.dtype.names:
        per_sample = max(1, sample.dtype.itemsize)
    else:
        per_sample = max(1, int(np.prod(sample.shape)) * 4)
    return max(1, min(batch_size, RUN_INPUT_BYTES // per_sample))


def run_input(x: np.ndarray) -> np.ndarray:
    """``x`` as a session's ``run`` takes it: contiguous float32, or for a model with several
    inputs the structured array as it is (each runtime takes its fields by name)."""
    if x.dtype.names:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(x, dtype=np.float32)


_ORT_INTS = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def ort_feeds(inputs: Sequence[Any], x: np.ndarray) -> dict[str, np.ndarray]:
    """The feed of ORT inputs ``inputs`` (``sess.get_inputs()``) for batch ``x``: the one
    input for a plain array; for a structured one (``edgeopt.inputs``: one field per input)
    each input its field, contiguous, of the input's element type. This module stays
    stdlib + numpy (it is copied to devices), so this is ``ModelInputs.feeds`` by the
    session's own names and types; the data was checked against the model before."""
    if not x.dtype.names:
        return {inputs[0].name: x}
    return {
        i.name: np.ascontiguousarray(x[i.name], dtype=_ORT_INTS.get(i.type, np.float32))
        for i in inputs
    }


def run_batches(
    path: str,
    x: np.ndarray,
    *,
    batch_size: int,
    threads: int,
    precision_hint: str = "f32",
) -> np.ndarray:
    """The first output of ``path`` over all of ``x``, run ``batch_size`` samples at a time
    (or the model's fixed batch), in this process (a runtime child's side of
    ``edgeopt.measure.accuracy``); the session stays open for the next call on the same
    unchanged file (a split is scored batch by batch)."""
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size, threads, precision_hint)
    sess = _OPEN.get(key)
    if sess is None:
        _OPEN.clear()  # one model open at a time: a final pass scores many in turn
        sess = model_session(path, threads=threads, precision_hint=precision_hint)
        _OPEN[key] = sess
    step = run_step(sess, batch_size, x[0]) if len(x) else 1
    outs = [np.asarray(sess.run(run_input(x[i : i + step]))) for i in range(0, len(x), step)]
    return np.concatenate(outs)


def _ort_model(
    path: str | Path, threads: int, providers: Sequence[str] | None, precision_hint: str
) -> ModelSession:
    sess = ort_session(path, threads=threads, providers=providers)
    inputs = sess.get_inputs()
    fixed = inputs[0].shape[0]
    batch = fixed if isinstance(fixed, int) and fixed > 0 else None
    return ModelSession("ort", lambda x: sess.run(None, ort_feeds(inputs, x))[0], batch, sess)


def _openvino_model(
    path: str | Path, threads: int, providers: Sequence[str] | None, precision_hint: str
) -> ModelSession:
    """An OpenVINO CPU compiled model tuned for one request at a time (LATENCY hint, one
    stream, ``threads`` threads) at ``precision_hint``; RuntimeError when the plugin runs
    another precision (it defaults to bf16 on CPUs with avx512_bf16)."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    precision = getattr(ov.Type, precision_hint)
    config: dict[Any, Any] = {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.num_streams: 1,
        hints.inference_precision: precision,
    }
    if threads > 0:
        config[props.inference_num_threads] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    got = compiled.get_property(hints.inference_precision)
    if got != precision:
        raise RuntimeError(f"OpenVINO runs {path} in {got}, not the {precision_hint} asked for")
    request = compiled.create_infer_request()
    dim = compiled.input(0).get_partial_shape()[0]
    batch = dim.get_length() if dim.is_static and dim.get_length() > 0 else None

    def run(x: Any) -> Any:
        return request.infer({0: x})[0]

    return ModelSession("openvino", run, batch, compiled)


def _litert_model(
    path: str | Path, threads: int, providers: Sequence[str] | None, precision_hint: str
) -> ModelSession:
    """A LiteRT interpreter (default op resolver: XNNPACK) with ``threads`` threads. A
    full-integer file's int8/uint8 input is fed the float input quantized with the input
    tensor's scale and zero point, and its output dequantized, so ``run`` takes and gives
    float like every runtime's; its batch is the file's (1 for litert-torch's files)."""
    from ai_edge_litert.interpreter import Interpreter

    def load() -> Any:
        made = Interpreter(model_path=str(path), num_threads=threads if threads > 0 else None)
        made.allocate_tensors()
        return made

    interp = _without_stderr(load)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    in_index, out_index = inp["index"], out["index"]
    in_type, (in_scale, in_zero) = inp["dtype"], inp["quantization"]
    out_scale, out_zero = out["quantization"]
    integer_in = np.issubdtype(in_type, np.integer) and in_scale != 0
    integer_out = np.issubdtype(out["dtype"], np.integer) and out_scale != 0
    if integer_in:
        lo, hi = np.iinfo(in_type).min, np.iinfo(in_type).max

    def run(x: Any) -> Any:
        if integer_in:
            x = np.clip(np.round(x / in_scale + in_zero), lo, hi).astype(in_type)
        interp.set_tensor(in_index, x)
        interp.invoke()
        y = interp.get_tensor(out_index)
        if integer_out:
            return (y.astype(np.float32) - out_zero) * np.float32(out_scale)
        return y

    batch = int(inp["shape"][0]) if len(inp["shape"]) and inp["shape"][0] > 0 else None
    return ModelSession("litert", run, batch, interp)


def _without_stderr(make: Callable[[], Any]) -> Any:
    """``make()`` with this process's file descriptor 2 silenced: LiteRT's C++ side prints an
    INFO line there when it applies XNNPACK, and the library prints nothing."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                return make()
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _unavailable(
    path: str | Path, threads: int, providers: Sequence[str] | None, precision_hint: str
) -> ModelSession:
    raise RuntimeError(f"{path}: edgeopt cannot run this runtime's files here")


SESSION_FACTORIES: dict[str, Callable[..., ModelSession]] = {
    "ort": _ort_model,
    "ort-format": _ort_model,
    "openvino": _openvino_model,
    "litert": _litert_model,
    "tensorrt": _unavailable,
}
"""Runtime name (``edgeopt.profiles.runtime_spec.Runtime``) -> the factory that loads its
files: ``(path, threads, providers, precision_hint) -> ModelSession``."""
