"""Load the model formats users actually have, safely by default.

Formats: edgeopt's own bundle (state_dict + architecture reference + input shape, readable with
``torch.load(weights_only=True)``), a plain ``state_dict`` with ``--arch module:callable``, a
TorchScript archive, a ``torch.export`` ``.pt2`` program, an ``.onnx`` file, and a full
``torch.save(model)`` pickle only with ``trust_pickle=True`` (unpickling runs code from the file).

What a file may make edgeopt run: nothing, unless the user opts in. A bundle's recorded
architecture is built only when it is one of edgeopt's own (``edgeopt.zoo``), when the user
names the builder with ``arch`` (``--arch``), or with ``trust_arch=True`` (``--trust-arch``).
A ``.pt2`` archive with payloads torch would unpickle in full loads only with ``trust_pickle``.
Zip archives are CRC-checked before torch reads them, and an ONNX file must open and run once
in ONNX Runtime before anything else uses it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError

BUNDLE_KEY = "edgeopt_bundle"
BUNDLE_VERSION = 1
BUILTIN_ARCH_MODULE = "edgeopt.zoo"
"""The module whose builders a bundle may name without ``--arch`` or ``--trust-arch``."""

_FORCE_PICKLE_ENV = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
_ARCH_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")
_ORT_NODE = re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'(.*?)' ")
_ORT_SOURCE = re.compile(r"Status Message: \S+\.(?:h|cc):\d+ .*? was false\. |Status Message: ")


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
    output_shape: tuple[int, ...] | None = None
    """ONNX input: the first output's shape from the probe run at load (batch included)."""
    shape_from_data: bool = False
    """``input_shape`` is the data's sample shape: the file records none and none was given."""

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


def is_builtin_arch(ref: str) -> bool:
    """True for ``edgeopt.zoo:<builder>``: what a bundle may name without an opt-in."""
    module_name, _, attr = ref.partition(":")
    if module_name != BUILTIN_ARCH_MODULE:
        return False
    from edgeopt.zoo import BUILDERS

    return attr in BUILDERS


def resolve_callable(ref: str) -> Any:
    """Import ``module:callable`` (e.g. ``mypkg.nets:resnet18``).

    This imports and so runs the module's code: call it only with a reference the user named
    or trusted (see the module docstring)."""
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
    except Exception as exc:  # the module itself raises while it is imported
        raise ConfigError(
            f"importing {module_name!r} for --arch {ref} failed: {type(exc).__name__}: {exc}"
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
    trust_arch: bool = False,
    data_shape: tuple[int, ...] | None = None,
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
    ``data_shape``.
    """
    if input_shape and data_shape and tuple(input_shape) != tuple(data_shape):
        raise ConfigError(
            f"--input-shape {_shape_text(input_shape)} contradicts --data, whose samples have "
            f"shape {_shape_text(data_shape)}",
            hint="leave --input-shape out (it is taken from --data), or pass data shaped like "
            "the model's input",
        )
    loaded = _load_any(
        Path(path), arch, arch_kwargs, input_shape, trust_pickle, trust_arch, data_shape
    )
    if input_shape is None and data_shape is not None and loaded.format in _SHAPELESS:
        return replace(loaded, shape_from_data=True)
    return loaded


# formats whose file records no input shape
_SHAPELESS = frozenset({ModelFormat.STATE_DICT, ModelFormat.TORCHSCRIPT, ModelFormat.PICKLE})


def _shape_text(shape: tuple[int, ...]) -> str:
    """``(1, 16, 16)`` as the flag spells it: ``1,16,16``."""
    return ",".join(str(d) for d in shape)


def _load_any(
    p: Path,
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | None,
    input_shape: tuple[int, ...] | None,
    trust_pickle: bool,
    trust_arch: bool,
    data_shape: tuple[int, ...] | None,
) -> LoadedModel:
    """``load_model`` after its shape check: find the format and load the file."""
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
        return _load_onnx(p, input_shape)
    if p.suffix.lower() == ".pt2":
        names = _verified_names(p) if zipfile.is_zipfile(p) else []
        return _load_exported_program(p, names, input_shape, trust_pickle)
    if not zipfile.is_zipfile(p):
        raise ConfigError(
            f"{p} is not a model edgeopt can read (not a torch zip archive or .onnx/.pt2)",
            hint="supported: edgeopt bundle, state_dict (+ --arch), TorchScript, .pt2, .onnx, "
            "or a full pickle with --trust-pickle; a truncated download also looks like this",
        )
    names = _verified_names(p)
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return _load_torchscript(p, input_shape or data_shape)
    return _load_torch_save(
        p, arch, arch_kwargs, input_shape, trust_pickle, trust_arch, data_shape=data_shape
    )


def _verified_names(p: Path) -> list[str]:
    """The members of zip archive ``p`` after checking every member's CRC (torch's reader
    does not, so a damaged file would otherwise load damaged weights)."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise ConfigError(
            f"{p} is a corrupt archive: {exc}",
            hint="re-download or re-save the model",
        ) from exc
    if bad is not None:
        raise ConfigError(
            f"{p} is damaged: archive member {bad!r} fails its CRC check",
            hint="the file changed after it was saved (disk, copy or download error); "
            "re-download or re-save the model",
        )
    return names


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
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise ConfigError(f"ONNX model {p} has no inputs")
    if len(inputs) > 1:
        raise ConfigError(
            f"ONNX model {p} takes {len(inputs)} inputs; "
            "edgeopt supports models with one input tensor"
        )
    elem = inputs[0].type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(elem).lower()
        raise ConfigError(
            f"ONNX model {p} takes {kind} input; edgeopt feeds float32 tensors",
            hint="export the model with a float32 input",
        )
    dims = inputs[0].type.tensor_type.shape.dim
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
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    out_shape = _probe_onnx(p, model, tuple(shape), max(1, batch))
    return LoadedModel(p, ModelFormat.ONNX, tuple(shape), onnx_path=p, output_shape=out_shape)


