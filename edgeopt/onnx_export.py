"""torch -> ONNX export with a parity check of ONNX Runtime against torch.

Exporter choice: the TorchScript-based exporter (``dynamo=False``). On this class of machine it
is ~30x faster than ``torch.export``-based export, which matters when every trial exports, and
it handles every architecture in the example zoo. Opset 17 is fixed so that quantized graphs
and the cost model see one operator vocabulary.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from edgeopt.data import synthetic_inputs
from edgeopt.errors import CandidateError, ConfigError, EdgeoptError
from edgeopt.inputs import ModelInputs
from edgeopt.loading.formats import has_external_data
from edgeopt.measure.session import ort_session

if TYPE_CHECKING:
    from edgeopt.loading import LoadedModel

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...] | ModelInputs,
    path: str | Path,
    *,
    check_inputs: np.ndarray | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    rel_error: float | None = None,
) -> Path:
    """Export ``model`` (eval mode, CPU) to ``path`` with a dynamic batch axis.

    ``input_shape`` is one sample's shape without the batch dimension, or the model's
    ``ModelInputs`` when it takes several (or integer) ones: the graph then takes them by
    their names, each with a dynamic batch axis and token inputs with a dynamic ``seq`` axis
    (what ORT's transformer fusion matches), and ``check_inputs`` is a structured array.
    When ``check_inputs`` is given (a small batch of real inputs), the ONNX model is run in
    ONNX Runtime and its outputs must match torch within ``atol + rtol*|torch|``; otherwise
    CandidateError names the output and the largest difference. ``rel_error`` (a model that
    runs int8 kernels in ORT, where one rounding step can move an element by a quantum that
    later layers amplify) replaces that element-wise test by one over the batch: the L2 norm
    of the difference within ``rel_error`` of the L2 norm of torch's outputs. The input
    module is not modified.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).eval().cpu()
    if isinstance(input_shape, ModelInputs) and not input_shape.is_single:
        inputs = input_shape
        dummy = _torch_args(inputs, inputs.synthetic(1, seed=0))
        names = list(inputs.names)
        axes = {s.name: _dynamic_axes(s.seq_axis) for s in inputs.specs}
    else:
        inputs = None
        shape = input_shape.first_shape if isinstance(input_shape, ModelInputs) else input_shape
        dummy = (torch.zeros((1, *shape), dtype=torch.float32),)
        names = [INPUT_NAME]
        axes = {INPUT_NAME: {0: "batch"}}
    tmp = out.with_name(out.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                dummy,
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes={**axes, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise CandidateError("export", f"torch.onnx.export failed: {exc}") from exc
    tmp.replace(out)
    if check_inputs is not None:
        check_parity(
            model,
            out,
            check_inputs,
            atol=atol,
            rtol=rtol,
            rel_error=rel_error,
            model_inputs=inputs,
        )
    return out


def _dynamic_axes(seq_axis: int | None) -> dict[int, str]:
    """The dynamic axes of one input: the batch, and its sequence axis when it has one."""
    return {0: "batch"} if seq_axis is None else {0: "batch", seq_axis + 1: "seq"}


def _torch_args(inputs: ModelInputs, x: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Structured batch ``x`` as one tensor per input, in the model's input order."""
    feeds = inputs.feeds(x)
    return tuple(torch.from_numpy(feeds[n]) for n in inputs.names)


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    inputs: np.ndarray,
    *,
    atol: float,
    rtol: float,
    rel_error: float | None = None,
    model_inputs: ModelInputs | None = None,
) -> float:
    """Run torch and ORT on ``inputs`` (a structured array for ``model_inputs``, several
    inputs); return the max abs difference or raise CandidateError (``export_onnx`` says
    which test ``rel_error`` chooses)."""
    sess = ort_session(onnx_path, threads=1)
    if model_inputs is not None:
        feeds = model_inputs.feeds(inputs)
        args = _torch_args(model_inputs, inputs)
    else:
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        feeds, args = {sess.get_inputs()[0].name: x}, (torch.from_numpy(x),)
    with torch.no_grad():
        expected = model.eval()(*args).numpy()
    got = sess.run(None, feeds)[0]
    if got.shape != expected.shape:
        raise CandidateError(
            "export",
            f"ONNX output '{sess.get_outputs()[0].name}' has shape {got.shape}, "
            f"torch gives {expected.shape}",
        )
    name = sess.get_outputs()[0].name
    diff = np.abs(got - expected)
    if rel_error is not None:
        rel = float(np.linalg.norm(diff.astype(np.float64))) / max(
            float(np.linalg.norm(expected.astype(np.float64))), 1e-12
        )
        if rel > rel_error:
            raise CandidateError(
                "export",
                f"ONNX output '{name}' differs from torch: relative error {rel:.3g} > "
                f"tolerance {rel_error:.3g} (L2 norm over {len(expected)} check inputs)",
            )
        return float(diff.max())
    bad = diff > atol + rtol * np.abs(expected)
    if bad.any():
        raise CandidateError(
            "export",
            f"ONNX output '{name}' differs from torch: "
            f"max abs difference {float(diff.max()):.3g} > tolerance (atol {atol}, rtol {rtol})",
        )
    return float(diff.max())


def loaded_to_onnx(
    loaded: LoadedModel, workdir: str | Path, sample: np.ndarray | None = None
) -> Path:
    """The ONNX file for a LoadedModel: its own file for ONNX input, else an export to
    ``workdir/<stem>.onnx`` checked for parity on ``sample`` (or seeded random inputs).

    An export failure here is the user's model failing, not one candidate: EdgeoptError."""
    if loaded.onnx_path is not None:
        return inline_external_data(loaded.onnx_path, Path(workdir))
    single = loaded.inputs.is_single
    if sample is None:
        if single:
            sample = synthetic_inputs(loaded.input_shape, 4, seed=0)
        else:
            sample = loaded.inputs.synthetic(4, seed=0)
    out = Path(workdir) / f"{loaded.source.stem}.onnx"
    shape = loaded.input_shape if single else loaded.inputs
    try:
        return export_onnx(loaded.module, shape, out, check_inputs=sample[:8])
    except CandidateError as exc:
        raise EdgeoptError(f"cannot export {loaded.source} to ONNX: {exc.reason}") from exc


MAX_INLINE_BYTES = 2**31 - 2**20
"""The largest ONNX model written as one file (protobuf's 2 GiB limit, with a margin)."""


def inline_external_data(path: Path, workdir: Path, name: str | None = None) -> Path:
    """``path`` itself, or for an ONNX model with external data (weights in files beside
    it), a copy ``workdir/<name>`` (default ``<stem>.onnx``) with the weights inside: the run
    directory, the trial files and every later stage then hold the whole model in one file.
    ConfigError for a model too large for one file."""
    import onnx

    header = onnx.load(str(path), load_external_data=False)
    if not has_external_data(header):
        return path
    model = onnx.load(str(path))  # the external data, relative to the model's folder
    if model.ByteSize() > MAX_INLINE_BYTES:
        raise ConfigError(
            f"ONNX model {path} with external data is {model.ByteSize() / 2**30:.1f} GiB, over "
            "the 2 GiB edgeopt can keep in one file",
            hint="edgeopt optimizes ONNX models under 2 GiB; start from the PyTorch model",
        )
    out = Path(workdir) / (name or f"{path.stem}.onnx")
    if out.resolve() == path.resolve():
        out = out.with_name(f"{path.stem}.inlined.onnx")
    onnx.save(model, str(out))
    return out
