"""int8 that knows transformers: static QDQ's op set (``quantize.static_ops``) and mixed
precision that really leaves an attention MatMul in float. Real exports of the tiny separate
q/k/v ViT, real ORT quantization and sessions."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch
from model_facts import facts as model_facts
from onnxruntime.quantization import quant_pre_process
from test_quantize import Answers

from edgeopt.errors import CandidateError
from edgeopt.inputs import ModelInputs
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages import STAGES, ModelFacts, ProbeInput, QuantizeConfig, QuantMode, StageContext
from edgeopt.stages.ort_quant import calibration_reader, quantize_static
from edgeopt.stages.quantize_config import calibration_inputs
from edgeopt.stages.quantize_ort import check_graph, keep_float
from edgeopt.zoo_transformers import vit_cifar

SHAPE = (1, 16, 16)


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = vit_cifar(
        in_channels=1, width_mult=1 / 6, img_size=16, depth=2, heads=4, qkv="separate"
    )
    return export_onnx(model.eval(), SHAPE, tmp_path_factory.mktemp("vit") / "vit.onnx")


def _ctx(tmp_path: Path) -> StageContext:
    return StageContext(
        workdir=tmp_path / "work",
        profile=load_profile("cpu"),
        data=None,
        teacher=None,
        input_shape=SHAPE,
        cache_dir=tmp_path / "cache",
    )


def _static(**kw: object) -> QuantizeConfig:
    hand = STAGES["quantize"].by_hand(load_profile("cpu"), model_facts())
    assert hand is not None
    return QuantizeConfig.from_dict({**hand.config.to_dict(), **kw})


def _dq_consumers(path: Path) -> set[str]:
    g = onnx.load(str(path)).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.op_type for n in g.node if any(i in dq for i in n.input)}


def test_static_compute_ops_leave_layernorm_and_softmax_float(vit: Path, tmp_path: Path) -> None:
    stage = STAGES["quantize"]
    every = stage.apply(vit, _static(), _ctx(tmp_path / "a")).artifact
    assert {"LayerNormalization", "Softmax"} <= _dq_consumers(every)  # ORT's default op set
    config = _static(static_ops="compute")
    assert stage.describe(config) == "int8_static compute-only"
    compute = stage.apply(vit, config, _ctx(tmp_path / "c")).artifact
    assert not _dq_consumers(compute) & {"LayerNormalization", "Softmax"}


def test_static_ops_offered_only_for_graphs_with_layernorm_or_softmax(vit: Path) -> None:
    stage = STAGES["quantize"]
    probe = stage.probe(ProbeInput(module=None, onnx_path=vit, input_shape=(4,)))
    assert probe["transformer"]
    facts = ModelFacts(onnx_input=True, stages={"quantize": probe})
    ask = Answers({"quantize.mode": "int8_static", "quantize.static_ops": "compute"})
    assert stage.suggest(ask, load_profile("cpu"), facts).static_ops == "compute"
    assert ask.asked["quantize.static_ops"] == ["all", "compute"]
    cnn = ModelFacts(onnx_input=True, stages={"quantize": {"matmul_heavy": False}})
    ask = Answers({"quantize.mode": "int8_static"})
    assert stage.suggest(ask, load_profile("cpu"), cnn).static_ops == "all"
    assert "quantize.static_ops" not in ask.asked
    # the by-hand int8 (and so every CNN run) keeps ORT's whole op set
    assert _static().static_ops == "all" and QuantizeConfig().static_ops == "all"
    assert QuantizeConfig(mode=QuantMode.INT8_STATIC).static_ops == "all"


def test_excluded_attention_matmul_really_stays_float(vit: Path, tmp_path: Path) -> None:
    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(vit), str(pre))
    float_model = onnx.load(str(pre))
    consts = {i.name for i in float_model.graph.initializer}
    qk = next(
        n.name
        for n in float_model.graph.node
        if n.op_type == "MatMul" and not consts & set(n.input)
    )
    config = _static()
    calib = calibration_inputs(_ctx(tmp_path), 32, SHAPE)
    out = tmp_path / "q.onnx"
    quantize_static(pre, out, config, calibration_reader(ModelInputs.single(SHAPE), calib), [qk])
    # ORT's exclusion alone leaves the MatMul reading DequantizeLinear outputs (E11)
    with pytest.raises(CandidateError, match=f"still int8: {qk}"):
        check_graph(out, config, float_model, frozenset({qk}))
    keep_float(out, pre, {qk})
    check_graph(out, config, float_model, frozenset({qk}))
    g = onnx.load(str(out)).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    node = next(n for n in g.node if n.name == qk)
    assert not dq & set(node.input)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    assert all(o in used for n in g.node if n.op_type == "DequantizeLinear" for o in n.output)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": calib[:2]}
    )


def test_mixed_precision_on_a_vit_ships_what_it_ranked(vit: Path, tmp_path: Path) -> None:
    done = STAGES["quantize"].apply(vit, _static(fp32_nodes=8), _ctx(tmp_path))
    kept = set(done.info["fp32_nodes"])
    assert len(kept) == 8
    g = onnx.load(str(done.artifact)).graph
    dq = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(not dq & set(n.input) for n in g.node if n.name in kept)
