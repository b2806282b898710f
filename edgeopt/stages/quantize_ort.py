"""How the quantize stage does its work with ONNX Runtime: the conversions and the structural
check of their output. ``edgeopt.stages.quantize`` says what the stage is (space, baselines)
and calls this module when it applies a config; onnxruntime is imported only then."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import CandidateError
from edgeopt.inputs import ModelInputs
from edgeopt.stages.onnx_graph import compute_nodes
from edgeopt.stages.ort_fuse import FuseInfo, fuse
from edgeopt.stages.ort_quant import calibration_reader, quantize_dynamic, quantize_static
from edgeopt.stages.quantize_config import QuantizeConfig, QuantMode, calibration_inputs
from edgeopt.stages.sensitivity import ranking, with_float_node

if TYPE_CHECKING:
    import onnx

    from edgeopt.stages.base import StageContext


def convert(
    src: Path,
    out: Path,
    config: QuantizeConfig,
    ctx: StageContext,
    tmp: Path,
    inputs: ModelInputs,
) -> ConvertInfo:
    """Write ``src`` converted as ``config`` says to ``out``; ``tmp`` is a scratch folder;
    ``inputs`` the graph's (calibration and parity feed all of them).

    A quantization-aware export's QDQ pairs are removed first; in int8_static their
    ranges become ORT tensor overrides. With ``config.fuse`` the float graph goes through
    ORT's transformer optimizer first (parity-checked on ``FUSE_SAMPLES`` calibration
    inputs). ORT's exceptions propagate (the stage turns them into a CandidateError).
    """
    mode = config.mode
    src, overrides = _float_source(src, tmp)
    fused: FuseInfo | None = None
    if config.fuse:
        feeds = inputs.feeds(calibration_inputs(ctx, FUSE_SAMPLES, inputs))
        fused = fuse(src, tmp / "fused.onnx", feeds=feeds)
        src = tmp / "fused.onnx"
    if mode is QuantMode.FP32:
        shutil.copyfile(src, out)
    elif mode is QuantMode.FP32_OPT:
        _optimize_basic(src, out)
    elif mode is QuantMode.FP16:
        _to_fp16(src, out)
    else:
        from onnxruntime.quantization import quant_pre_process

        pre = tmp / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        if mode is QuantMode.INT8_DYNAMIC:
            quantize_dynamic(pre, out, config)
            return ConvertInfo(fused=fused)
        calib = calibration_inputs(ctx, config.calibration_samples, inputs)
        names = _tensor_names(pre)
        overrides = {k: v for k, v in overrides.items() if k in names}
        exclude = _first_last(pre) if config.exclude_first_last else []
        sensitive: list[str] = []
        if config.fp32_nodes > 0 and mode is QuantMode.INT8_STATIC:
            ranked = ranking(pre, config, ctx, inputs, overrides)
            sensitive = [n for n in ranked if n not in exclude][: config.fp32_nodes]
        quantize_static(
            pre,
            out,
            config,
            calibration_reader(inputs, calib),
            [*exclude, *sensitive],
            overrides,
        )
        keep_float(out, pre, {*exclude, *sensitive})
        return ConvertInfo(tuple(sensitive), tuple(exclude), len(overrides))
    return ConvertInfo(fused=fused)


FUSE_SAMPLES = 16
"""Inputs on which a fused graph must agree with the unfused one."""


@dataclass(frozen=True)
class ConvertInfo:
    """What ``convert`` decided: the nodes it kept in float because they are the most
    sensitive (``fp32_nodes``) and because they are first/last, how many activation
    ranges came from quantization-aware fine-tuning, and what fused (``config.fuse``)."""

    sensitive: tuple[str, ...] = ()
    first_last: tuple[str, ...] = ()
    learned_ranges: int = 0
    fused: FuseInfo | None = None


def _float_source(src: Path, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """``src`` without the QDQ pairs of a quantization-aware export, and their ranges."""
    import onnx

    model = onnx.load(str(src))
    stripped, overrides = strip_activation_qdq(model)
    if stripped is model:
        return src, {}
    path = tmp / "float.onnx"
    onnx.save(stripped, str(path))
    return path, overrides


def _tensor_names(path: Path) -> set[str]:
    import onnx

    g = onnx.load(str(path)).graph
    return {name for n in g.node for name in n.input} | {i.name for i in g.input}


def _first_last(pre: Path) -> list[str]:
    import onnx

    nodes = compute_nodes(onnx.load(str(pre)))
    exclude = sorted({nodes[0].name, nodes[-1].name}) if nodes else []
    if any(not n for n in exclude):
        raise CandidateError("quantize", "first/last compute node has no name")
    return exclude


def _optimize_basic(src: Path, out: Path) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def _to_fp16(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    fp16 = OnnxModel(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True))
    # the converter appends its input Cast nodes last; ORT tolerates that, but the
    # ONNX checker (and every tool that uses it, edgeopt check included) does not
    fp16.topological_sort()
    onnx.save(fp16.model, str(out))


def check_graph(
    out: Path, config: QuantizeConfig, original: onnx.ModelProto, excluded: frozenset[str]
) -> None:
    """Raise CandidateError("quantize", ...) unless ``out`` has the nodes its mode implies.

    Static: exactly the Conv/Gemm/MatMul not in ``excluded`` (node names) read
    DequantizeLinear weights; dynamic: at least one MatMulInteger or (a fused graph)
    QAttention; fp16: float16 initializers; the float modes: no Q/DQ nodes.
    """
    import onnx

    model = onnx.load(str(out))
    counts = Counter(n.op_type for n in model.graph.node)
    mode = config.mode
    if mode in (QuantMode.INT8_STATIC, QuantMode.ORT_DEFAULT):
        _check_static(model, counts, excluded)
    elif mode is QuantMode.INT8_DYNAMIC:
        if counts["MatMulInteger"] == 0 and counts["QAttention"] == 0:
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


def keep_float(out: Path, float_path: Path, names: set[str]) -> None:
    """Make the nodes ``names`` of the static QDQ file ``out`` read the float tensors and
    weights of ``float_path`` (ORT's ``nodes_to_exclude`` leaves an excluded node reading
    DequantizeLinear outputs whose producer is quantized for another consumer: an
    activation x activation MatMul stays int8), then drop the Q/DQ nodes and initializers
    left without a consumer. What the sensitivity ranking scored is then what ships."""
    import onnx

    if not names:
        return
    model = onnx.load(str(out))
    float_model = onnx.load(str(float_path))
    floats = {i.name: i for i in float_model.graph.initializer}
    for node in float_model.graph.node:
        if node.name in names:
            model = with_float_node(model, float_model, node)
    g = model.graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    for n in g.node:
        for j, name in enumerate(n.input):
            # a weight shared with a quantized node: ORT's DequantizeLinear took its name
            if n.name in names and name in dq_out and name in floats:
                copy = onnx.TensorProto()
                copy.CopyFrom(floats[name])
                copy.name = f"{name}_float"
                if copy.name not in {i.name for i in g.initializer}:
                    g.initializer.append(copy)
                n.input[j] = copy.name
    _drop_orphans(g)
    onnx.save(model, str(out))


def _drop_orphans(g: Any) -> None:
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [
            n
            for n in g.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)


def _check_static(model: onnx.ModelProto, counts: Counter[str], excluded: frozenset[str]) -> None:
    """Every non-excluded Conv/Gemm/MatMul with a constant weight reads it through
    DequantizeLinear; every excluded one reads no DequantizeLinear output. An activation x
    activation MatMul (no constant weight) may be either unless excluded."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }

    def from_dq(name: str) -> bool:
        return getattr(producers.get(name), "op_type", "") == "DequantizeLinear"

    def weighted(n: Any) -> bool:
        if len(n.input) < 2:
            return False
        w = n.input[1]
        return (producers[w].input[0] if from_dq(w) else w) in consts

    compute = compute_nodes(model)
    heavy = [n for n in compute if weighted(n)]
    floats = {n.name for n in heavy if not from_dq(n.input[1])}
    want = {n.name for n in heavy} & excluded
    still_int8 = sorted(
        n.name for n in compute if n.name in excluded and any(map(from_dq, n.input))
    )
    if counts["QuantizeLinear"] == 0 or floats != want or still_int8:
        raise CandidateError(
            "quantize",
            f"static quantization left {len(floats)} of {len(heavy)} weighted Conv/Gemm/MatMul "
            f"in float (expected {len(want)}: {', '.join(sorted(want)) or 'none'}); excluded "
            f"but still int8: {', '.join(still_int8) or 'none'}; QuantizeLinear "
            f"{counts['QuantizeLinear']}, DequantizeLinear {counts['DequantizeLinear']}",
        )


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Constant tensors by name: initializers, Constant nodes, Identity of a constant."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in values:
            values[n.output[0]] = values[n.input[0]]
    return values


