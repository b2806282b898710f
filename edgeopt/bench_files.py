"""Which file ``edgeopt bench``/``check`` times for each model on a target: the file the
target's runtime loads.

- a runtime's own file (``.ort``, OpenVINO ``.xml``) is timed as it is, and only on a target
  that runs that runtime (ConfigError naming one that does, before any work);
- an ONNX model (given, or exported from torch) on a measured target whose runtime is not ONNX
  Runtime is converted to that runtime's file first (``edgeopt.export.convert``); on an
  estimated target the cost model reads the ONNX graph, whatever the runtime.

The cost model reads ONNX: ``estimable_onnx`` says which ONNX file stands for a runtime's file
(a ``.ort``'s source ONNX beside it; none for an OpenVINO IR).
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.errors import ConfigError
from edgeopt.export.convert import ConvertOptions, convert
from edgeopt.loading import LoadedModel
from edgeopt.profiles import HardwareProfile, list_profiles
from edgeopt.profiles.runtime_spec import (
    RUNTIMES,
    Runtime,
    require_installed,
    runtime_of_file,
)


def check_runtimes(models: list[LoadedModel], profile: HardwareProfile) -> None:
    """ConfigError when a measured ``profile``'s runtime is not installed, a model is a
    runtime's file that ``profile``'s runtime does not load (with a hint naming a target
    that does), or one the target cannot estimate."""
    target = profile.runtime_name
    if profile.measured:
        require_installed(target)
    for m in models:
        if m.artifact_path is None:
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
        if not profile.measured and estimable_onnx(m.artifact_path) is None:
            raise ConfigError(
                f"{m.source} cannot be estimated: the cost model reads ONNX graphs"
                + (
                    f", and no {m.artifact_path.with_suffix('.onnx').name} is beside it"
                    if runtime == Runtime.ORT_FORMAT
                    else ""
                ),
                hint="keep the source .onnx beside the file (edgeopt export --format ort "
                "writes both), or pass the .onnx",
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


def target_file(onnx_or_file: Path, profile: HardwareProfile, workdir: Path) -> Path:
    """The file to time on ``profile`` for ``onnx_or_file``: itself, or for an ONNX file on
    a measured target of another runtime, its conversion into ``workdir``
    (ConversionError when the converter rejects it)."""
    runtime = profile.runtime_name
    if (
        runtime_of_file(onnx_or_file) != Runtime.ORT
        or runtime == Runtime.ORT
        or not profile.measured
    ):
        return onnx_or_file
    options = ConvertOptions.for_profile(profile)
    return convert(onnx_or_file, runtime, workdir / onnx_or_file.name, options).path


def estimable_onnx(path: Path) -> Path | None:
    """The ONNX file the cost model reads for ``path``: ``path`` itself, the source ONNX
    beside a ``.ort`` (same name, ``.onnx``), else None (an OpenVINO IR)."""
    runtime = runtime_of_file(path)
    if runtime == Runtime.ORT:
        return path
    source = path.with_suffix(".onnx")
    if runtime == Runtime.ORT_FORMAT and source.is_file():
        return source
    return None
