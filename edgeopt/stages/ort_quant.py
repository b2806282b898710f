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
from edgeopt.stages.onnx_graph import shape_of
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
CALIB_OUTPUT_BUDGET_BYTES = 1 << 28
"""Intermediate outputs ORT's calibrator may hold at once (256 MiB). Its histogram
calibrators (entropy, percentile) keep every tensor of every batch until they build the
histograms: MobileNetV2 x0.5 at 224x224 has 27 MiB of them per sample, and percentile on 128
samples peaked at 4.39 GB resident (min-max reduces each tensor in the graph: 1.13 GB at 256
samples). Past the budget the batches shrink to fit it and are collected in strides (ORT's
``CalibStridedMinMax``, which serves every method: ranges and histograms merge across
strides), the most batches per stride that fit."""


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
        self.batch_size = equal_batch_size(len(x), CALIB_BATCH)
        self._it: Iterator[dict[str, np.ndarray]] = self._batches(0, len(self))

    def __len__(self) -> int:
        """Batches in all (ORT's strided calibration counts in these)."""
        return len(self._x) // self.batch_size

    def _batches(self, start: int, end: int) -> Iterator[dict[str, np.ndarray]]:
        size = self.batch_size
        for i in range(start, min(end, len(self))):
            yield self._inputs.feeds(self._x[i * size : (i + 1) * size])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Batches ``start_index`` to ``end_index`` (excluded) next (ORT's strided calls)."""
        self._it = self._batches(start_index, end_index)

    def rewind(self) -> None:
        self._it = self._batches(0, len(self))

    def limit_batch(self, most: int) -> None:
        """At most ``most`` samples per batch from now on (equal batches), from the start."""
        self.batch_size = min(self.batch_size, equal_batch_size(len(self._x), most))
        self.rewind()


def calib_stride(model: Path, reader: CalibReader, budget_bytes: int) -> int | None:
    """Batches per calibration stride so that ORT holds at most ``budget_bytes`` of
    intermediate outputs (every tensor of ``model``, shape-inferred, per sample): None when
    all batches fit; else the reader's batches first shrink to fit the budget (one sample
    at the least) and the stride is the most of them that fit, a divisor of their count as
    ORT requires."""
    per_sample = max(1, activation_bytes_per_sample(model))
    if per_sample * len(reader) * reader.batch_size <= budget_bytes:
        return None
    reader.limit_batch(max(1, budget_bytes // per_sample))
    n = len(reader)
    most = max(1, budget_bytes // (per_sample * reader.batch_size))
    return max(d for d in range(1, min(most, n) + 1) if n % d == 0)


def activation_bytes_per_sample(model: Path) -> int:
    """Bytes of ``model``'s inferred intermediate and output tensors for one sample (a
    symbolic or unknown dim counts as 1)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    g = onnx.shape_inference.infer_shapes(onnx.load(str(model), load_external_data=False)).graph
    total = 0
    for vi in [*g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.elem_type and tt.HasField("shape"):
            size = np.dtype(tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
            total += int(np.prod(shape_of(vi), dtype=np.int64)) * size
    return total


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
    *,
    calib_budget_bytes: int = CALIB_OUTPUT_BUDGET_BYTES,
) -> None:
    """Static QDQ with the config's types and op set (``ort_default``: ORT's own defaults), leaving
    ``exclude`` in float and fixing the activations in ``overrides`` (ORT
    ``TensorQuantOverrides``: tensor -> scale and zero point). Calibration holds at most
    ``calib_budget_bytes`` of intermediate outputs at once (``calib_stride``)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    stride = calib_stride(pre, reader, calib_budget_bytes)
    strided = {"CalibStridedMinMax": stride} if stride else {}
    # the histogram calibrators print progress lines; the library must not
    with contextlib.redirect_stdout(io.StringIO()):
        if config.mode is QuantMode.ORT_DEFAULT:
            ort_quantize_static(str(pre), str(out), reader, extra_options=strided)
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
            extra_options=_extra_options(config, overrides) | strided,
        )


def _extra_options(config: QuantizeConfig, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """ORT's ``extra_options``: the learned activation ranges and symmetric activations."""
    extra: dict[str, Any] = {"ActivationSymmetric": config.activation_symmetric}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    return extra
