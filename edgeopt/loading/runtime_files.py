"""Files a target's runtime loads, read for ``edgeopt bench`` and ``edgeopt check``: ORT
Mobile's ``.ort`` (in ONNX Runtime), OpenVINO IR ``.xml`` (with its ``.bin`` beside it, in
OpenVINO) and ``.tflite`` (in LiteRT; a full-integer file's int8 input is fed quantized
float, see ``edgeopt.measure.session``). Each is opened in its runtime and run once on zeros,
like an ONNX input; it is timed and scored as it is, never converted or optimized again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.loading.spec import LoadedModel, ModelFormat
from edgeopt.measure.session import ModelSession, model_session
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime, runtime_of_file

FORMAT_OF: dict[Runtime, ModelFormat] = {
    Runtime.ORT_FORMAT: ModelFormat.ORT_FORMAT,
    Runtime.OPENVINO: ModelFormat.OPENVINO,
    Runtime.LITERT: ModelFormat.TFLITE,
}
"""The runtimes whose files edgeopt loads as they are, and the format it records."""


def is_runtime_file(p: Path) -> bool:
    """True for a file of a runtime in ``FORMAT_OF`` (by suffix)."""
    return runtime_of_file(p) in FORMAT_OF


def load_runtime_file(p: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    """``p`` opened in its runtime and run once; ConfigError saying why not (the ``.bin`` of
    an ``.xml`` missing, a file the runtime rejects, a dynamic shape without
    ``--input-shape``, a non-float input)."""
    runtime = runtime_of_file(p)
    assert runtime in FORMAT_OF
    label = RUNTIMES[runtime].label
    if runtime == Runtime.OPENVINO and not p.with_suffix(".bin").is_file():
        raise ConfigError(
            f"{p}: its weights file {p.with_suffix('.bin').name} is not beside it",
            hint="an OpenVINO IR is two files: keep X.bin next to X.xml",
        )
    try:
        sess = model_session(p, threads=1)
    except Exception as exc:
        raise ConfigError(
            f"{label} cannot load {p}: {_reason(exc)}",
            hint="re-export it (edgeopt export --format ...); a truncated file fails this way",
        ) from exc
    dims, is_float = _input(sess)
    graph_shape = tuple(d or 0 for d in dims[1:])
    shape = input_shape or graph_shape
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(
            f"{p} has a dynamic input shape",
            hint="pass --input-shape with one sample's shape, e.g. --input-shape 3,224,224",
        )
    if input_shape and all(graph_shape) and graph_shape != tuple(input_shape):
        raise ConfigError(
            f"--input-shape {input_shape} does not match {p}'s input {graph_shape}",
            hint=f"use --input-shape {','.join(map(str, graph_shape))} or omit it",
        )
    if not is_float:
        raise ConfigError(
            f"{p} takes a non-float input; edgeopt feeds float32 tensors",
            hint="convert the model with a float32 input",
        )
    try:
        out = np.asarray(sess.run(np.zeros((1, *shape), dtype=np.float32)))
    except Exception as exc:
        raise ConfigError(
            f"{label} cannot run {p} on an input of shape {(1, *shape)}: {_reason(exc)}",
            hint="if the model takes another input shape, pass --input-shape",
        ) from exc
    return LoadedModel(
        p, FORMAT_OF[runtime], tuple(shape), output_shape=tuple(out.shape), artifact_path=p
    )


def _input(sess: ModelSession) -> tuple[list[int | None], bool]:
    """The first input's dimensions (None where dynamic) and whether it takes float32 (a
    quantized LiteRT input does: the session quantizes it)."""
    if sess.runtime == "litert":
        detail = sess.raw.get_input_details()[0]
        quantized = np.issubdtype(detail["dtype"], np.integer) and detail["quantization"][0]
        shape = [int(d) if d > 0 else None for d in detail["shape_signature"]]
        return shape, detail["dtype"] == np.float32 or bool(quantized)
    if sess.runtime == "openvino":
        port = sess.raw.input(0)
        dims: list[int | None] = [
            d.get_length() if d.is_static else None for d in port.get_partial_shape()
        ]
        return dims, port.get_element_type().get_type_name() == "f32"
    info: Any = sess.raw.get_inputs()[0]
    return [d if isinstance(d, int) and d > 0 else None for d in info.shape], (
        info.type == "tensor(float)"
    )


def _reason(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith("Check '")]
    return (kept[0] if kept else type(exc).__name__)[:300]
