"""The LiteRT converter: a torch module to a ``.tflite`` file, fp32 or int8.

litert-torch (Google's torch -> TFLite converter, no TensorFlow) reads the torch module, not
ONNX, so this converter takes the module; ai-edge-quantizer (AEQ) then quantizes the fp32 file
with one of its recipes:

- ``fp32``: litert-torch's file as it is;
- ``int8_dynamic``: ``dynamic_wi8_afp32`` (int8 weights, float activations, no calibration);
- ``int8_static``: ``static_wi8_ai8`` (int8 weights and activations, calibrated on the given
  samples), which also gives int8 inputs and outputs. Weights are per channel
  (``CHANNELWISE``) unless the target's profile says ``per_channel = false`` (``TENSORWISE``).

A target with ``[runtime] io_type = "int8"`` (Edge TPU, TFLite Micro) gets only a file whose
every tensor is integer, int8 inputs and outputs included (checked on the flatbuffer), else
ConversionError. Both tools print progress and warnings on the process's stdout/stderr (C++
included); the library prints nothing, so they run with both silenced. They run in a runtime
child (``edgeopt.runtime_child``: JAX and LiteRT never load into edgeopt's process), which
gets the module as ``torch.save`` bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import sys
import tempfile
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError, ConversionError
from edgeopt.export.convert import Artifact, ConvertOptions, reason
from edgeopt.export.tflite_facts import tflite_facts
from edgeopt.measure.session import model_session, run_input, run_step
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime, require_installed
from edgeopt.runtime_child import ChildDied, in_runtime_child

LITERT_MODES = ("fp32", "int8_dynamic", "int8_static")
"""The quantization modes a LiteRT file is made in."""

_RECIPES = {"int8_dynamic": "dynamic_wi8_afp32", "int8_static": "static_wi8_ai8"}
_LABEL = RUNTIMES[Runtime.LITERT].label


def to_litert(
    module: Any,
    input_shape: tuple[int, ...],
    out: str | Path,
    options: ConvertOptions | None = None,
    calibration: np.ndarray | None = None,
    parity_inputs: np.ndarray | None = None,
) -> Artifact:
    """``module`` (a torch module taking one float input of one sample's ``input_shape``,
    batch 1) converted to a ``.tflite`` at ``out`` in ``options.quant_mode``;
    ``calibration`` holds the samples ``int8_static`` is calibrated on (N, *input_shape).
    With ``parity_inputs`` the facts hold ``conversion_agreement``: the top-1 agreement of
    litert-torch's float file (before any quantization) with ``module`` on them, the
    conversion's own fidelity. ConfigError for a mode or interface this converter cannot
    make, or LiteRT not installed; ConversionError with the converter's or quantizer's
    reason."""
    opts = options or ConvertOptions()
    _check_options(opts, calibration)
    require_installed(Runtime.LITERT)
    target = Path(out).with_suffix(".tflite")
    target.parent.mkdir(parents=True, exist_ok=True)
    blob = _module_bytes(module)
    shape = tuple(int(d) for d in input_shape)
    try:
        return in_runtime_child(litert_here, blob, shape, target, opts, calibration, parity_inputs)
    except ChildDied as exc:
        raise ConversionError(_LABEL, str(exc) + _address_space_note()) from exc


CONVERTER_ADDRESS_SPACE_GIB = 2.5
"""Address space litert-torch's process needs (JAX reserves it up front; measured here: a tiny
CNN's conversion died under a 2 GiB ``RLIMIT_AS`` and ran under 2.5 GiB, ~0.6 GiB resident)."""


def _address_space_note() -> str:
    """Why a converter's process may have died: the address-space cap it inherits from this
    process (a trial child's ``--trial-memory-gb``), when that is below what it needs."""
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY or limit >= CONVERTER_ADDRESS_SPACE_GIB * 2**30:
        return ""
    return (
        f"; its address space is capped at {limit / 2**30:g} GiB (--trial-memory-gb), below "
        f"the ~{CONVERTER_ADDRESS_SPACE_GIB:g} GiB litert-torch reserves"
    )


def litert_here(
    blob: bytes,
    input_shape: tuple[int, ...],
    target: Path,
    opts: ConvertOptions,
    calibration: np.ndarray | None,
    parity_inputs: np.ndarray | None = None,
) -> Artifact:
    """``to_litert``'s conversion in this process (the runtime child's side), of the module
    ``torch.save`` wrote to ``blob``."""
    import torch

    try:
        module = torch.load(io.BytesIO(blob), weights_only=False)
    except Exception as exc:  # a class defined where this process cannot import it
        raise ConversionError(
            _LABEL,
            f"the model cannot be loaded in the converter's process ({reason(exc)})",
            hint="define the model's class in an importable module (not in python -c)",
        ) from exc
    facts: dict[str, Any] = {"quant_mode": opts.quant_mode, "layout": "NCHW"}
    with tempfile.TemporaryDirectory(prefix="edgeopt-litert-") as tmp:
        fp32 = target if opts.quant_mode == "fp32" else Path(tmp) / "fp32.tflite"
        facts |= _convert(module, input_shape, fp32)
        if parity_inputs is not None:
            facts["conversion_agreement"] = _agreement(module, fp32, parity_inputs)
        if fp32 != target:
            facts |= _quantize(fp32, target, opts, calibration)
    got = tflite_facts(target)
    facts |= {"input_type": got.input_types[0], "output_type": got.output_types[0]}
    if opts.io_type is not None:
        want = opts.io_type.upper()
        if not got.all_integer or {*got.input_types, *got.output_types} != {want}:
            raise ConversionError(
                _LABEL,
                f"the {opts.quant_mode} file is not full-integer with {opts.io_type} inputs "
                f"and outputs (tensor types {', '.join(got.tensor_types)}; inputs "
                f"{', '.join(got.input_types)}, outputs {', '.join(got.output_types)})",
            )
    return Artifact(Runtime.LITERT, (target,), facts)


