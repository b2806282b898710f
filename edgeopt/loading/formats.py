"""Readers for the other model files: ``torch.save`` (state_dict, full pickle), TorchScript,
``torch.export`` ``.pt2`` and ONNX, with the zip CRC check and the ONNX Runtime probe."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.loading.bundle import BUNDLE_KEY, build_arch, load_bundle
from edgeopt.loading.limits import check_input_size
from edgeopt.loading.onnx_inputs import graph_inputs, is_plain, refuse_fixed_batch
from edgeopt.loading.spec import LoadedModel, ModelFormat, ModelSpec
from edgeopt.measure.session import ort_session

_FORCE_PICKLE_ENV = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (Load model from .*? failed:)?")
_ORT_NODE = re.compile(r"Non-zero status code returned while running (\w+) node\. Name:'(.*?)' ")
_ORT_SOURCE = re.compile(r"Status Message: \S+\.(?:h|cc):\d+ .*? was false\. |Status Message: ")


def verified_names(p: Path) -> list[str]:
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


def load_onnx(
    p: Path,
    input_shape: tuple[int, ...] | None,
    given: ModelInputs | None = None,
    data: ModelInputs | None = None,
) -> LoadedModel:
    """An ONNX file, checked and run once in ONNX Runtime; ConfigError saying why not.
    ``given``: ``--input-shape NAME=DIMS[:DTYPE]``, one per input; ``data``: the inputs
    ``--data`` holds (they fill a graph's dynamic dims when no flag does)."""
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
        # by path, the checker finds external data beside the model (by proto: beside the cwd)
        onnx.checker.check_model(str(p) if has_external_data(model) else model)
    except Exception as exc:
        raise ConfigError(
            f"{p} is not a valid ONNX model: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            hint="re-export the model; a truncated file also fails this way",
        ) from exc
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise ConfigError(f"ONNX model {p} has no inputs")
    if given is not None or not is_plain(inputs):
        specs = graph_inputs(p, model, inputs, input_shape, given, data)
        for s in specs.specs:
            check_input_size(s.shape, f"ONNX model {p}")
        out_shape = _probe_onnx(p, model, specs.first_shape, 1, specs)
        return LoadedModel(
            p,
            ModelFormat.ONNX,
            specs.first_shape,
            onnx_path=p,
            output_shape=out_shape,
            input_specs=specs,
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
        named = ", ".join(_dim_text(d) for d in dims[1:])
        raise ConfigError(
            f"ONNX model {p} has a dynamic input shape ({named}{',' if len(dims) == 2 else ''})",
            hint="pass --input-shape with one sample's shape, e.g. --input-shape 3,224,224",
        )
    if input_shape and graph_shape and all(graph_shape) and graph_shape != input_shape:
        raise ConfigError(
            f"--input-shape {input_shape} does not match the ONNX graph's input {graph_shape}",
            hint=f"use --input-shape {','.join(map(str, graph_shape))} or omit it",
        )
    refuse_fixed_batch(p, dims, "torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}})")
    check_input_size(shape, f"ONNX model {p}")  # before the probe allocates an input
    out_shape = _probe_onnx(p, model, tuple(shape), 1)
    return LoadedModel(p, ModelFormat.ONNX, tuple(shape), onnx_path=p, output_shape=out_shape)


def has_external_data(model: Any) -> bool:
    """True when the ONNX ``model`` (loaded without its external data) keeps tensors in
    files beside it (``save_as_external_data=True``)."""
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer)


def _dim_text(dim: Any) -> str:
    """One ONNX input dimension as a user reads it: its size, its symbolic name, or ``?``."""
    if dim.HasField("dim_value") and dim.dim_value > 0:
        return str(dim.dim_value)
    return dim.dim_param if dim.HasField("dim_param") and dim.dim_param else "?"


def _ort_reason(exc: Exception) -> str:
    """ONNX Runtime's message without its code prefix, first line only."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _ORT_PREFIX.sub("", text).strip()
    text = _ORT_NODE.sub(lambda m: f"{m[1]} node {m[2]!r}: " if m[2] else f"{m[1]} node: ", text)
    return _ORT_SOURCE.sub("", text, count=1)


def _probe_onnx(
    p: Path, model: Any, shape: tuple[int, ...], batch: int, inputs: ModelInputs | None = None
) -> tuple[int, ...]:
    """Open ``p`` in an ONNX Runtime session and run it once on zeros (several inputs:
    on ``inputs.synthetic``); returns the first output's shape. Everything later (export,
    quantize, measure) relies on both working."""
    import onnxruntime as ort

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
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the error is raised (and reported once) below
    what = f"an input of shape {(batch, *shape)}"
    if inputs is not None:
        what = f"inputs {inputs.text()}"
    try:
        if inputs is not None:
            feeds = inputs.feeds(inputs.synthetic(batch, seed=0))
        else:
            feeds = {sess.get_inputs()[0].name: np.zeros((batch, *shape), dtype=np.float32)}
        out = sess.run(None, feeds, quiet)[0]
    except MemoryError as exc:
        raise ConfigError(
            f"not enough memory to run {p} on {what}",
            hint="free memory, or lower EDGEOPT_MAX_INPUT_ELEMENTS / fix the input shape",
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"ONNX Runtime cannot run {p} on {what}: {_ort_reason(exc)}",
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


def load_torchscript(p: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    """A TorchScript archive (its input shape from ``input_shape``: the file has none)."""
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


def load_exported_program(
    p: Path, names: list[str], input_shape: tuple[int, ...] | None, trust_pickle: bool
) -> LoadedModel:
    """A ``torch.export`` ``.pt2`` program; refused when it holds pickled payloads, unless
    ``trust_pickle``. ``names`` are the archive's CRC-checked member names."""
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


def load_torch_save(
    p: Path, spec: ModelSpec, data_shape: tuple[int, ...] | None = None
) -> LoadedModel:
    """A ``torch.save`` file: a bundle, a state_dict or a full pickle; the last two record
    no input shape and take ``spec.input_shape``, else ``data_shape``."""
    import torch

    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refuses arbitrary objects: this is a full pickle of a model
        return _load_pickle(p, spec.input_shape or data_shape, spec.trust_pickle)
    except Exception as exc:
        raise ConfigError(
            f"cannot read {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="the file may be truncated or corrupt; re-save it",
        ) from exc

    if isinstance(obj, dict) and obj.get(BUNDLE_KEY) is not None:
        return load_bundle(p, obj, spec)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if spec.arch is None:
            raise ConfigError(
                f"{p} is a state_dict (weights only); edgeopt needs the architecture",
                hint="pass --arch module:callable that builds the model (and --arch-kwargs JSON)",
            )
        module = build_arch(p, spec.arch, dict(spec.arch_kwargs or {}), obj)
        shape = _require_shape(p, spec.input_shape or data_shape, "state_dict")
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
