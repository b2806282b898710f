"""ORT quantization stage: real ORT sessions, quantized node counts, profile-driven space."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_facts import facts
from torch import nn

from edgeopt import zoo
from edgeopt.errors import CandidateError, ConfigError
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import (
    STAGES,
    ModelFacts,
    ProbeInput,
    QuantizeConfig,
    QuantMode,
    StageContext,
)
from edgeopt.stages.onnx_graph import matmul_mac_fraction, quant_node_counts

SHAPE = (1, 16, 16)
CONV = facts()


def _probe(path: Path) -> ProbeInput:
    return ProbeInput(module=None, onnx_path=path, input_shape=(4,))


def _ctx(tmp_path: Path, profile: str = "cpu") -> StageContext:
    return StageContext(
        workdir=tmp_path / "work",
        profile=load_profile(profile),
        data=None,
        teacher=None,
        input_shape=SHAPE,
    )


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in ("plain_cnn", "resnet_small", "mobilenet_small"):
        torch.manual_seed(0)
        out[name] = export_onnx(zoo.BUILDERS[name](width=8).eval(), SHAPE, d / f"{name}.onnx")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    out["mlp"] = export_onnx(mlp, SHAPE, d / "mlp.onnx")
    return out


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _weights_from_dq(path: Path) -> tuple[int, int]:
    """(compute nodes whose weight comes from DequantizeLinear, compute nodes)."""
    g = onnx.load(str(path)).graph
    prod = {o: n.op_type for n in g.node for o in n.output}
    comp = [n for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    return sum(prod.get(n.input[1]) == "DequantizeLinear" for n in comp), len(comp)


def _zero_point_type(path: Path) -> int:
    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    q = next(n for n in g.node if n.op_type == "QuantizeLinear")
    return inits[q.input[2]].data_type


def test_int8_static_plain_cnn_exact_counts(tmp_path: Path, onnx_models: dict[str, Path]) -> None:
    src = onnx_models["plain_cnn"]
    before = src.read_bytes()
    out = STAGES["quantize"].apply(src, QuantizeConfig(mode="int8_static"), _ctx(tmp_path)).artifact
    assert out != src and out.parent == tmp_path / "work" and src.read_bytes() == before
    c = quant_node_counts(out)
    # 11 activation tensors quantized (input, 5 conv outputs, 2 maxpools, flatten, gemm
    # in/out); each of 6 Conv/Gemm dequantizes its weight and its (BN-folded) bias
    assert c["QuantizeLinear"] == 11 and c["DequantizeLinear"] == 11 + 2 * 6
    assert _weights_from_dq(out) == (6, 6)
    assert _zero_point_type(out) == onnx.TensorProto.UINT8  # x86 profile: u8 activations

    excl = (
        STAGES["quantize"]
        .apply(src, QuantizeConfig(mode="int8_static", exclude_first_last=True), _ctx(tmp_path))
        .artifact
    )
    c = quant_node_counts(excl)
    # no Q/DQ pair on the flatten output: the excluded last Gemm reads its float input (ORT's
    # exclusion alone left it reading an int8-rounded one, 9 QuantizeLinear)
    assert c["QuantizeLinear"] == 8 and c["DequantizeLinear"] == 8 + 2 * 4
    assert _weights_from_dq(excl) == (4, 6)


@pytest.mark.parametrize("name", ["resnet_small", "mobilenet_small"])
@pytest.mark.parametrize("calibration", ["minmax", "entropy", "percentile"])
def test_int8_static_families(
    tmp_path: Path, onnx_models: dict[str, Path], name: str, calibration: str
) -> None:
    src = onnx_models[name]
    cfg = QuantizeConfig(mode="int8_static", calibration=calibration, calibration_samples=64)
    out = STAGES["quantize"].apply(src, cfg, _ctx(tmp_path)).artifact
    c = quant_node_counts(out)
    n_q, n_comp = _weights_from_dq(out)
    assert n_q == n_comp == {"resnet_small": 16, "mobilenet_small": 21}[name]
    assert c["DequantizeLinear"] == c["QuantizeLinear"] + 2 * n_q
    # quantized model agrees with fp32 on inputs from the calibration distribution
    x = np.random.default_rng(1).standard_normal((64, *SHAPE)).astype(np.float32)
    agree = (_run(out, x).argmax(1) == _run(src, x).argmax(1)).mean()
    assert agree >= 0.8


def test_ort_default_uses_s8_activations(tmp_path: Path, onnx_models: dict[str, Path]) -> None:
    out = (
        STAGES["quantize"]
        .apply(onnx_models["resnet_small"], QuantizeConfig(mode="ort_default"), _ctx(tmp_path))
        .artifact
    )
    assert _zero_point_type(out) == onnx.TensorProto.INT8
    assert _weights_from_dq(out) == (16, 16)


def _weight_type(path: Path) -> int:
    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    conv = next(n for n in g.node if n.op_type == "Conv")
    dq = next(n for n in g.node if n.output[0] == conv.input[1])
    return inits[dq.input[0]].data_type


def _activation_zero_points(path: Path) -> set[int]:
    g = onnx.load(str(path)).graph
    inits = {i.name: int(onnx.numpy_helper.to_array(i)) for i in g.initializer if not i.dims}
    return {inits[n.input[2]] for n in g.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize(
    ("target", "act", "weight", "symmetric"),
    [
        ("cpu", onnx.TensorProto.UINT8, onnx.TensorProto.INT8, False),  # x86 VNNI u8s8
        ("mobile", onnx.TensorProto.UINT8, onnx.TensorProto.UINT8, False),  # ORT's QNN default
        ("jetson", onnx.TensorProto.INT8, onnx.TensorProto.INT8, True),  # TensorRT: zp 0
    ],
)
def test_profile_types_are_the_targets_flavour(
    tmp_path: Path,
    onnx_models: dict[str, Path],
    target: str,
    act: int,
    weight: int,
    symmetric: bool,
) -> None:
    stage = STAGES["quantize"]
    plain = stage.by_hand(load_profile(target), CONV)  # the search's plain int8 on the target
    assert plain is not None
    out = stage.apply(onnx_models["plain_cnn"], plain.config, _ctx(tmp_path, target)).artifact
    assert (_zero_point_type(out), _weight_type(out)) == (act, weight)
    assert (_activation_zero_points(out) == {0}) is symmetric


def test_dynamic_only_matmul_gemm(tmp_path: Path, onnx_models: dict[str, Path]) -> None:
    out = (
        STAGES["quantize"]
        .apply(onnx_models["mlp"], QuantizeConfig(mode="int8_dynamic"), _ctx(tmp_path))
        .artifact
    )
    c = quant_node_counts(out)
    assert c["MatMulInteger"] == 2 and c.get("Gemm", 0) == 0
    cnn = (
        STAGES["quantize"]
        .apply(onnx_models["resnet_small"], QuantizeConfig(mode="int8_dynamic"), _ctx(tmp_path))
        .artifact
    )
    c = quant_node_counts(cnn)
    assert c.get("ConvInteger", 0) == 0 and c["Conv"] == 15 and c["MatMulInteger"] == 1


def test_dynamic_keeps_s8_weights_on_a_u8_weight_target(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    # the mobile flavour's u8 weights are for QNN's static QDQ; dynamic runs on CPU kernels
    stage = STAGES["quantize"]
    base = stage.identity(load_profile("mobile"))
    assert base.weight_type == "uint8"
    cfg = dataclasses.replace(base, mode=QuantMode.INT8_DYNAMIC)
    out = stage.apply(onnx_models["mlp"], cfg, _ctx(tmp_path, "mobile")).artifact
    g = onnx.load(str(out)).graph
    inits = {i.name: i for i in g.initializer}
    weights = [inits[n.input[1]] for n in g.node if n.op_type == "MatMulInteger"]
    assert len(weights) == 2 and {w.data_type for w in weights} == {onnx.TensorProto.INT8}


def test_fp16_and_fp32_opt(tmp_path: Path, onnx_models: dict[str, Path]) -> None:
    src = onnx_models["mobilenet_small"]
    x = np.random.default_rng(0).standard_normal((4, *SHAPE)).astype(np.float32)
    ref = _run(src, x)
    fp16 = STAGES["quantize"].apply(src, QuantizeConfig(mode="fp16"), _ctx(tmp_path)).artifact
    m = onnx.load(str(fp16))
    onnx.checker.check_model(m)  # a valid graph: other tools (edgeopt check) load it
    assert {i.data_type for i in m.graph.initializer} >= {onnx.TensorProto.FLOAT16}
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io kept
    assert np.allclose(_run(fp16, x), ref, atol=5e-2)
    assert fp16.stat().st_size < 0.65 * src.stat().st_size  # tiny: graph overhead

    opt = STAGES["quantize"].apply(src, QuantizeConfig(mode="fp32_opt"), _ctx(tmp_path)).artifact
    m = onnx.load(str(opt))
    assert all(n.domain in ("", "ai.onnx") for n in m.graph.node)  # portable: no contrib ops
    assert np.allclose(_run(opt, x), ref, atol=1e-4)

    same = STAGES["quantize"].apply(src, QuantizeConfig(), _ctx(tmp_path)).artifact
    assert same != src and same.read_bytes() == src.read_bytes()


def test_missing_file_is_candidate_error(tmp_path: Path) -> None:
    with pytest.raises(CandidateError) as info:
        STAGES["quantize"].apply(tmp_path / "nope.onnx", QuantizeConfig(), _ctx(tmp_path))
    assert info.value.stage == "quantize"


class Answers:
    """A Suggester that answers from a dict (else the first choice / the low end)."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers or {}
        self.asked: dict[str, Any] = {}

    def _ans(self, name: str, default: Any, choices: Sequence[Any] | None = None) -> Any:
        v = self.answers.get(name, default)
        if choices is not None:
            assert v in choices, (name, v, choices)
        self.asked[name] = choices if choices is not None else default
        return v

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return float(self._ans(name, low))

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        return int(self._ans(name, low))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._ans(name, choices[0], list(choices))