def _ort_reason(exc: Exception) -> str:
    """ONNX Runtime's message without its code prefix, first line only."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _ORT_PREFIX.sub("", text).strip()
    text = _ORT_NODE.sub(lambda m: f"{m[1]} node {m[2]!r}: " if m[2] else f"{m[1]} node: ", text)
    return _ORT_SOURCE.sub("", text, count=1)


def _probe_onnx(p: Path, model: Any, shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    """Open ``p`` in an ONNX Runtime session and run it once on zeros; returns the first
    output's shape. Everything later (export, quantize, measure) relies on both working."""
    import numpy as np
    import onnxruntime as ort

    from edgeopt.measure.session import ort_session

    standard = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    custom = sorted(
        {f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain not in standard}
    )
    try:
        sess = ort_session(p, threads=1)
    except Exception as exc:
        raise ConfigError(
            f"ONNX Runtime cannot load {p}: {_ort_reason(exc)}",
            hint="edgeopt runs every model in ONNX Runtime (CPU); re-export it with standard "
            "ONNX ops" + (f" (custom ops here: {', '.join(custom)})" if custom else ""),
        ) from exc
    x = np.zeros((batch, *shape), dtype=np.float32)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the error is raised (and reported once) below
    try:
        out = sess.run(None, {sess.get_inputs()[0].name: x}, quiet)[0]
    except Exception as exc:
        raise ConfigError(
            f"ONNX Runtime cannot run {p} on an input of shape {(batch, *shape)}: "
            f"{_ort_reason(exc)}",
            hint="if the model takes another input shape, pass --input-shape; "
            "otherwise re-export it",
        ) from exc
    return tuple(int(d) for d in np.shape(out))


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


def _pt2_pickled_payloads(p: Path, names: list[str]) -> list[str]:
    """Entries of a ``.pt2`` archive that ``torch.export.load`` would unpickle with full
    pickle (``use_pickle`` weights and constants, custom and opaque objects)."""
    from torch.export.pt2_archive import constants as pt2

    objects = (pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX)
    found: list[str] = []
    with zipfile.ZipFile(p) as zf:
        for name in names:
            if not name.endswith("_config.json") or "/data/" not in name:
                continue
            try:
                config = json.loads(zf.read(name)).get("config", {})
            except (ValueError, AttributeError):
                continue  # not a payload config torch can read either: it fails there
            for fqn, meta in config.items() if isinstance(config, dict) else ():
                meta = meta if isinstance(meta, dict) else {}
                if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(objects):
                    found.append(str(fqn))
    return found


