"""ONNX Runtime quantization, fp16 conversion and offline graph optimization (ONNX phase).

Defaults follow measurements on the x86 dev host (research/compression.md §1.2, §6.2):

* static QDQ with **u8 activations / s8 weights** is the setting that pays on x86 (≈3x over
  fp32); ORT's own ``quantize_static`` defaults (s8/s8) run at about fp32 speed, so they are
  only offered by hand as ``ort_default`` (a baseline), never by the search;
* activation/weight types come from the target profile (``uint8`` on x86, ``int8`` on
  ARM/NPU);
* dynamic quantization is restricted to MatMul/Gemm (``ConvInteger`` is 5-11x *slower* than
  fp32) and only suggested when most of the graph's MACs are in MatMul/Gemm
  (``matmul_mac_fraction``);
* fp16 is a size knob on CPU (slower there); the profile decides whether it is offered;
* ``fp32_opt`` saves the graph optimized at ``ORT_ENABLE_BASIC``: constant folding, redundant
  node elimination and Conv+BN/Add/Mul fusions, all expressed with standard ONNX ops, so the
  file still runs on any runtime and any execution provider. ``ORT_ENABLE_EXTENDED`` would
  add ``com.microsoft`` contrib ops (FusedConv, ...) that only ORT's CPU provider executes,
  and levels above it bake in the host's memory layout.

``reduce_range`` is always off: the x86 hosts we target have VNNI, where 8-bit weights do not
saturate (a non-VNNI AVX2 target would need it; profiles do not describe that yet).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import CandidateError, ConfigError
from edgeopt.stages.base import (
    Phase,
    Stage,
    StageConfig,
    StageContext,
    Suggester,
    check_range,
    register,
)

if TYPE_CHECKING:
    import onnx

    from edgeopt.profiles import HardwareProfile

log = logging.getLogger(__name__)

MATMUL_HEAVY = 0.5
"""Fraction of MACs in MatMul/Gemm above which dynamic quantization is suggested."""

_CALIB_BATCH = 32
_COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QUANT_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "ConvInteger",
    "MatMulInteger",
)


class QuantMode(StrEnum):
    """What the quantize stage produces."""

    FP32 = "fp32"  # unchanged (a copy)
    FP32_OPT = "fp32_opt"  # ORT basic-level graph optimization, saved
    FP16 = "fp16"  # float16 weights and compute, fp32 inputs/outputs
    INT8_STATIC = "int8_static"  # static QDQ, types from the profile
    INT8_DYNAMIC = "int8_dynamic"  # dynamic, MatMul/Gemm only
    ORT_DEFAULT = "ort_default"  # quantize_static with ORT's defaults (by-hand baseline)


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

    ``calibration``/``calibration_samples``/``exclude_first_last``/``activation_type`` apply to
    the static modes; ``per_channel``/``weight_type`` to the int8 modes (``ort_default``
    ignores all of them but ``calibration_samples``: it is ORT's defaults by definition).
    ``exclude_first_last`` keeps the first and last Conv/Gemm/MatMul in float.
    """

    mode: QuantMode = QuantMode.FP32
    calibration: CalibMethod = CalibMethod.MINMAX
    calibration_samples: int = 128
    per_channel: bool = True
    activation_type: QType = QType.UINT8
    weight_type: QType = QType.INT8
    exclude_first_last: bool = False

    def __post_init__(self) -> None:
        self._check_types()
        check_range("quantize.calibration_samples", self.calibration_samples, 1, 100_000)
        if self.activation_type is QType.INT8 and self.weight_type is QType.UINT8:
            raise ConfigError(
                "quantize: int8 activations with uint8 weights is not supported by ONNX Runtime",
                hint="use uint8/int8 (x86) or int8/int8 (ARM, NPU)",
            )


def _qtype(t: QType) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if t is QType.INT8 else QuantType.QUInt8


def _calib(c: CalibMethod) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        CalibMethod.MINMAX: CalibrationMethod.MinMax,
        CalibMethod.ENTROPY: CalibrationMethod.Entropy,
        CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
    }[c]


