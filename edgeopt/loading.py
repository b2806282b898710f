"""Load the model formats users actually have, safely by default.

Formats: edgeopt's own bundle (state_dict + architecture reference + input shape, readable with
``torch.load(weights_only=True)``), a plain ``state_dict`` with ``--arch module:callable``, a
TorchScript archive, a ``torch.export`` ``.pt2`` program, an ``.onnx`` file, and a full
``torch.save(model)`` pickle only with ``trust_pickle=True`` (unpickling runs code from the file).
"""

from __future__ import annotations

import importlib
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError

BUNDLE_KEY = "edgeopt_bundle"
BUNDLE_VERSION = 1


class ModelFormat(StrEnum):
    """How a model file was stored."""

    BUNDLE = "bundle"
    STATE_DICT = "state_dict"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "exported_program"
    ONNX = "onnx"
    PICKLE = "pickle"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the pipeline.

    Exactly one of ``module`` (torch formats) and ``onnx_path`` (ONNX input: only the ONNX-side
    stages apply) is set. ``input_shape`` is one sample's shape without the batch dimension.
    """

    source: Path
    format: ModelFormat
    input_shape: tuple[int, ...]
    module: Any = None  # torch.nn.Module; typed Any so this module imports without torch
    onnx_path: Path | None = None

    @property
    def is_onnx(self) -> bool:
        return self.onnx_path is not None


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1,16,16"`` or ``"1x16x16"`` (one sample, no batch dimension)."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(
            f"invalid input shape {text!r}",
            hint="give one sample's shape without the batch dimension, e.g. --input-shape 3,32,32",
        )
    return shape


def resolve_callable(ref: str) -> Any:
    """Import ``module:callable`` (e.g. ``mypkg.nets:resnet18``)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"invalid architecture reference {ref!r}",
            hint="use --arch module.path:callable, e.g. --arch mypkg.nets:resnet18",
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for --arch {ref}: {exc}",
            hint="make the module importable (pip install it or add its folder to PYTHONPATH)",
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (from --arch {ref})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--arch {ref} is not callable")
    return obj


def save_bundle(
    model: Any,
    path: str | Path,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...],
) -> Path:
    """Save ``model``'s weights as an edgeopt bundle that loads with ``weights_only=True``."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        BUNDLE_KEY: BUNDLE_VERSION,
        "arch": arch,
        # JSON keeps the kwargs to plain types the safe unpickler accepts
        "arch_kwargs": json.dumps(dict(arch_kwargs or {})),
        "input_shape": list(input_shape),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    trust_pickle: bool = False,
) -> LoadedModel:
    """Detect the format of ``path`` and load it.

    Raises ConfigError (exit 2) for a missing file, an unknown or corrupt format, a pickle
    without ``trust_pickle``, a state_dict without ``arch``, or weights that do not fit ``arch``.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"model file not found: {p}", hint="check the path to your model")
    if p.is_dir():
        raise ConfigError(f"model path is a directory: {p}", hint="pass a model file")
    if p.stat().st_size == 0:
        raise ConfigError(f"model file is empty: {p}", hint="re-save or re-export the model")
    if p.suffix.lower() == ".onnx":
        return _load_onnx(p, input_shape)
    if p.suffix.lower() == ".pt2":
        return _load_exported_program(p, input_shape)
    if not zipfile.is_zipfile(p):
        raise ConfigError(
            f"{p} is not a model edgeopt can read (not a torch zip archive or .onnx/.pt2)",
            hint="supported: edgeopt bundle, state_dict (+ --arch), TorchScript, .pt2, .onnx, "
            "or a full pickle with --trust-pickle; a truncated download also looks like this",
        )
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"{p} is a corrupt archive: {exc}", hint="re-save the model") from exc
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return _load_torchscript(p, input_shape)
    return _load_torch_save(p, arch, arch_kwargs, input_shape, trust_pickle)


def _load_onnx(p: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ConfigError(
            f"{p} is not a valid ONNX model: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            hint="re-export the model; a truncated file also fails this way",
        ) from exc
    if len(model.graph.input) == 0:
        raise ConfigError(f"ONNX model {p} has no inputs")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    graph_shape = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims)[1:]
    shape = input_shape or graph_shape
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(
            f"ONNX model {p} has a dynamic input shape {graph_shape}",
            hint="pass --input-shape, e.g. --input-shape 3,224,224",
        )
    if input_shape and graph_shape and all(graph_shape) and graph_shape != input_shape:
        raise ConfigError(
            f"--input-shape {input_shape} does not match the ONNX graph's input {graph_shape}",
            hint=f"use --input-shape {','.join(map(str, graph_shape))} or omit it",
        )
    return LoadedModel(p, ModelFormat.ONNX, tuple(shape), onnx_path=p)


def _require_shape(p: Path, shape: tuple[int, ...] | None, fmt: str) -> tuple[int, ...]:
    if shape is None:
        raise ConfigError(
            f"{p} is a {fmt}, which does not record its input shape",
            hint="pass --input-shape, e.g. --input-shape 3,32,32",
        )
    return shape


