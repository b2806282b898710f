"""Micro-benchmark graphs: chains of identical layers, so the per-inference invoke overhead is
amortised, in fp32 and as int8 QDQ models (uint8 activations, int8 per-channel weights)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHAIN = 8


def _write(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _save(
    nodes: list[Any], x_shape: list[int], y: str, y_shape: list[int], inits: list[Any], path: Path
) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, y_shape)],
        initializer=inits,
    )
    return _write(graph, path)


def _conv_chain(path: Path, c: int, hw: int, k: int, group: int, n: int = CHAIN) -> Path:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(n):
        w = rng.standard_normal((c, c // group, k, k)).astype(np.float32) * 0.1
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}"),
        ]
        pad = k // 2
        nodes.append(
            helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[pad] * 4, group=group)
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    return _save(nodes, [1, c, hw, hw], x, [1, c, hw, hw], inits, path)


def _gemm_chain(path: Path, d: int, n: int = CHAIN) -> Path:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(n):
        w = rng.standard_normal((d, d)).astype(np.float32) * 0.05
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(d, np.float32), f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"]))
        nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"]))
        x = f"r{i}"
    return _save(nodes, [1, d], x, [1, d], inits, path)


def _qdq_single(path: Path, op: str, shape: list[int]) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    src, dst = (TensorProto.FLOAT, TensorProto.UINT8)
    if op == "DequantizeLinear":
        src, dst = dst, src
    graph = helper.make_graph(
        [helper.make_node(op, ["input", "s", "zp"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("input", src, shape)],
        [helper.make_tensor_value_info("y", dst, shape)],
        initializer=inits,
    )
    return _write(graph, path)


def _eltwise_chain(path: Path, shape: list[int], n: int) -> Path:
    from onnx import helper

    nodes, x = [], "input"
    for i in range(n):
        op = "Sigmoid" if i % 2 else "Neg"  # never fused or removed by ORT
        nodes.append(helper.make_node(op, [x], [f"e{i}"]))
        x = f"e{i}"
    return _save(nodes, shape, x, shape, [], path)


def quantize_qdq(src: Path, dst: Path, shape: list[int]) -> Path:
    """int8 QDQ: uint8 activations, int8 per-channel weights (the x86 VNNI path)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._it = iter(
                [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(4)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(
        str(src),
        str(dst),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


# op class (and a larger dense conv): (builder, input shape)
COMPUTE: dict[str, tuple[Callable[[Path], Path], list[int]]] = {
    "dense_conv": (lambda p: _conv_chain(p, 32, 16, 3, 1), [1, 32, 16, 16]),
    "dense_conv_large": (lambda p: _conv_chain(p, 64, 32, 3, 1, 4), [1, 64, 32, 32]),
    "pointwise_conv": (lambda p: _conv_chain(p, 64, 16, 1, 1), [1, 64, 16, 16]),
    "depthwise_conv": (lambda p: _conv_chain(p, 64, 16, 3, 64), [1, 64, 16, 16]),
    "gemm": (lambda p: _gemm_chain(p, 256), [1, 256]),
}
ELT_SHAPE = [1, 32, 32, 32]
TINY_SHAPE = [1, 4, 2, 2]
TINY_N = 64


def build_micro(tmp: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Micro-benchmark models and their inputs, keyed by name."""
    models: dict[str, tuple[Path, list[int]]] = {}
    for name, (build, shape) in COMPUTE.items():
        fp = build(tmp / f"{name}.onnx")
        models[f"fp32/{name}"] = (fp, shape)
        models[f"int8/{name}"] = (quantize_qdq(fp, tmp / f"{name}.int8.onnx", shape), shape)
    models["elementwise"] = (_eltwise_chain(tmp / "elt.onnx", ELT_SHAPE, CHAIN), ELT_SHAPE)
    # Per-kernel overhead: chains of 1 and TINY_N tiny 1x1 convs (real conv kernels, ~no work).
    models["tiny1"] = (_conv_chain(tmp / "tiny1.onnx", 4, 2, 1, 1, 1), TINY_SHAPE)
    models["tinyN"] = (_conv_chain(tmp / "tinyN.onnx", 4, 2, 1, 1, TINY_N), TINY_SHAPE)
    for op in ("QuantizeLinear", "DequantizeLinear"):
        models[op] = (_qdq_single(tmp / f"{op}.onnx", op, ELT_SHAPE), ELT_SHAPE)
    rng = np.random.default_rng(0)
    out = {}
    for name, (p, shape) in models.items():
        x = rng.standard_normal(shape).astype(np.float32)
        if name == "DequantizeLinear":
            x = (x * 40 + 128).clip(0, 255).astype(np.uint8)
        out[name] = (p, x)
    return out