def quant_node_counts(path: str | Path) -> dict[str, int]:
    """Counts of every op type in the graph (QuantizeLinear, QLinearConv, ...; zeros omitted)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


def quantized_node_count(path: str | Path) -> int:
    """Number of quantization-related nodes: Q/DQ, QLinear*, *Integer, DynamicQuantizeLinear."""
    counts = quant_node_counts(path)
    return sum(v for k, v in counts.items() if k in QUANT_OPS or k.startswith("QLinear"))


def _shape_of(info: Any) -> list[int]:
    dims = info.type.tensor_type.shape.dim
    return [d.dim_value if d.dim_value > 0 else 1 for d in dims]


def mac_breakdown(model: onnx.ModelProto) -> dict[str, int]:
    """MACs per op type (Conv/ConvTranspose/Gemm/MatMul) for batch 1, from inferred shapes."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = _shape_of(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    out: Counter[str] = Counter()
    for n in g.node:
        if n.op_type not in _COMPUTE_OPS or n.output[0] not in shapes:
            continue
        y = shapes[n.output[0]]
        w = shapes.get(n.input[1])
        if w is None:
            continue
        if n.op_type in ("Conv", "ConvTranspose"):
            k = int(np.prod(w[1:]))  # (Cin/groups) * kh * kw
            if n.op_type == "ConvTranspose":
                k = int(np.prod(w[2:])) * int(w[0]) // max(1, int(y[1]))
            macs = int(np.prod(y)) * k
        elif n.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i == 1 for a in n.attribute)
            k = w[1] if trans_b else w[0]
            macs = int(np.prod(y)) * int(k)
        else:
            macs = int(np.prod(y)) * int(w[-2] if len(w) >= 2 else w[0])
        out[n.op_type] += macs
    return dict(out)


def matmul_mac_fraction(path: str | Path) -> float:
    """Share of the graph's MACs in MatMul/Gemm (0 for a pure CNN head-less graph)."""
    import onnx

    b = mac_breakdown(onnx.load(str(path)))
    total = sum(b.values())
    return (b.get("MatMul", 0) + b.get("Gemm", 0)) / total if total else 0.0


