"""Fail-fast checks that a loaded model fits its input shape and the user's data."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.inputs import InputRole, ModelInputs
from edgeopt.loading.spec import LoadedModel


def check_model_and_data(loaded: LoadedModel, data: Any) -> None:
    """Fail fast (ConfigError) when ``data`` (an ``edgeopt.data.DataBundle`` or
    ``ScoringData``, or None for synthetic inputs) does not fit the model: a sample shape it
    cannot take (``check_input_shape``), or a class label at or above the model's number of
    outputs; for several inputs, data that holds other inputs (``check_data_inputs``)."""
    held = getattr(data, "inputs", None)
    if data is not None:
        check_data_inputs(loaded, held)
    if not loaded.inputs.is_single:
        check_inputs_run(loaded)
    else:
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
        if loaded.input_specs is not None and not loaded.inputs.is_single:
            out = loaded.module.eval()(*_torch_args(loaded.inputs.synthetic(1, seed=0)))
        else:
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


def check_data_inputs(loaded: LoadedModel, held: ModelInputs | None) -> None:
    """ConfigError unless the data's inputs ``held`` (None: one plain array per split) are
    the model's: the same names, each of the same shape and kind (integer or float)."""
    model = loaded.inputs
    per_input = ", ".join(f"x_<split>.{n}" for n in model.names)
    if held is None:
        if model.is_single:
            return
        raise ConfigError(
            f"{loaded.source} takes {model.text()}, but the data holds one array per split",
            hint=f"save each input of a split as its own array: {per_input}",
        )
    if model.is_single or set(held.names) != set(model.names):
        raise ConfigError(
            f"the data holds inputs {', '.join(held.names)}, but {loaded.source} takes "
            f"{', '.join(model.names)}",
            hint=f"name the data's arrays after the model's inputs: {per_input}"
            if not model.is_single
            else "save the inputs as one float array per split: x_train, x_val, ...",
        )
    by_name = {s.name: s for s in held.specs}
    for s in model.specs:
        h = by_name[s.name]
        if (h.dtype == "float32") != (s.dtype == "float32"):
            raise ConfigError(
                f"the data holds {s.name} as {h.dtype}, but {loaded.source} takes {s.dtype}",
                hint=f"save x_<split>.{s.name} as {s.dtype}",
            )
        if h.shape != s.shape:
            raise ConfigError(
                f"the data holds {s.name} of shape {h.shape}, but {loaded.source} takes {s.shape}",
                hint=f"pass data shaped like the model's input (or --input-shape "
                f"{s.name}={','.join(map(str, h.shape))}:{s.dtype} for a dynamic length)",
            )


def check_inputs_run(loaded: LoadedModel) -> None:
    """Run one forward pass of a torch model with several inputs on one synthetic sample
    to fail fast on inputs it cannot take (an ONNX model ran at load)."""
    if loaded.module is None:
        return
    import torch

    try:
        with torch.no_grad():
            loaded.module.eval()(*_torch_args(loaded.inputs.synthetic(1, seed=0)))
    except Exception as exc:
        raise ConfigError(
            f"the model fails on inputs {loaded.inputs.text()}: {str(exc).splitlines()[0]}",
            hint="pass --input-shape NAME=DIMS:DTYPE for each input the model was trained on",
        ) from exc


def _torch_args(x: np.ndarray) -> tuple[Any, ...]:
    """A structured sample array as one tensor per field, in field order."""
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(x[f])) for f in x.dtype.names or ())


def with_vocab(module: Any, inputs: ModelInputs) -> ModelInputs:
    """``inputs`` with the vocabulary of each token-id input that has none: the rows of the
    ``nn.Embedding`` whose forward receives that input unchanged (found by one forward on
    ids 0/1, valid for any embedding). Unchanged when the forward fails (the checks that
    run it next say why) or no embedding reads the ids directly."""
    wanted = [s for s in inputs.specs if s.role is InputRole.TOKEN_IDS and s.vocab_size is None]
    if inputs.is_single or not wanted:
        return inputs
    import torch

    args = _torch_args(inputs.synthetic(1, seed=0))
    seen: dict[int, int] = {}

    def hook(mod: Any, a: tuple[Any, ...]) -> None:
        if a and isinstance(a[0], torch.Tensor):
            seen.setdefault(id(a[0]), int(mod.num_embeddings))

    handles = [
        m.register_forward_pre_hook(hook)
        for m in module.modules()
        if isinstance(m, torch.nn.Embedding)
    ]
    try:
        with torch.no_grad():
            module.eval()(*args)
    except Exception:
        return inputs
    finally:
        for h in handles:
            h.remove()
    vocab = {name: seen.get(id(t)) for name, t in zip(inputs.names, args, strict=True)}
    return ModelInputs(
        tuple(replace(s, vocab_size=vocab[s.name]) if s in wanted else s for s in inputs.specs)
    )
