"""Thin wrappers over ``onnxruntime.quantization``: the config's types and calibration
method in ORT's terms, a calibration reader over samples of every input, and the dynamic and static
quantizers with the config's settings. ``edgeopt.stages.quantize_ort`` (the conversions)
and ``edgeopt.stages.sensitivity`` (the node ranking) call them; onnxruntime is imported
only when they run."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.inputs import ModelInputs
from edgeopt.stages.quantize_config import (
    COMPUTE_ONLY,
    CalibMethod,
    QType,
    QuantizeConfig,
    QuantMode,
    StaticOps,
)

CALIB_BATCH = 32
"""Most calibration samples per batch ORT is fed (``equal_batch_size`` may use fewer)."""


def qtype(t: QType) -> Any:
    """ORT's ``QuantType`` for ``t``."""
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if t is QType.INT8 else QuantType.QUInt8


def calib_method(c: CalibMethod) -> Any:
    """ORT's ``CalibrationMethod`` for ``c``."""
    from onnxruntime.quantization import CalibrationMethod

    return {
        CalibMethod.MINMAX: CalibrationMethod.MinMax,
        CalibMethod.ENTROPY: CalibrationMethod.Entropy,
        CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
    }[c]


class CalibReader:
    """``CalibrationDataReader`` over samples ``x`` of ``inputs`` (a float array, or a
    structured one for a multi-input model), in batches of every input."""

    def __init__(self, inputs: ModelInputs, x: np.ndarray) -> None:
        self._inputs = inputs
        self._x = x
        self._it: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        size = equal_batch_size(len(self._x), CALIB_BATCH)
        for i in range(0, len(self._x) - size + 1, size):
            yield self._inputs.feeds(self._x[i : i + size])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def equal_batch_size(n: int, most: int) -> int:
    """A batch size that splits ``n`` samples into equal batches: ORT's histogram
    calibrators (entropy, percentile) stack per-batch outputs and fail on a smaller last
    batch (onnxruntime issue 18792). The largest divisor of ``n`` up to ``most``; when that
    is under a quarter of ``most``, ``most`` itself (the few samples left over are unused)."""
    if n <= most:
        return max(n, 1)
    best = max(d for d in range(1, most + 1) if n % d == 0)
    return best if best * 4 >= most else most


def calibration_reader(inputs: ModelInputs, x: np.ndarray) -> Any:
    """A ``CalibReader`` that is also ORT's ``CalibrationDataReader``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibReader, CalibrationDataReader):
        pass

    return Reader(inputs, x)


def quantize_dynamic(pre: Path, out: Path, config: QuantizeConfig) -> None:
    """Dynamic int8 of MatMul/Gemm (and a fused graph's ``Attention``, which becomes
    ``QAttention``) and of embedding tables (``Gather`` of an initializer, as
    ``quantize_dynamic``'s defaults do: a pruned BERT's float token table was half its
    file), with s8 weights and the config's per-channel.

    Dynamic quantization runs on the CPU kernels (QNN's HTP takes only static QDQ), so a
    target's uint8 weight flavour does not apply: ORT's default s8 weights stay (u8 weights
    lose accuracy on transformer MatMuls, onnxruntime#5644). ``DefaultTensorType`` float:
    ONNX shape inference gives no type to a contrib op's output, and without a default ORT
    refuses a fused graph ("Unable to find data type for weight_name")."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    ort_quantize_dynamic(
        str(pre),
        str(out),
        op_types_to_quantize=["MatMul", "Gemm", "Attention", "Gather"],
        per_channel=config.per_channel,
        weight_type=qtype(QType.INT8),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def quantize_static(
    pre: Path,
    out: Path,
    config: QuantizeConfig,
    reader: Any,
    exclude: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Static QDQ with the config's types and op set (``ort_default``: ORT's own defaults), leaving
    ``exclude`` in float and fixing the activations in ``overrides`` (ORT
    ``TensorQuantOverrides``: tensor -> scale and zero point)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    # the histogram calibrators print progress lines; the library must not
    with contextlib.redirect_stdout(io.StringIO()):
        if config.mode is QuantMode.ORT_DEFAULT:
            ort_quantize_static(str(pre), str(out), reader)
            return
        ort_quantize_static(
            str(pre),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=qtype(config.activation_type),
            weight_type=qtype(config.weight_type),
            calibrate_method=calib_method(config.calibration),
            nodes_to_exclude=exclude or None,
            op_types_to_quantize=(
                list(COMPUTE_ONLY) if config.static_ops is StaticOps.COMPUTE else None
            ),
            extra_options=_extra_options(config, overrides),
        )


def _extra_options(config: QuantizeConfig, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """ORT's ``extra_options``: the learned activation ranges and symmetric activations."""
    extra: dict[str, Any] = {"ActivationSymmetric": config.activation_symmetric}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    return extra
