"""One converter per runtime (:data:`CONVERTERS`, keyed like
``edgeopt.profiles.runtime_spec.RUNTIMES``): an ONNX candidate in, the files its target loads
out, each made with the runtime's own tool.

- ``ort``: the ONNX file itself (copied).
- ``ort-format``: ``onnxruntime.tools.convert_onnx_models_to_ort`` (Fixed optimization style):
  ``X.ort`` plus ``X.required_operators.config``, the operator list a minimal ORT build is
  compiled with. ``target_platform`` is ``arm`` for phones (no x86-only fusions baked in),
  ``amd64`` otherwise.
- ``openvino``: ``openvino.convert_model`` from the ONNX file, saved as ``X.xml`` + ``X.bin``
  with fp32 weights (``save_model`` would store fp16 by default, which makes sizes
  incomparable across runtimes); fp16 weights only when asked.
- ``litert``: converted from the torch model, not from ONNX (``edgeopt.export.litert``); an
  ONNX file asked for LiteRT is a ConfigError saying so.
- ``tensorrt``: ConfigError, not supported here (its converter does not install in this
  workplace).

A converter that fails raises :class:`edgeopt.errors.ConversionError` with its own reason.
Every converter but the ONNX copy runs in a runtime child (``edgeopt.runtime_child``): its
library never loads into edgeopt's process, and a converter that crashes is a
ConversionError saying so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError, ConversionError
from edgeopt.profiles import HardwareProfile, TargetKind
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime, convertible, require_installed
from edgeopt.runtime_child import ChildDied, in_runtime_child


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert: ``target_platform`` for the ORT format (``arm`` | ``amd64``),
    ``fp16_weights`` for OpenVINO's ``compress_to_fp16``; for LiteRT ``quant_mode``
    (``fp32`` | ``int8_dynamic`` | ``int8_static``), ``per_channel`` weights, and
    ``io_type`` (``int8``: full-integer with int8 inputs and outputs; None: as made)."""

    target_platform: str = "amd64"
    fp16_weights: bool = False
    quant_mode: str = "fp32"
    per_channel: bool = True
    io_type: str | None = None

    @classmethod
    def for_profile(
        cls, profile: HardwareProfile | None, quant_mode: str = "fp32"
    ) -> ConvertOptions:
        """The options ``profile``'s device needs: ``arm`` for phones, its weight
        granularity and file interface (LiteRT), in ``quant_mode``."""
        if profile is None:
            return cls(quant_mode=quant_mode)
        return cls(
            target_platform="arm" if profile.kind == TargetKind.MOBILE else "amd64",
            quant_mode=quant_mode,
            per_channel=profile.quantization.per_channel,
            io_type=profile.runtime.io_type if profile.runtime else None,
        )