def test_suggest_respects_profile(onnx_models: dict[str, Path]) -> None:
    stage = STAGES["quantize"]
    cpu = Answers()
    assert stage.suggest(cpu, load_profile("cpu"), CONV).mode is QuantMode.FP32
    # conv model: no dynamic, no fp16 on x86, never ort_default
    assert cpu.asked["quantize.mode"] == ["fp32", "fp32_opt", "int8_static"]
    fpga = Answers()
    cfg = stage.suggest(fpga, load_profile("fpga"), CONV)
    assert cfg.mode is QuantMode.INT8_STATIC and "quantize.mode" not in fpga.asked
    assert cfg.activation_type == "int8" and cfg.per_channel is False
    assert "quantize.per_channel" not in fpga.asked
    gpu = Answers({"quantize.mode": "int8_static", "quantize.calibration": "entropy"})
    cfg = stage.suggest(gpu, load_profile("gpu"), CONV)
    assert "fp16" in gpu.asked["quantize.mode"] and cfg.calibration == "entropy"
    assert all(k.startswith("quantize.") for k in gpu.asked)
    mlp = ModelFacts(onnx_input=True, stages={"quantize": stage.probe(_probe(onnx_models["mlp"]))})
    assert matmul_mac_fraction(onnx_models["mlp"]) == 1.0
    assert mlp.of("quantize")["matmul_heavy"] and not STAGES["prune"].enabled(mlp)
    heavy = Answers()
    stage.suggest(heavy, load_profile("cpu"), mlp)
    assert "int8_dynamic" in heavy.asked["quantize.mode"]
    assert matmul_mac_fraction(onnx_models["resnet_small"]) < 0.01
    assert not stage.probe(_probe(onnx_models["resnet_small"]))["matmul_heavy"]
    # deterministic given the answers
    a = {"quantize.mode": "int8_static", "quantize.calibration_samples": 256}
    assert stage.suggest(Answers(a), load_profile("cpu"), CONV) == stage.suggest(
        Answers(a), load_profile("cpu"), CONV
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "int4"},
        {"calibration": "kl"},
        {"calibration_samples": 0},
        {"activation_type": "int8", "weight_type": "uint8"},
        {"activation_type": "int16"},
        {"per_channel": "yes"},
    ],
)
def test_invalid_config(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        QuantizeConfig(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [200, 199, 32, 7])
def test_calibration_batches_are_equal_sized(n: int) -> None:
    from edgeopt.inputs import InputSpec, ModelInputs
    from edgeopt.stages.ort_quant import CALIB_BATCH, CalibReader

    x = ModelInputs((InputSpec.of("x", (1, 2, 2), "float32"),))
    reader = CalibReader(x, np.zeros((n, 1, 2, 2), dtype=np.float32))
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["x"]))
    assert len(set(sizes)) == 1  # histogram calibration stacks batches: one shape only
    assert sizes[0] <= CALIB_BATCH
    assert sum(sizes) > n - CALIB_BATCH