def _agreement(module: Any, tflite: Path, x: np.ndarray) -> float:
    """Top-1 agreement of the float ``tflite`` (in LiteRT) with ``module`` (in torch) on
    ``x``, a few samples at a time."""
    import torch

    x = np.asarray(x, dtype=np.float32)
    sess = model_session(tflite, threads=torch.get_num_threads())
    step = run_step(sess, 64, x[0])
    same = 0
    with torch.inference_mode():
        for i in range(0, len(x), step):
            got = np.asarray(sess.run(run_input(x[i : i + step])))
            want = module(torch.from_numpy(x[i : i + step])).numpy()
            same += int(
                (got.reshape(len(got), -1).argmax(1) == want.reshape(len(want), -1).argmax(1)).sum()
            )
    return same / max(1, len(x))


def _module_bytes(module: Any) -> bytes:
    """``module`` as ``torch.save`` writes it; ConversionError when it cannot be copied."""
    import torch

    buf = io.BytesIO()
    try:
        torch.save(module, buf)
    except Exception as exc:  # lambdas, hooks, local classes
        raise ConversionError(
            _LABEL, f"the model cannot be copied to the converter's process: {reason(exc)}"
        ) from exc
    return buf.getvalue()


def _check_options(opts: ConvertOptions, calibration: np.ndarray | None) -> None:
    if opts.quant_mode not in LITERT_MODES:
        raise ConfigError(
            f"LiteRT files are made in {', '.join(LITERT_MODES)}, not {opts.quant_mode}",
            hint="pick one of those modes for a LiteRT target",
        )
    if opts.io_type is not None and opts.quant_mode != "int8_static":
        raise ConfigError(
            f"a target with {opts.io_type} inputs and outputs needs a full-integer file, "
            f"which only int8_static makes (asked: {opts.quant_mode})",
            hint="quantize int8_static for this target",
        )
    if opts.quant_mode == "int8_static" and (calibration is None or len(calibration) == 0):
        raise ConfigError(
            "int8_static LiteRT conversion needs calibration samples",
            hint="pass --data: its samples calibrate the activations",
        )


def _convert(module: Any, input_shape: tuple[int, ...], out: Path) -> dict[str, Any]:
    """litert-torch's fp32 file of ``module`` at ``out``."""
    with _quiet():
        import litert_torch
        import torch

        sample = (torch.zeros((1, *input_shape), dtype=torch.float32),)
        try:
            litert_torch.convert(module.eval(), sample).export(str(out))
        except Exception as exc:
            raise ConversionError(_LABEL, reason(exc)) from exc
    return {"converter": f"litert-torch {version('litert-torch')}"}


def _quantize(
    fp32: Path, out: Path, opts: ConvertOptions, calibration: np.ndarray | None
) -> dict[str, Any]:
    """AEQ's recipe for ``opts.quant_mode`` applied to ``fp32``, written to ``out``."""
    with _quiet():
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import qtyping, quantizer, recipe

        name = _RECIPES[opts.quant_mode]
        granularity = (
            qtyping.QuantGranularity.CHANNELWISE
            if opts.per_channel
            else qtyping.QuantGranularity.TENSORWISE
        )
        rules = getattr(recipe, name)()
        for rule in rules:
            rule["op_config"]["weight_tensor_config"]["granularity"] = granularity
        try:
            qt = quantizer.Quantizer(str(fp32))
            qt.load_quantization_recipe(rules)
            result = None
            signature = None
            if qt.need_calibration:
                assert calibration is not None  # _check_options
                # the signature and its input's name, as the file names them
                signatures = Interpreter(model_path=str(fp32)).get_signature_list()
                signature, spec = next(iter(signatures.items()))
                arg = spec["inputs"][0]
                x = np.asarray(calibration, dtype=np.float32)
                result = qt.calibrate({signature: [{arg: x[i : i + 1]} for i in range(len(x))]})
            qt.quantize(result).export_model(str(out), overwrite=True)
        except Exception as exc:
            raise ConversionError(_LABEL, reason(exc)) from exc
    facts: dict[str, Any] = {
        "quantizer": f"ai-edge-quantizer {version('ai-edge-quantizer')}",
        "recipe": name,
        "weight_granularity": granularity.value,
    }
    if signature is not None:
        facts |= {
            "signature": signature,
            "calibration_samples": 0 if calibration is None else len(calibration),
        }
    return facts


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Run with this process's stdout and stderr (file descriptors 1 and 2, where the C++
    parts write) and Python's warnings silenced."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with (
                    warnings.catch_warnings(),
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    warnings.simplefilter("ignore")
                    yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)
