"""Files a target's runtime loads, read for ``edgeopt bench`` and ``edgeopt check``: ORT
Mobile's ``.ort`` (in ONNX Runtime), OpenVINO IR ``.xml`` (with its ``.bin`` beside it, in
OpenVINO) and ``.tflite`` (in LiteRT; a full-integer file's int8 input is fed quantized
float, see ``edgeopt.measure.session``). Each is opened in its runtime and run once on zeros,
like an ONNX input; it is timed and scored as it is, never converted or optimized again.
OpenVINO and LiteRT open them in a runtime child (``edgeopt.runtime_child``), never here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.loading.spec import LoadedModel, ModelFormat
from edgeopt.measure.session import OUT_OF_PROCESS, ModelSession, model_session
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime, runtime_of_file
from edgeopt.runtime_child import ChildDied, shared_runtime_child

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
    runs_here = runtime not in OUT_OF_PROCESS  # a .ort: ONNX Runtime, already loaded here
    with shared_runtime_child(1) as child:

        def probe(shape: tuple[int, ...] | None) -> dict[str, Any]:
            """``probe_file``'s answer; a child that died is a load or run error like any."""
            if runs_here:
                return probe_file(str(p), shape)
            try:
                return child.call(probe_file, str(p), shape)
            except ChildDied as exc:
                return {"load_error" if shape is None else "run_error": str(exc)}

        got = probe(None)
        if "load_error" in got:
            raise ConfigError(
                f"{label} cannot load {p}: {got['load_error']}",
                hint="re-export it (edgeopt export --format ...); a truncated file fails this way",
            )
        dims, is_float = got["dims"], got["is_float"]
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
        ran = probe(tuple(shape))
        if "run_error" in ran:
            raise ConfigError(
                f"{label} cannot run {p} on an input of shape {(1, *shape)}: {ran['run_error']}",
                hint="if the model takes another input shape, pass --input-shape",
            )
    return LoadedModel(
        p,
        FORMAT_OF[runtime],
        tuple(shape),
        output_shape=tuple(ran["output_shape"]),
        artifact_path=p,
    )


def probe_file(path: str, shape: tuple[int, ...] | None) -> dict[str, Any]:
    """``path`` opened in its runtime in this process (a runtime child's side of
    ``load_runtime_file``): ``{"dims", "is_float"}`` of its first input, with
    ``"output_shape"`` of a run on zeros of one sample's ``shape`` when given;
    ``{"load_error"}`` or ``{"run_error"}`` with the runtime's reason."""
    try:
        sess = model_session(path, threads=1)
    except Exception as exc:
        return {"load_error": _reason(exc)}
    dims, is_float = _input(sess)
    out: dict[str, Any] = {"dims": dims, "is_float": is_float}
    if shape is not None:
        try:
            y = np.asarray(sess.run(np.zeros((1, *shape), dtype=np.float32)))
        except Exception as exc:
            return {"run_error": _reason(exc)}
        out["output_shape"] = tuple(y.shape)
    return out


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
