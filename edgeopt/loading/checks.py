"""Fail-fast checks that a loaded model fits its input shape and the user's data."""

from __future__ import annotations

from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.loading.spec import LoadedModel


def check_model_and_data(loaded: LoadedModel, data: Any) -> None:
    """Fail fast (ConfigError) when ``data`` (an ``edgeopt.data.DataBundle`` or
    ``ScoringData``, or None for synthetic inputs) does not fit the model: a sample shape it
    cannot take (``check_input_shape``), or a class label at or above the model's number of
    outputs."""
    check_input_shape(loaded, data.input_shape if data is not None else loaded.input_shape)
    if data is None:
        return
    out = model_output_shape(loaded)
    if out is None or len(out) != 2:
        return  # not a (batch, classes) classifier output: nothing to compare labels with
    classes = out[1]
    split, top = data.max_label()
    if top >= classes:
        raise ConfigError(
            f"labels in y_{split} go up to {top}, but the model has {classes} outputs "
            f"(classes 0..{classes - 1})",
            hint="labels must be class indices below the model's output size; check that the "
            "data file belongs to this model and its labels are not offset",
        )


def model_output_shape(loaded: LoadedModel) -> tuple[int, ...] | None:
    """The model's first output's shape for a batch of one sample (None when it is not a
    tensor); an ONNX input reports its probe run's."""
    if loaded.module is None:
        return loaded.output_shape
    import torch

    with torch.no_grad():
        out = loaded.module.eval()(torch.zeros((1, *loaded.input_shape)))
    if isinstance(out, tuple | list) and out:
        out = out[0]
    return tuple(int(d) for d in out.shape) if isinstance(out, torch.Tensor) else None


def check_input_shape(loaded: LoadedModel, sample_shape: tuple[int, ...]) -> None:
    """Run one forward pass with ``sample_shape`` to fail fast on a wrong data or flag shape."""
    if tuple(sample_shape) != tuple(loaded.input_shape):
        raise ConfigError(
            f"data samples have shape {tuple(sample_shape)} but the model expects "
            f"{tuple(loaded.input_shape)}",
            hint="pass data shaped like the model's input (or fix --input-shape)",
        )
    if loaded.module is None:
        return
    import torch

    try:
        with torch.no_grad():
            loaded.module.eval()(torch.zeros((1, *sample_shape)))
    except Exception as exc:
        raise ConfigError(
            f"the model fails on input shape {tuple(sample_shape)}: {str(exc).splitlines()[0]}",
            hint="pass --input-shape with the shape the model was trained on",
        ) from exc