@contextlib.contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Make every ``torch.load`` inside weights-only, even one that asks for full pickle
    (``torch.export.load`` falls back to it for some payloads)."""
    saved = {k: os.environ.pop(k, None) for k in _FORCE_PICKLE_ENV}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_exported_program(
    p: Path, names: list[str], input_shape: tuple[int, ...] | None, trust_pickle: bool
) -> LoadedModel:
    import torch

    pickled = [] if trust_pickle else _pt2_pickled_payloads(p, names)
    if pickled:
        raise ConfigError(
            f"{p} holds pickled objects ({', '.join(pickled[:3])}); loading it would run code "
            "from the file",
            hint="if you trust the file, pass --trust-pickle; a plain model exported with "
            "torch.export.save holds none",
        )
    try:
        if trust_pickle:
            program = torch.export.load(str(p))
        else:
            with _weights_only_torch_load():
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
    module = program.module()
    # the program runs as it was exported; torch makes train()/eval() raise on it, while
    # edgeopt's stages call them: drop the overrides, so they only set the flag
    for name in ("train", "eval"):
        module.__dict__.pop(name, None)
    return LoadedModel(p, ModelFormat.EXPORTED_PROGRAM, graph_shape, module=module)


def _load_torch_save(
    p: Path,
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | None,
    input_shape: tuple[int, ...] | None,
    trust_pickle: bool,
    trust_arch: bool,
    *,
    data_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    """A ``torch.save`` file: a bundle, a state_dict or a full pickle; the last two record
    no input shape and take ``input_shape``, else ``data_shape``."""
    import pickle

    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses arbitrary objects: this is a full pickle of a model
        return _load_pickle(p, input_shape or data_shape, trust_pickle)
    except Exception as exc:
        raise ConfigError(
            f"cannot read {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="the file may be truncated or corrupt; re-save it",
        ) from exc

    if isinstance(obj, dict) and obj.get(BUNDLE_KEY) is not None:
        return _load_bundle(p, obj, arch, arch_kwargs, input_shape, trust_arch)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if arch is None:
            raise ConfigError(
                f"{p} is a state_dict (weights only); edgeopt needs the architecture",
                hint="pass --arch module:callable that builds the model (and --arch-kwargs JSON)",
            )
        module = _build(p, arch, dict(arch_kwargs or {}), obj)
        shape = _require_shape(p, input_shape or data_shape, "state_dict")
        return LoadedModel(p, ModelFormat.STATE_DICT, shape, module=module)
    raise ConfigError(
        f"{p} holds a {type(obj).__name__} that is neither a bundle nor a state_dict",
        hint="save model.state_dict() or use edgeopt.loading.save_bundle",
    )


def _bundle_fields(
    p: Path, obj: Mapping[str, Any]
) -> tuple[str, dict[str, Any], tuple[int, ...], Mapping[str, Any]]:
    """``(arch, arch_kwargs, input_shape, state_dict)`` of a bundle, checked; ConfigError for
    a bundle this edgeopt cannot read or whose fields are malformed."""
    version = obj.get(BUNDLE_KEY)
    if not isinstance(version, int) or version > BUNDLE_VERSION:
        raise ConfigError(
            f"{p} is an edgeopt bundle of version {version!r}; this edgeopt reads version "
            f"{BUNDLE_VERSION}",
            hint="upgrade edgeopt or re-save the bundle with this version",
        )
    hint = "re-save it with edgeopt.loading.save_bundle"
    missing = [k for k in ("arch", "input_shape", "state_dict") if k not in obj]
    if missing:
        raise ConfigError(f"{p} is a corrupt edgeopt bundle: no {', '.join(missing)}", hint=hint)
    arch = obj["arch"]
    if not isinstance(arch, str) or not _ARCH_REF.fullmatch(arch):
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: invalid architecture reference {arch!r}", hint=hint
        )
    try:
        kwargs = json.loads(obj.get("arch_kwargs") or "{}")
    except (TypeError, ValueError):
        kwargs = None
    if not isinstance(kwargs, dict):
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: arch_kwargs is not a JSON object", hint=hint
        )
    raw_shape = obj["input_shape"]
    shape = tuple(raw_shape) if isinstance(raw_shape, list | tuple) else ()
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(
            f"{p} is a corrupt edgeopt bundle: invalid input_shape {raw_shape!r}", hint=hint
        )
    if not isinstance(obj["state_dict"], Mapping):
        raise ConfigError(f"{p} is a corrupt edgeopt bundle: state_dict is not a dict", hint=hint)
    return arch, kwargs, shape, obj["state_dict"]


def _load_bundle(
    p: Path,
    obj: Mapping[str, Any],
    arch: str | None,
    arch_kwargs: Mapping[str, Any] | None,
    input_shape: tuple[int, ...] | None,
    trust_arch: bool,
) -> LoadedModel:
    """Build a bundle's model; its recorded architecture only when edgeopt's own or trusted."""
    recorded, kwargs, shape, state_dict = _bundle_fields(p, obj)
    if arch is None and not trust_arch and not is_builtin_arch(recorded):
        raise ConfigError(
            f"{p} names architecture {recorded!r}, which is not one of edgeopt's own "
            f"({BUILTIN_ARCH_MODULE}); building it would import and run that code",
            hint="if you trust this file and the code it names, pass --trust-arch; or pass "
            "--arch MODULE:CALLABLE to build it with code you choose",
        )
    module = _build(p, arch or recorded, {**kwargs, **(arch_kwargs or {})}, state_dict)
    return LoadedModel(p, ModelFormat.BUNDLE, input_shape or shape, module=module)


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
    except (ImportError, AttributeError) as exc:
        missing = exc.name if isinstance(exc, ImportError) else None
        raise ConfigError(
            f"cannot unpickle {p}: {exc}",
            hint="the model's class must be importable under the module path it was saved from"
            + (f" (module {missing!r})" if missing else "")
            + ": install its package, or put the folder that holds it on PYTHONPATH "
            "(PYTHONPATH=/path/to/src edgeopt ...)",
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"cannot unpickle {p}: {type(exc).__name__}: {exc}",
            hint="the file may be truncated or corrupt; re-save it",
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
    except Exception as exc:
        raise ConfigError(
            f"cannot build {arch} with kwargs {dict(kwargs)}: {exc}",
            hint="check --arch-kwargs against the builder's parameters",
        ) from exc
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


def check_model_and_data(loaded: LoadedModel, data: Any) -> None:
    """Fail fast (ConfigError) when ``data`` (an ``edgeopt.data.DataBundle``, or None for
    synthetic inputs) does not fit the model: a sample shape it cannot take
    (``check_input_shape``), or a class label at or above the model's number of outputs."""
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