def calibration_inputs(
    ctx: StageContext, samples: int, input_shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """``samples`` calibration inputs: a seeded subset of the training split, or standard
    Gaussian inputs of ``ctx.input_shape`` when there is no data."""
    rng = np.random.default_rng(ctx.seed)
    if ctx.data is not None:
        x = ctx.data.x_train
        idx = rng.permutation(len(x))[: min(samples, len(x))]
        return np.ascontiguousarray(x[idx], dtype=np.float32)
    shape = input_shape or ctx.input_shape
    return rng.standard_normal((samples, *shape)).astype(np.float32)


class _Reader:
    """``CalibrationDataReader`` over a numpy array, in batches."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self._name = name
        self._x = x
        self._it: Iterator[dict[str, np.ndarray]] = self._batches()

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(0, len(self._x), _CALIB_BATCH):
            yield {self._name: self._x[i : i + _CALIB_BATCH]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def _reader(name: str, x: np.ndarray) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(name, x)


def _compute_nodes(model: onnx.ModelProto) -> list[Any]:
    return [n for n in model.graph.node if n.op_type in _COMPUTE_OPS]


def _output_path(src: Path, config: QuantizeConfig, workdir: Path) -> Path:
    digest = hashlib.sha256()
    digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    digest.update(src.read_bytes())
    out = workdir / f"{src.stem}.{config.mode.value}.{digest.hexdigest()[:10]}.onnx"
    if out.resolve() == src.resolve():  # pragma: no cover - the hash includes the content
        raise CandidateError("quantize", f"output would overwrite the input {src}")
    return out


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class QuantizeStage(Stage[QuantizeConfig, Path]):
    """ORT quantization / fp16 / graph optimization of an exported ONNX file.

    ``matmul_fraction`` is the share of the model's MACs in MatMul/Gemm; dynamic quantization
    is suggested only when it is at least ``MATMUL_HEAVY``. The registry instance has None
    (treated as a Conv model); use ``QuantizeStage.for_model(onnx_path)`` for a model-aware one.
    """

    name = "quantize"
    phase = Phase.ONNX
    config_type = QuantizeConfig

    def __init__(self, matmul_fraction: float | None = None) -> None:
        self.matmul_fraction = matmul_fraction

    @classmethod
    def for_model(cls, onnx_path: str | Path) -> QuantizeStage:
        """A stage whose ``suggest`` knows whether the model is MatMul/Gemm-heavy."""
        return cls(matmul_fraction=matmul_mac_fraction(onnx_path))

    def offered_modes(self, profile: HardwareProfile) -> list[QuantMode]:
        """Modes ``suggest`` may draw for ``profile`` (never ``ort_default``)."""
        q = profile.quantization
        if q.int8_only:
            return [QuantMode.INT8_STATIC]
        modes = [QuantMode(str(m)) for m in q.modes]
        heavy = self.matmul_fraction is not None and self.matmul_fraction >= MATMUL_HEAVY
        out = [
            m
            for m in QuantMode
            if m in modes
            and m is not QuantMode.ORT_DEFAULT
            and (m is not QuantMode.INT8_DYNAMIC or heavy)
        ]
        return out or [QuantMode.FP32]

    def suggest(self, space: Suggester, profile: HardwareProfile) -> QuantizeConfig:
        """``quantize.mode`` from ``offered_modes`` (not drawn when only one is offered, e.g.
        int8-only profiles). For int8_static: ``quantize.calibration`` (minmax, entropy,
        percentile), ``quantize.calibration_samples`` (64, 128, 256), ``quantize.per_channel``
        (only when the profile supports per-channel; else False) and
        ``quantize.exclude_first_last``. Types always come from the profile."""
        modes = self.offered_modes(profile)
        if len(modes) == 1:
            mode = modes[0]
        else:
            mode = QuantMode(space.suggest_categorical("quantize.mode", [m.value for m in modes]))
        base = self.baseline(profile)
        q = profile.quantization
        if mode is QuantMode.INT8_STATIC:
            calib = space.suggest_categorical(
                "quantize.calibration", [c.value for c in CalibMethod]
            )
            samples = space.suggest_categorical("quantize.calibration_samples", [64, 128, 256])
            per_channel = (
                bool(space.suggest_categorical("quantize.per_channel", [True, False]))
                if q.per_channel
                else False
            )
            excl = bool(space.suggest_categorical("quantize.exclude_first_last", [False, True]))
            return QuantizeConfig(
                mode=mode,
                calibration=CalibMethod(calib),
                calibration_samples=int(samples),
                per_channel=per_channel,
                activation_type=base.activation_type,
                weight_type=base.weight_type,
                exclude_first_last=excl,
            )
        return QuantizeConfig(
            mode=mode,
            per_channel=bool(q.per_channel),
            activation_type=base.activation_type,
            weight_type=base.weight_type,
        )

    def baseline(self, profile: HardwareProfile) -> QuantizeConfig:
        """fp32 (a copy of the input), with the profile's types recorded."""
        q = profile.quantization
        return QuantizeConfig(
            mode=QuantMode.FP32,
            per_channel=bool(q.per_channel),
            activation_type=QType(str(q.activation_type)),
            weight_type=QType(str(q.weight_type)),
        )

    def is_identity(self, config: QuantizeConfig) -> bool:
        """Only fp32 leaves the graph unchanged."""
        return config.mode is QuantMode.FP32

    def apply(self, artifact: Path, config: QuantizeConfig, ctx: StageContext) -> Path:
        """Write the converted model to a new file under ``ctx.workdir`` and return its path.

        The result is checked: it loads and runs in ORT on calibration inputs with the
        input's output shape, and its graph has the expected nodes (static: every
        non-excluded Conv/Gemm/MatMul reads DequantizeLinear weights; dynamic: at least one
        MatMulInteger; fp16: float16 initializers). Otherwise CandidateError("quantize", ...).
        """
        import onnx

        src = Path(artifact)
        if not src.is_file():
            raise CandidateError("quantize", f"ONNX file not found: {src}")
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        out = _output_path(src, config, ctx.workdir)
        model = onnx.load(str(src))
        input_name = model.graph.input[0].name
        in_shape = tuple(_shape_of(model.graph.input[0])[1:]) or ctx.input_shape
        check_x = calibration_inputs(ctx, min(8, config.calibration_samples), in_shape)
        ref = _session(src).run(None, {input_name: check_x})[0]
        try:
            with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
                self._convert(src, out, config, ctx, Path(tmp), input_name, in_shape)
        except CandidateError:
            raise
        except Exception as exc:
            out.unlink(missing_ok=True)
            raise CandidateError(
                "quantize", f"{config.mode.value} failed: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            got = _session(out).run(None, {input_name: check_x})[0]
        except Exception as exc:
            raise CandidateError(
                "quantize", f"{config.mode.value} model does not run in ONNX Runtime: {exc}"
            ) from exc
        if got.shape != ref.shape or not np.isfinite(got).all():
            raise CandidateError(
                "quantize",
                f"{config.mode.value} output has shape {got.shape} (expected {ref.shape}) "
                f"or non-finite values",
            )
        self._check_graph(out, config, model)
        return out

    def _convert(
        self,
        src: Path,
        out: Path,
        config: QuantizeConfig,
        ctx: StageContext,
        tmp: Path,
        input_name: str,
        in_shape: tuple[int, ...],
    ) -> None:
        import onnx
        import onnxruntime as ort

        mode = config.mode
        if mode is QuantMode.FP32:
            shutil.copyfile(src, out)
            return
        if mode is QuantMode.FP32_OPT:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.optimized_model_filepath = str(out)
            opts.log_severity_level = 3
            ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
            return
        if mode is QuantMode.FP16:
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            fp16 = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
            # the converter appends its input Cast nodes last; ORT tolerates that, but the
            # ONNX checker (and every tool that uses it, edgeopt check included) does not
            fp16.topological_sort()
            onnx.save(fp16.model, str(out))
            return

        from onnxruntime.quantization import (
            QuantFormat,
            quant_pre_process,
            quantize_dynamic,
            quantize_static,
        )

        pre = tmp / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        if mode is QuantMode.INT8_DYNAMIC:
            quantize_dynamic(
                str(pre),
                str(out),
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=config.per_channel,
                weight_type=_qtype(config.weight_type),
            )
            return
        calib = calibration_inputs(ctx, config.calibration_samples, in_shape)
        reader = _reader(input_name, calib)
        # the histogram calibrators print progress lines; the library must not
        with contextlib.redirect_stdout(io.StringIO()):
            if mode is QuantMode.ORT_DEFAULT:
                quantize_static(str(pre), str(out), reader)
                return
            exclude: list[str] = []
            if config.exclude_first_last:
                nodes = _compute_nodes(onnx.load(str(pre)))
                exclude = sorted({nodes[0].name, nodes[-1].name}) if nodes else []
                if any(not n for n in exclude):
                    raise CandidateError("quantize", "first/last compute node has no name")
            quantize_static(
                str(pre),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=_qtype(config.activation_type),
                weight_type=_qtype(config.weight_type),
                calibrate_method=_calib(config.calibration),
                nodes_to_exclude=exclude or None,
            )

    def _check_graph(self, out: Path, config: QuantizeConfig, original: onnx.ModelProto) -> None:
        import onnx

        model = onnx.load(str(out))
        counts = Counter(n.op_type for n in model.graph.node)
        mode = config.mode
        if mode in (QuantMode.INT8_STATIC, QuantMode.ORT_DEFAULT):
            producers = {o: n for n in model.graph.node for o in n.output}
            compute = _compute_nodes(model)
            quantized = [
                n
                for n in compute
                if len(n.input) > 1
                and getattr(producers.get(n.input[1]), "op_type", "") == "DequantizeLinear"
            ]
            excluded = (
                {compute[0].name, compute[-1].name}
                if compute and config.exclude_first_last and mode is QuantMode.INT8_STATIC
                else set()
            )
            want = len(compute) - len(excluded)
            if counts["QuantizeLinear"] == 0 or len(quantized) != want:
                raise CandidateError(
                    "quantize",
                    f"static quantization left {len(compute) - len(quantized)} of "
                    f"{len(compute)} Conv/Gemm/MatMul in float (expected {len(compute) - want}); "
                    f"QuantizeLinear {counts['QuantizeLinear']}, DequantizeLinear "
                    f"{counts['DequantizeLinear']}",
                )
        elif mode is QuantMode.INT8_DYNAMIC:
            if counts["MatMulInteger"] == 0:
                raise CandidateError(
                    "quantize",
                    "dynamic quantization found no MatMul/Gemm to quantize",
                    hint="dynamic mode quantizes MatMul/Gemm only; use int8_static for CNNs",
                )
        elif mode is QuantMode.FP16:
            n16 = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
            if n16 == 0 and len(original.graph.initializer) > 0:
                raise CandidateError("quantize", "fp16 conversion left no float16 weights")
        elif counts["QuantizeLinear"] or counts["DequantizeLinear"]:
            raise CandidateError("quantize", f"{mode.value} output unexpectedly has Q/DQ nodes")


QUANTIZE = register(QuantizeStage())