@dataclass(frozen=True)
class Artifact:
    """What a converter wrote: ``paths`` (the file to load first, then the files beside it)
    and ``facts`` about how it was made (recorded in an export's sidecar)."""

    runtime: Runtime
    paths: tuple[Path, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The file a user passes to the runtime (``.onnx``, ``.ort``, ``.xml``)."""
        return self.paths[0]


Converter = Callable[[Path, Path, ConvertOptions], Artifact]


def artifact_paths(runtime: Runtime, out: Path) -> tuple[Path, ...]:
    """The files ``runtime``'s artifact at ``out`` consists of (``X.xml``, ``X.bin``, ...)."""
    stem = out.with_suffix("")
    return tuple(Path(f"{stem}{s}") for s in RUNTIMES[runtime].suffixes)


def convert(
    onnx_path: str | Path,
    runtime: Runtime,
    out: str | Path,
    options: ConvertOptions | None = None,
) -> Artifact:
    """Convert ``onnx_path`` to ``runtime``'s format at ``out`` (its suffix is replaced by
    the runtime's). ConfigError for a runtime edgeopt cannot convert to here or whose
    package is not installed;
    ConversionError with the converter's reason when the model does not convert."""
    convertible(runtime)
    require_installed(runtime)
    target = Path(out).with_suffix(RUNTIMES[runtime].suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    opts = options or ConvertOptions()
    if runtime == Runtime.ORT:
        return CONVERTERS[runtime](Path(onnx_path), target, opts)
    try:
        return in_runtime_child(convert_here, Path(onnx_path), runtime, target, opts)
    except ChildDied as exc:
        raise ConversionError(RUNTIMES[runtime].label, str(exc)) from exc


def convert_here(
    onnx_path: Path, runtime: Runtime, target: Path, options: ConvertOptions
) -> Artifact:
    """``runtime``'s converter run in this process (a runtime child's side of ``convert``)."""
    return CONVERTERS[runtime](onnx_path, target, options)


def reason(exc: BaseException) -> str:
    """A converter's message on one line: OpenVINO's spreads it over several, after the
    source line of its failed check, which says nothing to a user."""
    lines = [ln.strip().removeprefix("-- ") for ln in str(exc).splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith("Check '") and ln != "Summary:"]
    return (" ".join(kept) or type(exc).__name__)[:500]


def _to_onnx(onnx_path: Path, out: Path, options: ConvertOptions) -> Artifact:
    if onnx_path.resolve() != out.resolve():
        shutil.copyfile(onnx_path, out)
    return Artifact(Runtime.ORT, (out,))


def _to_ort_format(onnx_path: Path, out: Path, options: ConvertOptions) -> Artifact:
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    # ORT warns on stderr that an amd64 file holds x86-only layouts (NCHWc): it is meant to
    ort.set_default_logger_severity(3)

    # the tool logs each file it writes at INFO level; the library prints nothing
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    paths = artifact_paths(Runtime.ORT_FORMAT, out)
    # the tool converts every .onnx of a folder and names its output after the input: give
    # it one copy named like the output, in a folder of its own
    with tempfile.TemporaryDirectory(prefix="edgeopt-ort-format-") as tmp:
        src = Path(tmp) / "in" / f"{out.stem}.onnx"
        src.parent.mkdir()
        shutil.copyfile(onnx_path, src)
        made = Path(tmp) / "out"
        log = io.StringIO()  # the tool prints progress; the library prints nothing
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(
                    src,
                    output_dir=made,
                    optimization_styles=[OptimizationStyle.Fixed],
                    target_platform=options.target_platform,
                )
        except Exception as exc:
            raise ConversionError(RUNTIMES[Runtime.ORT_FORMAT].label, reason(exc)) from exc
        for p in paths:
            found = made / p.name
            if not found.is_file():
                raise ConversionError(
                    RUNTIMES[Runtime.ORT_FORMAT].label, f"the converter wrote no {p.name}"
                )
            shutil.move(found, p)
    # the config's header names the files it was made from: the temporary copy's path
    config = paths[1].read_text().replace(f"{made.resolve()}/", "")
    paths[1].write_text(config)
    return Artifact(
        Runtime.ORT_FORMAT,
        paths,
        {"target_platform": options.target_platform, "optimization_style": "Fixed"},
    )


def _to_openvino(onnx_path: Path, out: Path, options: ConvertOptions) -> Artifact:
    import openvino as ov

    label = RUNTIMES[Runtime.OPENVINO].label
    paths = artifact_paths(Runtime.OPENVINO, out)
    try:
        model = ov.convert_model(str(onnx_path))
        ov.save_model(model, str(paths[0]), compress_to_fp16=options.fp16_weights)
    except Exception as exc:
        raise ConversionError(label, reason(exc)) from exc
    return Artifact(
        Runtime.OPENVINO,
        paths,
        {"openvino_version": ov.__version__, "fp16_weights": options.fp16_weights},
    )


def _from_torch_only(onnx_path: Path, out: Path, options: ConvertOptions) -> Artifact:
    raise ConfigError(
        f"{onnx_path}: LiteRT files are converted from the torch model (litert-torch reads "
        "torch, not ONNX), and this is an ONNX file",
        hint="pass the model's .pt (or .pt2) instead, or target an ONNX Runtime or OpenVINO "
        "profile",
    )


def _unsupported(onnx_path: Path, out: Path, options: ConvertOptions) -> Artifact:
    raise AssertionError("convert() refuses runtimes that are not convertible")


CONVERTERS: dict[Runtime, Converter] = {
    Runtime.ORT: _to_onnx,
    Runtime.ORT_FORMAT: _to_ort_format,
    Runtime.OPENVINO: _to_openvino,
    Runtime.LITERT: _from_torch_only,
    Runtime.TENSORRT: _unsupported,
}
"""Runtime -> its converter of an ONNX file (``convert`` checks ``RUNTIMES[r].convertible``
first; LiteRT's converts the torch model: ``edgeopt.export.litert.to_litert``)."""
