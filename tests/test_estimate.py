"""Cost model: exact arithmetic on hand-built ONNX graphs against round-number test profiles.

Units in the test profiles make the arithmetic checkable by hand: 1 GOP/s is one op per ns
and 1 GB/s one byte per ns, so every time below is written in microseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.errors import ConfigError
from edgeopt.estimate import Estimate, estimate, kernel_work
from edgeopt.metrics import Metric, Provenance
from edgeopt.profiles import list_profiles, validate_profile_file

DATA = Path(__file__).parent / "data" / "profiles"
CPU = validate_profile_file(DATA / "arith.toml")
FPGA = validate_profile_file(DATA / "arith-fpga.toml")

F32, U8, I8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8


def _save(tmp_path: Path, nodes: list, inputs: list, outputs: list, inits: list) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _t(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _w(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype=dtype), name)


def _us(x_ms: float) -> float:
    return x_ms * 1e3


def test_dense_conv_relu_fused(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [
            helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["y"], ["z"], name="relu"),
        ],
        [_t("x", F32, [1, 8, 16, 16])],
        [_t("z", F32, [1, 16, 16, 16])],
        [_w("w", (16, 8, 3, 3))],
    )
    e = estimate(path, CPU)
    [k] = e.nodes  # Conv+Relu is one kernel
    assert (k.op, k.unit, k.dtype, k.op_class, k.bound) == (
        "Conv+Relu",
        "cpu",
        "fp32",
        "dense_conv",
        "compute",
    )
    assert k.macs == 16 * 16 * 16 * 8 * 9 == 294912
    # bytes: x 8*256*4 + w 16*8*9*4 + z 16*256*4; the fused y is never written
    assert k.bytes == 8192 + 4608 + 16384
    # compute 589824 ops / (100 GOP/s * 0.5) = 11.79648 us > memory 2.9184 us; + 1 us overhead
    assert _us(k.time_ms) == pytest.approx(12.79648)
    assert _us(e.latency_ms) == pytest.approx(12.79648 + 10.0)  # + invoke overhead
    assert e.activation_mb * 1e6 == pytest.approx(8192 + 16384)
    assert e.weight_mb * 1e6 == pytest.approx(4608)
    assert e.peak_memory_mb * 1e6 == pytest.approx(8192 + 16384 + 4608)
    # energy low: 589824 ops * 2 pJ + 29184 B * 10 pJ; high: 10 W busy + 1 W idle
    assert e.energy_mj_low == pytest.approx((589824 * 2 + 29184 * 10) * 1e-9)
    assert e.energy_mj_high == pytest.approx((10 * 12.79648 + 1 * 10.0) * 1e-3)
    assert e.fits == {"dram": True}


def test_depthwise_conv_memory_bound(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=16)],
        [_t("x", F32, [1, 16, 8, 8])],
        [_t("y", F32, [1, 16, 8, 8])],
        [_w("w", (16, 1, 3, 3))],
    )
    [k] = estimate(path, CPU).nodes
    assert (k.op_class, k.macs, k.bound) == ("depthwise_conv", 16 * 64 * 9, "memory")
    # compute 18432 / (100 * 0.25) = 0.73728 us < memory (4096+576+4096) B / 10 GB/s = 0.8768
    assert k.bytes == 8768
    assert _us(k.time_ms) == pytest.approx(0.8768 + 1.0)


def test_pointwise_conv_class(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        [_t("x", F32, [1, 16, 8, 8])],
        [_t("y", F32, [1, 32, 8, 8])],
        [_w("w", (32, 16, 1, 1))],
    )
    [k] = estimate(path, CPU).nodes
    assert (k.op_class, k.macs) == ("pointwise_conv", 32 * 64 * 16)


def test_gemm(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1)],
        [_t("a", F32, [1, 64])],
        [_t("y", F32, [1, 10])],
        [_w("b", (10, 64)), _w("c", (10,))],
    )
    [k] = estimate(path, CPU).nodes
    assert (k.op_class, k.macs, k.bound) == ("gemm", 640, "memory")
    assert k.bytes == 256 + 2560 + 40 + 40
    # compute 1280 / 50 = 0.0256 us < memory 2896 / 10 = 0.2896 us
    assert _us(k.time_ms) == pytest.approx(0.2896 + 1.0)


def _qdq_conv_graph(tmp_path: Path) -> Path:
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
        numpy_helper.from_array(np.ones((16, 8, 3, 3), np.int8), "wq"),
        numpy_helper.from_array(np.full(16, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(16, np.int8), "wzp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="dq_w", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["yq"], name="q_y"),
        helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["out"], name="dq_out"),
    ]
    return _save(
        tmp_path, nodes, [_t("x", F32, [1, 8, 16, 16])], [_t("out", F32, [1, 16, 16, 16])], inits
    )


def test_qdq_conv_counts_as_int8(tmp_path: Path) -> None:
    e = estimate(_qdq_conv_graph(tmp_path), CPU)
    q_in, conv, dq_out = e.nodes
    assert (q_in.op, q_in.dtype, q_in.bytes) == ("QuantizeLinear", "fp32", 8192 + 2048)
    assert _us(q_in.time_ms) == pytest.approx(1.024 + 1.0)
    # The DequantizeLinear nodes and the QuantizeLinear after the conv fold into it.
    assert (conv.op, conv.dtype, conv.op_class) == ("Conv", "int8", "dense_conv")
    assert conv.bytes == 2048 + 1152 + 4096  # u8 input, s8 weight, u8 output
    # int8: 589824 ops / (400 GOP/s * 0.25 int8 dense efficiency) = 5.89824 us
    assert conv.bound == "compute"
    assert _us(conv.time_ms) == pytest.approx(5.89824 + 1.0)
    assert (dq_out.op, dq_out.bytes) == ("DequantizeLinear", 4096 + 16384)
    assert _us(dq_out.time_ms) == pytest.approx(2.048 + 1.0)
    assert _us(e.latency_ms) == pytest.approx(2.024 + 6.89824 + 3.048 + 10.0)
    # Liveness: x+xq (step 0), xq+yq (1), yq+out (2) -> the peak is 4096 + 16384.
    assert e.activation_mb * 1e6 == pytest.approx(20480)


def _int8_conv_params(act: type = np.uint8) -> list[onnx.TensorProto]:
    """``act`` (u8) activation scale/zero point (s, zp) and an s8 16x8x3x3 weight (wq, ws,
    wzp)."""
    return [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(128 if act is np.uint8 else 0, act), "zp"),
        numpy_helper.from_array(np.ones((16, 8, 3, 3), np.int8), "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wzp"),
    ]


def test_qoperator_qlinearconv_is_int8(tmp_path: Path) -> None:
    inits = _int8_conv_params()
    node = helper.make_node(
        "QLinearConv", ["x", "s", "zp", "wq", "ws", "wzp", "s", "zp"], ["y"], pads=[1, 1, 1, 1]
    )
    path = _save(
        tmp_path, [node], [_t("x", U8, [1, 8, 16, 16])], [_t("y", U8, [1, 16, 16, 16])], inits
    )
    [k] = estimate(path, CPU).nodes
    assert (k.dtype, k.macs, k.bytes) == ("int8", 294912, 2048 + 1152 + 4096)


def test_unsupported_op_falls_back_with_transfer(tmp_path: Path) -> None:
    inits = _int8_conv_params(np.int8)  # the FPGA's int8 flavour: its unit runs the conv
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "s", "zp"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "s", "zp"], ["yd"], name="dq"),
        helper.make_node("Sigmoid", ["yd"], ["out"], name="sigmoid"),
    ]
    path = _save(
        tmp_path, nodes, [_t("x", I8, [1, 8, 8, 8])], [_t("out", F32, [1, 16, 8, 8])], inits
    )
    e = estimate(path, FPGA)
    got = [(n.op, n.unit, n.bytes) for n in e.nodes]
    assert got == [
        ("Transfer", "cpu->acc", 512),  # the graph input lives on the host unit
        ("Conv", "acc", 512 + 1152 + 1024),
        ("Transfer", "acc->cpu", 1024),  # int8 conv output crosses back
        ("DequantizeLinear", "cpu", 1024 + 4096),
        ("Sigmoid", "cpu", 4096 + 4096),
    ]
    t = [_us(n.time_ms) for n in e.nodes]
    assert t[0] == pytest.approx(512 / 1.0 * 1e-3 + 5.0)  # 1 GB/s link + 5 us latency
    # 147456 ops / (1000 GOP/s * 0.5) = 0.294912 us > 2688 B / 10 GB/s; + 1 us
    assert t[1] == pytest.approx(0.294912 + 1.0)
    assert t[2] == pytest.approx(1.024 + 5.0)
    assert t[3] == pytest.approx(5.12 + 2.0)  # 5120 B at 1 GB/s on the CPU, + 2 us
    assert t[4] == pytest.approx(8.192 + 2.0)
    assert _us(e.latency_ms) == pytest.approx(sum(t))
    assert e.fallback_fraction == pytest.approx(2048 / (147456 + 2048))
    assert any("fall back to 'cpu'" in a and "Sigmoid" in a for a in e.assumptions)
    # lower bound: acc 5 W / 1 TOPS = 5 pJ/op; cpu 1 W / 10 GOP/s = 100 pJ/op; 0 pJ/byte
    assert e.energy_mj_low == pytest.approx((147456 * 5 + 2048 * 100) * 1e-9)


def test_liveness_keeps_skip_tensor(tmp_path: Path) -> None:
    shape = [1, 4, 8, 8]  # 1024 bytes each in fp32
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["b"]),
        helper.make_node("Neg", ["b"], ["c"]),
        helper.make_node("Add", ["a", "c"], ["out"]),
    ]
    path = _save(tmp_path, nodes, [_t("x", F32, shape)], [_t("out", F32, shape)], [])
    e = estimate(path, CPU)
    assert len(e.nodes) == 4
    # At the Neg, a (kept for the Add), b and c are live: 3 x 1024 bytes.
    assert e.activation_mb * 1e6 == pytest.approx(3072)
    assert e.weight_mb == 0


def test_dynamic_batch_is_one_and_measurement_is_estimated(tmp_path: Path) -> None:
    path = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [_t("x", F32, ["batch", 8, 16, 16])],
        [_t("y", F32, ["batch", 16, 16, 16])],
        [_w("w", (16, 8, 3, 3))],
    )
    e = estimate(path, CPU)
    assert e.nodes[0].macs == 294912
    assert any("'batch'" in a and "assumed 1" in a for a in e.assumptions)
    m = e.to_measurement()
    assert m.profile == "arith-cpu"
    assert {v.provenance for v in m.values.values()} == {Provenance.ESTIMATED}
    en = m.get(Metric.ENERGY_MJ)
    assert en is not None and en.low == e.energy_mj_low and en.high == e.energy_mj_high
    assert en.value == pytest.approx((e.energy_mj_low + e.energy_mj_high) / 2)
    assert m[Metric.LATENCY_MS] == e.latency_ms


def test_mcu_fits_sram_and_flash(tmp_path: Path) -> None:
    mcu = next(p for p in list_profiles() if p.name == "mcu-stm32f746")
    path = _save(
        tmp_path,
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        [_t("x", F32, [1, 64, 32, 32])],  # 256 KB input + 512 KB output > 256 KB budget
        [_t("y", F32, [1, 128, 32, 32])],
        [_w("w", (128, 64, 3, 3))],  # 295 KB of weights < 1 MB flash
    )
    e: Estimate = estimate(path, mcu)
    assert e.fits == {"sram": False, "flash": True}


def test_every_shipped_profile_estimates(tmp_path: Path) -> None:
    path = _qdq_conv_graph(tmp_path)
    for p in list_profiles():
        e = estimate(path, p)
        assert e.latency_ms > 0 and e.energy_mj_high >= e.energy_mj_low > 0, p.name
        assert e.assumptions[0].startswith(f"estimated (profile {p.name})")


def test_bad_model_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ConfigError, match="bad.onnx"):
        estimate(bad, CPU)
    with pytest.raises(ConfigError, match="not found"):
        estimate(tmp_path / "none.onnx", CPU)


def test_kernel_work_counts_what_estimate_counts(tmp_path: Path) -> None:
    # The one op counter calibration uses: the same kernels, dtypes and ops as the estimate.
    path = _qdq_conv_graph(tmp_path)
    assert CPU.runtime is not None
    work = kernel_work(path, CPU.runtime.fusions)
    assert [(w.op, w.dtype, w.op_class, w.macs, w.ops) for w in work] == [
        (c.op, c.dtype, c.op_class, c.macs, c.ops) for c in estimate(path, CPU).nodes
    ]