@dataclass(frozen=True)
class ModelSpec:
    """How to load the user's model again (in a worker process, or when resuming a run).

    ``trust_pickle`` and ``trust_arch`` are the user's opt-ins to running code from the model
    file; they come from the command line only (see ``from_dict``).
    """

    path: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    trust_pickle: bool = False
    trust_arch: bool = False

    def load(self, data_shape: tuple[int, ...] | None = None) -> LoadedModel:
        """Load the model; ``data_shape`` as in ``load_model``."""
        return load_model(
            self.path,
            arch=self.arch,
            arch_kwargs=self.arch_kwargs,
            input_shape=self.input_shape,
            trust_pickle=self.trust_pickle,
            trust_arch=self.trust_arch,
            data_shape=data_shape,
        )

    def with_data_shape(self, loaded: LoadedModel) -> ModelSpec:
        """This spec with the input shape ``loaded`` took from the data written in, so that
        workers and a resumed run load the model the same way without the data; unchanged
        when the shape came from the file or the flag."""
        if not loaded.shape_from_data:
            return self
        return replace(self, input_shape=tuple(loaded.input_shape))

    def with_trust(self, *, trust_pickle: bool, trust_arch: bool) -> ModelSpec:
        """This spec with the opt-ins given on this command line."""
        return replace(self, trust_pickle=trust_pickle, trust_arch=trust_arch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "trust_pickle": self.trust_pickle,
            "trust_arch": self.trust_arch,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, with_trust: bool = True) -> ModelSpec:
        """Read ``to_dict``'s output (older ones without ``trust_arch`` too).

        ``with_trust=False`` drops the recorded opt-ins: use it for anything read back from a
        file (``run.json``), which is data, then ``with_trust`` the command line's; keep the
        default only for a message one edgeopt process hands its own child.
        """
        shape = data.get("input_shape")
        return cls(
            path=str(data["path"]),
            arch=data.get("arch"),
            arch_kwargs=data.get("arch_kwargs"),
            input_shape=tuple(shape) if shape else None,
            trust_pickle=with_trust and bool(data.get("trust_pickle", False)),
            trust_arch=with_trust and bool(data.get("trust_arch", False)),
        )
