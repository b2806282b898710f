"""Which quantized nodes hurt most: a leave-one-out ranking for mixed-precision int8.

The model is quantized once with all Conv/Gemm/MatMul (ORT ``quantize_static``, the
config's calibration); then, for each such node, that node alone is put back in float in the
quantized graph (its float inputs and weights restored; the ranges of everything else stay
as calibrated) and the output error against the float model is measured on calibration
inputs. A node's sensitivity is how much the error falls when it alone stays float, so
``quantize.fp32_nodes = k`` keeps the k nodes whose float copy helps most. One quantization
and one ORT session per node, no recalibration: seconds for ResNet-18 at 32x32.

The ranking is cached as JSON under ``StageContext.cache_dir`` keyed by the float model's
bytes and everything the ranking depends on (calibration settings, types, seed, learned
ranges), so trials that share the torch phase reuse it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.inputs import ModelInputs
from edgeopt.stages.onnx_graph import compute_nodes
from edgeopt.stages.ort_quant import calibration_reader, quantize_static
from edgeopt.stages.quantize_config import QuantizeConfig, StaticOps, calibration_inputs

if TYPE_CHECKING:
    import onnx

    from edgeopt.stages.base import StageContext

EVAL_SAMPLES = 64
"""Calibration inputs on which each node's output error is measured."""


def cache_key(
    pre: Path,
    config: QuantizeConfig,
    seed: int,
    overrides: dict[str, Any],
    inputs: ModelInputs | None = None,
) -> str:
    """Hash of the float model and every setting the ranking depends on (a multi-input
    model's ``inputs`` too: their vocabulary and length shape the synthetic inputs)."""
    digest = hashlib.sha256(pre.read_bytes())
    settings = {
        "calibration": config.calibration.value,
        "samples": config.calibration_samples,
        "per_channel": config.per_channel,
        "activation_type": config.activation_type.value,
        "activation_symmetric": config.activation_symmetric,
        "weight_type": config.weight_type.value,
        "seed": seed,
        "eval_samples": EVAL_SAMPLES,
        "overrides": {
            k: [float(v[0]["scale"]), int(v[0]["zero_point"])] for k, v in overrides.items()
        },
    }
    if config.static_ops is not StaticOps.ALL:  # the key of an all-ops ranking stays as it was
        settings["static_ops"] = config.static_ops.value
    if inputs is not None and not inputs.is_single:
        settings["inputs"] = inputs.to_dict()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def ranking(
    pre: Path,
    config: QuantizeConfig,
    ctx: StageContext,
    inputs: ModelInputs,
    overrides: dict[str, Any],
) -> list[str]:
    """Names of ``pre``'s Conv/Gemm/MatMul nodes, most sensitive first (cached); ``inputs``:
    the graph's, all of them fed."""
    folder = (ctx.cache_dir or ctx.workdir) / "sensitivity"
    path = folder / f"{cache_key(pre, config, ctx.seed, overrides, inputs)}.json"
    if path.is_file():
        return list(json.loads(path.read_text())["ranking"])
    scores = node_sensitivity(pre, config, ctx, inputs, overrides)
    ranked = sorted(scores, key=lambda n: (-scores[n], n))
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"ranking": ranked, "gain": scores}, f)
    Path(tmp).replace(path)  # atomic: two workers may race, either result is the same
    return ranked


def node_sensitivity(
    pre: Path,
    config: QuantizeConfig,
    ctx: StageContext,
    inputs: ModelInputs,
    overrides: dict[str, Any],
) -> dict[str, float]:
    """For each named Conv/Gemm/MatMul: the fall in relative output error (MSE over the
    float output's variance) when that node alone stays float in the quantized graph."""
    import onnx

    calib = calibration_inputs(ctx, config.calibration_samples, inputs)
    x = inputs.feeds(calib[:EVAL_SAMPLES])
    float_model = onnx.load(str(pre))
    ref = _run(float_model, x)
    var = float(np.var(ref)) or 1.0
    plain = dataclasses.replace(config, exclude_first_last=False, fp32_nodes=0)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        qpath = Path(tmp) / "all.onnx"
        reader = calibration_reader(inputs, calib)
        quantize_static(pre, qpath, plain, reader, [], overrides)
        quantized = onnx.load(str(qpath))
    base = float(np.mean((_run(quantized, x) - ref) ** 2)) / var
    out: dict[str, float] = {}
    for node in compute_nodes(float_model):
        if not node.name:
            continue
        trial = with_float_node(quantized, float_model, node)
        err = float(np.mean((_run(trial, x) - ref) ** 2)) / var
        out[node.name] = base - err
    return out


def with_float_node(
    quantized: onnx.ModelProto, float_model: onnx.ModelProto, node: Any
) -> onnx.ModelProto:
    """``quantized`` with ``node`` reading its float inputs and weights again (the float
    tensors are still there: a quantized tensor's producer writes float and a
    QuantizeLinear reads it)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(quantized)
    g = model.graph
    have = {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    for n in model.graph.node:
        if n.name == node.name:
            del n.input[:]
            n.input.extend(node.input)
    floats = {i.name: i for i in float_model.graph.initializer}
    missing = dict.fromkeys(n for n in node.input if n in floats and n not in have)
    g.initializer.extend(floats[name] for name in missing)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0], dtype=np.float64)
