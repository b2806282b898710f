"""``load_model``: find a model file's format and hand it to that format's reader."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.loading.checks import with_vocab
from edgeopt.loading.formats import (
    load_exported_program,
    load_onnx,
    load_torch_save,
    load_torchscript,
    verified_names,
)
from edgeopt.loading.limits import check_input_size
from edgeopt.loading.runtime_files import is_runtime_file, load_runtime_file
from edgeopt.loading.spec import LoadedModel, ModelFormat, ModelSpec, shape_text


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust_pickle: bool = False,
    trust_arch: bool = False,
    data_shape: tuple[int, ...] | None = None,
    inputs: ModelInputs | None = None,
    data_inputs: ModelInputs | None = None,
) -> LoadedModel:
    """Detect the format of ``path`` and load it.

    ``arch`` builds a state_dict, and replaces a bundle's recorded architecture;
    ``arch_kwargs`` override the bundle's recorded ones key by key. A bundle whose recorded
    architecture is not in ``edgeopt.zoo`` loads only with ``arch`` or ``trust_arch``.
    ``data_shape`` is one sample's shape in the data the model will see (``x_train``): a
    format that records no input shape (state_dict, TorchScript, pickle) takes it when
    ``input_shape`` is not given (``shape_from_data`` says so), and an ``input_shape`` that
    differs from it is refused.

    Raises ConfigError (exit 2) for a missing or unreadable file, an unknown, corrupt or
    damaged (CRC) format, a pickle without ``trust_pickle``, a bundle naming other code without
    an opt-in, a state_dict without ``arch``, weights that do not fit ``arch``, an ONNX
    model ONNX Runtime cannot open and run, or an ``input_shape`` that contradicts
    ``data_shape``. ``inputs`` (``--input-shape NAME=DIMS[:DTYPE]`` per input) describes a
    model with several or integer inputs; an ONNX graph records them itself (the flags fill
    its dynamic dims and must name its inputs and types). ``data_inputs``: the inputs the
    data holds, when it holds several (they fill an ONNX graph's dynamic dims when no flag
    does, and must name its inputs).
    """
    spec = ModelSpec(os.fspath(path), arch, arch_kwargs, input_shape, trust_pickle, trust_arch)
    spec = replace(spec, inputs=inputs)
    return load_spec(spec, data_shape, data_inputs)


def load_spec(
    spec: ModelSpec,
    data_shape: tuple[int, ...] | None = None,
    data_inputs: ModelInputs | None = None,
) -> LoadedModel:
    """``load_model`` with the path and options in ``spec`` (a run's recorded ``ModelSpec``)."""
    spec.check_arch_named()  # before anything is imported or read
    input_shape = spec.input_shape
    if input_shape and data_shape and tuple(input_shape) != tuple(data_shape):
        raise ConfigError(
            f"--input-shape {shape_text(input_shape)} contradicts --data, whose samples have "
            f"shape {shape_text(data_shape)}",
            hint="leave --input-shape out (it is taken from --data), or pass data shaped like "
            "the model's input",
        )
    if input_shape:  # --input-shape, or the shape a run directory recorded
        check_input_size(input_shape, f"model {spec.path}")
    given = spec.inputs
    if given is not None and input_shape is None:  # the readers take the first input's shape
        spec = replace(spec, input_shape=given.first_shape)
    loaded = _load_any(Path(spec.path), spec, data_shape, data_inputs)
    if loaded.module is not None and (given or loaded.input_specs) is not None:
        loaded = replace(loaded, input_specs=with_vocab(loaded.module, given or loaded.inputs))
        loaded = replace(loaded, input_shape=loaded.inputs.first_shape)
    # every format: the shape is known now, and no input of it has been allocated yet
    check_input_size(loaded.input_shape, f"model {spec.path}")
    if input_shape is None and data_shape is not None and loaded.format in _SHAPELESS:
        return replace(loaded, shape_from_data=True)
    return loaded


# formats whose file records no input shape
_SHAPELESS = frozenset({ModelFormat.STATE_DICT, ModelFormat.TORCHSCRIPT, ModelFormat.PICKLE})


def _load_any(
    p: Path,
    spec: ModelSpec,
    data_shape: tuple[int, ...] | None,
    data_inputs: ModelInputs | None = None,
) -> LoadedModel:
    """``load_spec`` after its shape check: find the format and load the file ``p``."""
    if not p.exists():
        raise ConfigError(f"model file not found: {p}", hint="check the path to your model")
    if p.is_dir():
        raise ConfigError(f"model path is a directory: {p}", hint="pass a model file")
    if p.stat().st_size == 0:
        raise ConfigError(f"model file is empty: {p}", hint="re-save or re-export the model")
    try:
        with p.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read model file {p}: {exc.strerror or exc}",
            hint="check the file's permissions",
        ) from exc
    if p.suffix.lower() == ".onnx":
        return load_onnx(p, spec.input_shape, spec.inputs, data_inputs)
    if is_runtime_file(p):
        return load_runtime_file(p, spec.input_shape)
    if p.suffix.lower() == ".pt2":
        return load_exported_program(p, _pt2_names(p), spec.input_shape, spec.trust_pickle)
    if not zipfile.is_zipfile(p):
        raise ConfigError(
            f"{p} is not a model edgeopt can read (not a torch zip archive or .onnx/.pt2)",
            hint="supported: edgeopt bundle, state_dict (+ --arch), TorchScript, .pt2, .onnx, "
            ".ort, OpenVINO .xml or .tflite (bench/check), or a full pickle with --trust-pickle; a "
            "truncated download also looks like this",
        )
    names = verified_names(p)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return load_torchscript(p, spec.input_shape or data_shape)
    return load_torch_save(p, spec, data_shape)


def _pt2_names(p: Path) -> list[str]:
    """The CRC-checked members of the ``.pt2`` archive ``p``; ConfigError for a file that is
    not one (truncated, another format renamed), before torch logs its own traceback."""
    if not zipfile.is_zipfile(p):
        raise ConfigError(
            f"{p} is not a torch.export .pt2 archive (not a zip archive)",
            hint="a truncated download looks like this: re-download or re-save it with "
            "torch.export.save; an ONNX or other model file needs its own extension",
        )
    names = verified_names(p)
    if not any(n == "archive_format" or n.endswith("/archive_format") for n in names):
        other = any(n.endswith("data.pkl") for n in names)
        raise ConfigError(
            f"{p} is a zip archive but not a torch.export .pt2 program (no archive_format)",
            hint="it looks like a torch.save file: rename it to .pt"
            if other
            else "save the program with torch.export.save(torch.export.export(model, args), "
            "'model.pt2')",
        )
    return names
