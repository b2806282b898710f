"""What a quantize config is (modes, calibration, 8-bit types, ``QuantizeConfig``) and where
its calibration inputs come from. ``edgeopt.stages.quantize`` (the stage),
``edgeopt.stages.quantize_ort`` (the conversions) and ``edgeopt.stages.sensitivity`` share it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.data import synthetic_inputs
from edgeopt.errors import ConfigError
from edgeopt.inputs import ModelInputs
from edgeopt.stages.base import StageConfig, check_range

if TYPE_CHECKING:
    from edgeopt.stages.base import StageContext


class QuantMode(StrEnum):
    """What the quantize stage produces."""

    FP32 = "fp32"  # unchanged (a copy)
    FP32_OPT = "fp32_opt"  # ORT basic-level graph optimization, saved
    FP16 = "fp16"  # float16 weights and compute, fp32 inputs/outputs
    INT8_STATIC = "int8_static"  # static QDQ, types from the profile
    INT8_DYNAMIC = "int8_dynamic"  # dynamic, MatMul/Gemm (and embedding tables) only
    ORT_DEFAULT = "ort_default"  # quantize_static with ORT's defaults (by-hand baseline)


FUSE_MODES = frozenset({QuantMode.FP32, QuantMode.INT8_DYNAMIC, QuantMode.FP16})
"""The modes that may take a fused graph (``quantize.fuse``): static QDQ cannot (ORT's
calibration fails on it, and a MatMul-only static fused graph ran 5x slower than fp32)."""


class StaticOps(StrEnum):
    """Which ops static QDQ quantizes: ``all`` (ORT's registry: also LayerNorm, Softmax, Add,
    ...) or ``compute`` (Conv/MatMul/Gemm; LayerNorm and Softmax stay float, which ran 1.2x
    faster than ``all`` on a ViT)."""

    ALL = "all"
    COMPUTE = "compute"


COMPUTE_ONLY = ("Conv", "MatMul", "Gemm")
"""``op_types_to_quantize`` of ``StaticOps.COMPUTE``."""


class CalibMethod(StrEnum):
    """Calibration of activation ranges (ORT ``CalibrationMethod``)."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class QType(StrEnum):
    """8-bit tensor types; the profile says which the target's kernels want."""

    INT8 = "int8"
    UINT8 = "uint8"


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(StageConfig):
    """Quantization settings.

    ``calibration``/``calibration_samples``/``exclude_first_last``/``activation_type``/
    ``activation_symmetric`` (zero points at the middle of the type, 0 for int8) apply to
    the static modes; ``per_channel`` to the int8 modes and ``weight_type`` to int8_static
    (int8_dynamic's weights are always int8: it runs on CPU kernels); ``ort_default``
    ignores all of them but ``calibration_samples`` (it is ORT's defaults by definition).
    ``exclude_first_last`` keeps the first and last Conv/Gemm/MatMul in float;
    ``fp32_nodes`` (int8_static only) keeps that many more in float, the ones whose
    quantization hurts the output most (``edgeopt.stages.sensitivity``).
    ``static_ops`` (static modes) which ops are quantized (``StaticOps``).
    ``fuse`` runs ORT's transformer optimizer first (``edgeopt.stages.ort_fuse``; only in
    ``FUSE_MODES``).
    """

    mode: QuantMode = QuantMode.FP32
    calibration: CalibMethod = CalibMethod.MINMAX
    calibration_samples: int = 128
    per_channel: bool = True
    activation_type: QType = QType.UINT8
    weight_type: QType = QType.INT8
    activation_symmetric: bool = False
    exclude_first_last: bool = False
    fp32_nodes: int = 0
    fuse: bool = False
    static_ops: StaticOps = StaticOps.ALL

    def __post_init__(self) -> None:
        self._check_types()
        check_range("quantize.calibration_samples", self.calibration_samples, 1, 100_000)
        check_range("quantize.fp32_nodes", self.fp32_nodes, 0, 10_000)
        if self.activation_type is QType.INT8 and self.weight_type is QType.UINT8:
            raise ConfigError(
                "quantize: int8 activations with uint8 weights is not supported by ONNX Runtime",
                hint="use uint8/int8 (x86), uint8/uint8 (Qualcomm QNN) or int8/int8 (TensorRT)",
            )
        if self.fuse and self.mode not in FUSE_MODES:
            raise ConfigError(
                f"quantize.fuse does not apply to mode {self.mode.value}",
                hint="fuse with mode " + ", ".join(sorted(m.value for m in FUSE_MODES)),
            )


def calibration_inputs(
    ctx: StageContext, samples: int, inputs: tuple[int, ...] | ModelInputs | None = None
) -> np.ndarray:
    """``samples`` calibration inputs: a seeded subset of the training split (a structured
    array for a multi-input model: real ids with their real padding), or, without data,
    seeded stand-ins for ``inputs`` (one float sample's shape or the model's inputs; default
    ``ctx.model_inputs``): standard Gaussian floats, token ids in the vocabulary and
    right-padded masks (``ModelInputs.synthetic``)."""
    if ctx.data is not None:  # an npz's is exactly the slice it always drew
        return ctx.data.subset("train", samples, ctx.seed)[0]
    spec = inputs if isinstance(inputs, ModelInputs) else None
    if spec is None:
        spec = ModelInputs.single(inputs) if inputs is not None else ctx.model_inputs
    if spec.is_single:  # checks the shape, as always
        return synthetic_inputs(spec.first_shape, samples, ctx.seed)
    return spec.synthetic(samples, ctx.seed)
