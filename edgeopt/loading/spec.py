"""What a load produces (``LoadedModel``, ``ModelFormat``) and how to repeat it (``ModelSpec``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs, parse_dims


class ModelFormat(StrEnum):
    """How a model file was stored."""

    BUNDLE = "bundle"
    STATE_DICT = "state_dict"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "exported_program"
    ONNX = "onnx"
    PICKLE = "pickle"
    ORT_FORMAT = "ort_format"
    OPENVINO = "openvino"
    TFLITE = "tflite"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the pipeline.

    Exactly one of ``module`` (torch formats), ``onnx_path`` (ONNX input: only the ONNX-side
    stages apply) and ``artifact_path`` (a runtime's own file, ``.ort``, OpenVINO ``.xml`` or
    ``.tflite``:
    timed and scored as it is, by ``bench``/``check`` only) is set. ``input_shape`` is one
    sample's shape without the batch dimension (the first input's, for a model with several:
    ``inputs`` lists them all).
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
    artifact_path: Path | None = None
    input_specs: ModelInputs | None = None
    """Every input, when the model takes several or an integer one (None: one float input
    of ``input_shape``); read it through ``inputs``."""

    @property
    def inputs(self) -> ModelInputs:
        """The model's inputs (``input_shape`` is the first one's sample shape)."""
        return self.input_specs or ModelInputs.single(self.input_shape)

    @property
    def is_onnx(self) -> bool:
        return self.onnx_path is not None


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1,16,16"`` or ``"1x16x16"`` (one sample, no batch dimension)."""
    return parse_dims(text)


BUILTIN_ARCH_MODULE = "edgeopt.zoo"
"""The module whose builders a bundle may name without ``--arch`` or ``--trust-arch``."""


def is_builtin_arch(ref: str) -> bool:
    """True for ``edgeopt.zoo:<builder>``: what a bundle may name without an opt-in."""
    module_name, _, attr = ref.partition(":")
    if module_name != BUILTIN_ARCH_MODULE:
        return False
    from edgeopt.zoo import BUILDERS  # zoo imports torch

    return attr in BUILDERS


def shape_text(shape: tuple[int, ...]) -> str:
    """``(1, 16, 16)`` as the flag spells it: ``1,16,16``."""
    return ",".join(str(d) for d in shape)


@dataclass(frozen=True)
class ModelSpec:
    """How to load the user's model again (in a worker process, or when resuming a run).

    ``trust_pickle`` and ``trust_arch`` are the user's opt-ins to running code from the model
    file; they come from the command line only (see ``from_dict``). ``arch_from_file`` marks an
    ``arch`` read back from a run directory or a study: that is data, so it is built only when
    it is one of edgeopt's own, or once this command line names the same builder
    (``with_trust(arch=...)``); ``load_spec`` refuses it otherwise, before importing anything.
    """

    path: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    trust_pickle: bool = False
    trust_arch: bool = False
    arch_from_file: bool = False
    inputs: ModelInputs | None = None
    """``--input-shape NAME=DIMS[:DTYPE]``, one per input (None: not given that way)."""

    def with_data_shape(self, loaded: LoadedModel) -> ModelSpec:
        """This spec with the input shape ``loaded`` took from the data written in, so that
        workers and a resumed run load the model the same way without the data, and with
        every input of a model that takes several (or integer) ones, as loaded (run.json
        records what was searched); unchanged for one float input whose shape came from the
        file or the flag."""
        spec = self
        if not loaded.inputs.is_single:
            spec = replace(spec, inputs=loaded.inputs)
        if not loaded.shape_from_data:
            return spec
        return replace(spec, input_shape=tuple(loaded.input_shape))

    def with_trust(
        self, *, trust_pickle: bool, trust_arch: bool, arch: str | None = None
    ) -> ModelSpec:
        """This spec with the opt-ins given on this command line; ``arch`` is the command
        line's ``--arch``. A recorded ``arch`` that differs from it is refused (ConfigError)."""
        spec = replace(self, trust_pickle=trust_pickle, trust_arch=trust_arch)
        if arch is None:
            return spec
        if self.arch is not None and self.arch != arch:
            raise ConfigError(
                f"this run's model was built with --arch {self.arch}, not --arch {arch}",
                hint=f"pass --arch {self.arch} if you trust that code, or start a new run "
                "with --out",
            )
        return replace(spec, arch=arch, arch_from_file=False)

    def check_arch_named(self) -> None:
        """ConfigError when ``arch`` came from a file and names code other than edgeopt's
        own: only the command line may make edgeopt import and run a builder."""
        if self.arch_from_file and self.arch is not None and not is_builtin_arch(self.arch):
            raise ConfigError(
                f"the run records architecture {self.arch!r}; a run directory or study is "
                "data and cannot make edgeopt import and run code",
                hint=f"pass --arch {self.arch} on this command line if you trust that code",
            )

    def to_dict(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "trust_pickle": self.trust_pickle,
            "trust_arch": self.trust_arch,
            "arch_from_file": self.arch_from_file,
        }
        if self.inputs is not None:  # single-input records stay as they were
            out["inputs"] = self.inputs.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, with_trust: bool = True) -> ModelSpec:
        """Read ``to_dict``'s output (older ones without ``trust_arch`` too).

        ``with_trust=False`` reads a file (``run.json``, a study), which is data: it drops the
        recorded opt-ins and marks ``arch`` as recorded (``arch_from_file``); then
        ``with_trust`` the command line's. Keep the default only for a message one edgeopt
        process hands its own child.
        """
        shape = data.get("input_shape")
        arch = data.get("arch")
        if arch is not None and not isinstance(arch, str):
            raise ValueError(f"model.arch is not a string: {arch!r}")
        kwargs = data.get("arch_kwargs")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(f"model.arch_kwargs is not an object: {kwargs!r}")
        return cls(
            path=str(data["path"]),
            arch=arch,
            arch_kwargs=kwargs,
            input_shape=tuple(shape) if shape else None,
            trust_pickle=with_trust and bool(data.get("trust_pickle", False)),
            trust_arch=with_trust and bool(data.get("trust_arch", False)),
            arch_from_file=not with_trust or bool(data.get("arch_from_file", False)),
            inputs=ModelInputs.from_dict(data["inputs"]) if data.get("inputs") else None,
        )