def _load_torchscript(p: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    import torch

    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ConfigError(f"cannot load TorchScript archive {p}: {exc}") from exc
    shape = _require_shape(p, input_shape, "TorchScript archive")
    return LoadedModel(p, ModelFormat.TORCHSCRIPT, shape, module=module.eval())


def _load_exported_program(p: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    import torch

    try:
        program = torch.export.load(str(p))
    except Exception as exc:
        raise ConfigError(
            f"cannot load torch.export program {p}: {str(exc).splitlines()[0]}",
            hint="save it with torch.export.save(torch.export.export(model, args), 'model.pt2')",
        ) from exc
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs
    ]
    if len(placeholders) != 1:
        raise ConfigError(
            f"{p} takes {len(placeholders)} inputs; edgeopt supports models with one input tensor"
        )
    dims = list(placeholders[0].meta["val"].shape)
    if not dims or isinstance(dims[0], int):
        raise ConfigError(
            f"{p} was exported with a fixed batch size; edgeopt needs a dynamic batch dimension",
            hint="re-export with torch.export.export(model, (x,), "
            "dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))",
        )
    graph_shape = tuple(int(d) for d in dims[1:])
    if input_shape is not None and input_shape != graph_shape:
        raise ConfigError(
            f"--input-shape {input_shape} does not match the program's input {graph_shape}",
            hint=f"use --input-shape {','.join(map(str, graph_shape))} or omit it",
        )
    shape = graph_shape
    return LoadedModel(p, ModelFormat.EXPORTED_PROGRAM, shape, module=program.module())


def _load_torch_save(
    p: Path,
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | None,
    input_shape: tuple[int, ...] | None,
    trust_pickle: bool,
) -> LoadedModel:
    import pickle

    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses arbitrary objects: this is a full pickle of a model
        return _load_pickle(p, input_shape, trust_pickle)
    except Exception as exc:
        raise ConfigError(
            f"cannot read {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="the file may be truncated or corrupt; re-save it",
        ) from exc

    if isinstance(obj, dict) and obj.get(BUNDLE_KEY) is not None:
        shape = input_shape or tuple(int(d) for d in obj["input_shape"])
        kwargs = json.loads(obj.get("arch_kwargs") or "{}")
        module = _build(p, str(obj["arch"]), kwargs, obj["state_dict"])
        return LoadedModel(p, ModelFormat.BUNDLE, shape, module=module)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if arch is None:
            raise ConfigError(
                f"{p} is a state_dict (weights only); edgeopt needs the architecture",
                hint="pass --arch module:callable that builds the model (and --arch-kwargs JSON)",
            )
        module = _build(p, arch, dict(arch_kwargs or {}), obj)
        shape = _require_shape(p, input_shape, "state_dict")
        return LoadedModel(p, ModelFormat.STATE_DICT, shape, module=module)
    raise ConfigError(
        f"{p} holds a {type(obj).__name__} that is neither a bundle nor a state_dict",
        hint="save model.state_dict() or use edgeopt.loading.save_bundle",
    )


def _load_pickle(p: Path, input_shape: tuple[int, ...] | None, trust_pickle: bool) -> LoadedModel:
    import torch

    if not trust_pickle:
        raise ConfigError(
            f"{p} is a full pickled model; loading it would run code from the file",
            hint="if you trust the file, pass --trust-pickle; safer: save model.state_dict() "
            "and pass --arch module:callable",
        )
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(
            f"cannot unpickle {p}: {exc}",
            hint="the model's class must be importable (same module path as when saved)",
        ) from exc
    if not isinstance(obj, torch.nn.Module):
        raise ConfigError(f"{p} holds a {type(obj).__name__}, not a torch.nn.Module")
    shape = _require_shape(p, input_shape, "pickled model")
    return LoadedModel(p, ModelFormat.PICKLE, shape, module=obj.eval())


def _build(p: Path, arch: str, kwargs: Mapping[str, Any], state_dict: Mapping[str, Any]) -> Any:
    import torch

    builder = resolve_callable(arch)
    try:
        module = builder(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {arch} with kwargs {dict(kwargs)}: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"{arch} returned a {type(module).__name__}, not a torch.nn.Module")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ConfigError(
            f"weights in {p} do not fit architecture {arch}: {detail}",
            hint="check --arch and --arch-kwargs match the model that was saved",
        ) from exc
    return module.eval()


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


@dataclass(frozen=True)
class ModelSpec:
    """How to load the user's model again (in a worker process, or when resuming a run)."""

    path: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    trust_pickle: bool = False

    def load(self) -> LoadedModel:
        return load_model(
            self.path,
            arch=self.arch,
            arch_kwargs=self.arch_kwargs,
            input_shape=self.input_shape,
            trust_pickle=self.trust_pickle,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "trust_pickle": self.trust_pickle,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        shape = data.get("input_shape")
        return cls(
            path=str(data["path"]),
            arch=data.get("arch"),
            arch_kwargs=data.get("arch_kwargs"),
            input_shape=tuple(shape) if shape else None,
            trust_pickle=bool(data.get("trust_pickle", False)),
        )
