"""Which file ``edgeopt bench``/``check`` times for each model on a target: the file the
target's runtime loads.

- a runtime's own file (``.ort``, OpenVINO ``.xml``, ``.tflite``) is timed as it is, and only
  on a target that runs that runtime (ConfigError naming one that does, before any work); a
  target whose device loads only full-integer int8 files (``[runtime] io_type``: Edge TPU,
  TFLite Micro) refuses a ``.tflite`` that is not one;
- an ONNX model (given, or exported from torch) on a measured target whose runtime is not ONNX
  Runtime is converted to that runtime's file first (``edgeopt.export.convert``); LiteRT
  converts the torch model instead (``edgeopt.export.litert``, fp32), so an ONNX model on a
  measured LiteRT target is refused; on an estimated target the cost model reads the ONNX
  graph, whatever the runtime.

The cost model reads ONNX graphs and ``.tflite`` files: ``estimable_onnx`` says which file
stands for a runtime's file (a ``.tflite`` itself, the source ONNX beside a ``.ort``; none for
an OpenVINO IR).
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.errors import ConfigError
from edgeopt.export.convert import ConvertOptions, convert
from edgeopt.export.litert import to_litert
from edgeopt.export.tflite_facts import tflite_facts
from edgeopt.loading import LoadedModel
from edgeopt.profiles import HardwareProfile, list_profiles
from edgeopt.profiles.runtime_spec import (
    RUNTIMES,
    Runtime,
    require_installed,
    runtime_of_file,
)

_SEVERAL_INPUTS = (Runtime.ORT, Runtime.ORT_FORMAT)
"""Runtimes whose sessions feed a structured sample by input name (``measure.session``)."""


def check_runtimes(models: list[LoadedModel], profile: HardwareProfile) -> None:
    """ConfigError when a measured ``profile``'s runtime is not installed, a model is a
    runtime's file that ``profile``'s runtime does not load (with a hint naming a target
    that does), a ``.tflite`` that is not full-integer for a full-integer device, one the
    target cannot estimate, an ONNX model for a measured LiteRT target, or a model with
    several inputs for a runtime other than ONNX Runtime."""
    target = profile.runtime_name
    if profile.measured:
        require_installed(target)
    for m in models:
        if not m.inputs.is_single and (
            (profile.measured and target not in _SEVERAL_INPUTS)
            or (m.artifact_path is not None and runtime_of_file(m.artifact_path) != Runtime.ORT)
        ):
            raise ConfigError(
                f"{m.source} takes {m.inputs.text()}: edgeopt runs models with several (or "
                f"integer) inputs in ONNX Runtime only, and --target {profile.name} runs "
                f"{RUNTIMES[target].label}",
                hint="bench it on an ONNX Runtime target (--target cpu) or an estimated one",
            )
        if m.artifact_path is None:
            if m.module is None and profile.measured and RUNTIMES[target].needs_torch:
                raise ConfigError(
                    f"{m.source}: --target {profile.name} runs {RUNTIMES[target].label}, whose "
                    "files are converted from the torch model (litert-torch reads torch, not "
                    "ONNX), and this is an ONNX file",
                    hint="pass the model's .pt (or .pt2) instead, or a .tflite made from it",
                )
            continue
        runtime = runtime_of_file(m.artifact_path)
        assert runtime is not None
        if runtime != target:
            raise ConfigError(
                f"{m.source} runs on {RUNTIMES[runtime].label}, but --target {profile.name} "
                f"runs {RUNTIMES[target].label}",
                hint=f"{_matching(runtime)}, or pass the model's .onnx (converted for the "
                "target as needed)",
            )
        if runtime == Runtime.LITERT:
            _check_interface(m.artifact_path, profile)
        if not profile.measured and estimable_onnx(m.artifact_path) is None:
            raise ConfigError(
                f"{m.source} cannot be estimated: the cost model reads ONNX and TFLite graphs"
                + (
                    f", and no {m.artifact_path.with_suffix('.onnx').name} is beside it"
                    if runtime in _ESTIMATED_FROM_SOURCE
                    else ""
                ),
                hint="keep the source .onnx beside the file (edgeopt export --format ort "
                "writes both), or pass the .onnx",
            )


# runtime files the cost model estimates from the ONNX file of the same name beside them
_ESTIMATED_FROM_SOURCE = (Runtime.ORT_FORMAT,)
"""Runtimes whose files the cost model reads through their source ONNX (a ``.tflite`` it
reads itself: ``estimate.tflite_graph``)."""


def _check_interface(path: Path, profile: HardwareProfile) -> None:
    """ConfigError when ``profile``'s device loads only full-integer files with
    ``io_type`` inputs and outputs and ``path`` is not one (read from its flatbuffer)."""
    io_type = profile.runtime.io_type if profile.runtime else None
    if io_type is None:
        return
    facts = tflite_facts(path)
    interface = {*facts.input_types, *facts.output_types}
    if facts.all_integer and interface == {io_type.upper()}:
        return
    why = (
        f"it holds {', '.join(facts.float_tensor_types)} tensors"
        if not facts.all_integer
        else f"its inputs/outputs are {', '.join(sorted(interface))}"
    )
    raise ConfigError(
        f"{path} is not a full-integer {io_type} model, which --target {profile.name} loads "
        f"only: {why}",
        hint=f"quantize it to full-integer {io_type} (ai-edge-quantizer's static_wi8_ai8 "
        "recipe), inputs and outputs included",
    )


def _matching(runtime: Runtime) -> str:
    """``--target NAME`` for the profiles that run ``runtime`` (measured ones first)."""
    names = [
        p.name
        for p in sorted(list_profiles(), key=lambda p: not p.measured)
        if p.runtime_name == runtime
    ]
    if not names:
        return (
            f"no shipped target runs {RUNTIMES[runtime].label}: write a profile with "
            f'[runtime] name = "{runtime.value}"'
        )
    return "use " + " or ".join(f"--target {n}" for n in names[:2])


def target_file(
    onnx_or_file: Path, profile: HardwareProfile, workdir: Path, model: LoadedModel | None = None
) -> Path:
    """The file to time on ``profile`` for ``onnx_or_file``: itself, or for an ONNX file on
    a measured target of another runtime, its conversion into ``workdir`` (for LiteRT, of
    ``model``'s torch module, fp32; ConversionError when the converter rejects it)."""
    runtime = profile.runtime_name
    if (
        profile.measured
        and RUNTIMES[runtime].needs_torch
        and model is not None
        and model.module is not None
    ):
        options = ConvertOptions.for_profile(profile)
        out = workdir / onnx_or_file.with_suffix(".tflite").name
        return to_litert(model.module, model.input_shape, out, options).path
    if (
        runtime_of_file(onnx_or_file) != Runtime.ORT
        or runtime == Runtime.ORT
        or not profile.measured
    ):
        return onnx_or_file
    options = ConvertOptions.for_profile(profile)
    return convert(onnx_or_file, runtime, workdir / onnx_or_file.name, options).path


def estimable_onnx(path: Path) -> Path | None:
    """The file the cost model reads for ``path``: ``path`` itself (an ONNX file, or a
    ``.tflite``, read as its own graph), the source ONNX beside a ``.ort`` (same name,
    ``.onnx``), else None (an OpenVINO IR)."""
    runtime = runtime_of_file(path)
    if runtime in (Runtime.ORT, Runtime.LITERT):
        return path
    source = path.with_suffix(".onnx")
    if runtime in _ESTIMATED_FROM_SOURCE and source.is_file():
        return source
    return None