def strip_activation_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Remove the QuantizeLinear/DequantizeLinear pairs a quantization-aware fine-tuned
    export carries (``edgeopt.training.fake_quant``); return the float graph and ORT
    ``TensorQuantOverrides`` with each activation's learned scale and zero point.

    A pair on a constant (a weight already on its int8 grid) is dropped without an
    override: ORT re-quantizes that weight losslessly. A graph without pairs comes back
    as it is, with no overrides.
    """
    import onnx

    if not any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        return model, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    values = _constants(out)
    overrides: dict[str, Any] = {}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    quant = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    for idx, n in enumerate(graph.node):
        if n.op_type != "DequantizeLinear" or n.input[0] not in quant:
            continue
        q = quant[n.input[0]]
        src = q.input[0]
        drop.update({idx, list(graph.node).index(q)})
        rename[n.output[0]] = src
        if src in values or len(q.input) < 3:
            continue
        scale = values[q.input[1]]
        zp = values[q.input[2]]
        if scale.size != 1:
            raise CandidateError("quantize", f"per-channel activation quantization on {src}")
        overrides[src] = [{"scale": scale.reshape(()), "zero_point": zp.reshape(())}]
    if any(o.name in rename for o in graph.output):
        raise CandidateError("quantize", "a graph output comes straight from DequantizeLinear")
    kept = [n for i, n in enumerate(graph.node) if i not in drop]
    for n in kept:
        for j, name in enumerate(n.input):
            if name in rename:
                n.input[j] = rename[name]
    used = {name for n in kept for name in n.input} | {o.name for o in graph.output}
    kept = [n for n in kept if n.op_type not in ("Constant", "Identity") or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(kept)
    return out, overrides
