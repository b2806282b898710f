"""ORT's transformer optimizer as a quantize step (``quantize.fuse``): real exports of the
tiny transformers, real ``optimize_model`` runs, real ORT sessions for the parity check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_quantize import Answers
from torch import nn

from edgeopt.errors import CandidateError, ConfigError
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile, merge_profiles
from edgeopt.profiles.runtime_spec import RUNTIMES
from edgeopt.search.strategy.user_space import parse_space
from edgeopt.stages import STAGES, ModelFacts, ProbeInput, QuantizeConfig, QuantMode, StageContext
from edgeopt.stages.onnx_graph import quant_node_counts
from edgeopt.stages.ort_fuse import fuse, model_type, synthetic_feeds, unfuse_skip_layer_norm
from edgeopt.stages.ort_quant import quantize_dynamic
from edgeopt.zoo_transformers import bert_text, vit_cifar

VIT_SHAPE = (1, 16, 16)


def _vit(qkv: str) -> nn.Module:
    torch.manual_seed(0)
    return vit_cifar(in_channels=1, width_mult=1 / 6, img_size=16, depth=2, heads=4, qkv=qkv)


def _bert() -> nn.Module:
    torch.manual_seed(0)
    return bert_text(vocab_size=64, max_len=16, hidden=32, depth=2, heads=4, intermediate=64)


def export_bert(model: nn.Module, path: Path) -> Path:
    """The two-input export a BERT user makes: named int64 inputs, dynamic batch and seq."""
    ids = torch.randint(0, 64, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    dyn = {0: "batch", 1: "seq"}
    torch.onnx.export(
        model.eval(),
        (ids, mask),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input_ids", "attention_mask"],
        output_names=["output"],
        dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "output": {0: "batch"}},
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("fuse")
    return {
        "vit_sep": export_onnx(_vit("separate").eval(), VIT_SHAPE, d / "vit_sep.onnx"),
        "vit_fused_qkv": export_onnx(_vit("fused").eval(), VIT_SHAPE, d / "vit_fq.onnx"),
        "bert": export_bert(_bert(), d / "bert.onnx"),
    }


def test_separate_qkv_vit_fuses_with_parity(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "f.onnx"
    info = fuse(models["vit_sep"], out)
    assert model_type(onnx.load(str(models["vit_sep"]))) == "vit"
    assert info.counts == {"Attention": 2, "BiasGelu": 2}  # no GELU approximation
    assert info.max_diff < 1e-4
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Softmax" not in ops and "Attention" in ops
    # residual LayerNorms stay Add + LayerNormalization (ORT's CPU SkipLayerNorm is slower)
    assert ops.count("LayerNormalization") == 5 and "SkipLayerNormalization" not in ops
    olive = fuse(models["vit_sep"], tmp_path / "olive.onnx", skip_layer_norm=True)
    assert olive.counts["SkipLayerNormalization"] >= 2 and olive.counts["Attention"] == 2


def test_fused_qkv_vit_fuses_no_attention(models: dict[str, Path], tmp_path: Path) -> None:
    info = fuse(models["vit_fused_qkv"], tmp_path / "f.onnx")
    assert info.counts.get("Attention", 0) == 0 and info.attention == "0 of 2"


def test_bert_fuses_with_raw_mask_and_no_embed_layer_norm(
    models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "f.onnx"
    src = onnx.load(str(models["bert"]))
    assert model_type(src) == "bert"
    feeds = synthetic_feeds(src, batch=4, seq=16, seed=1)
    assert feeds["attention_mask"].min() == 0  # padded rows: the mask path is exercised
    info = fuse(models["bert"], out, feeds=feeds)
    assert info.counts == {"Attention": 2, "BiasGelu": 2}
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    # the raw 2-D mask reaches Attention (no ReduceSum mask index, which assumes right padding)
    assert not any(n.op_type == "ReduceSum" for n in graph.node)


def _head_dim_pruned_bert() -> nn.Module:
    """A BERT whose head_dim was pruned 8 -> 6 keeping its stored scale sqrt(8), as head-dim
    pruning leaves it: torch is right, ORT's fused Attention would use 1/sqrt(6)."""
    model = _bert()
    for block in model.blocks:
        attn = block.attn
        for name in ("query", "key", "value"):
            setattr(attn, name, nn.Linear(32, 24))
        attn.proj = nn.Linear(24, 32)
        attn.attention_head_size = 6
        attn.all_head_size = 24
        attn.scale_div = math.sqrt(8)
    return model.eval()


def test_fusion_that_changes_outputs_is_a_candidate_error(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    src = export_bert(_head_dim_pruned_bert(), tmp_path / "pruned.onnx")
    out = tmp_path / "f.onnx"
    with pytest.raises(CandidateError, match=r"max \|diff\| [0-9.e-]+"):
        fuse(src, out)
    assert not out.exists()


def test_synthetic_feeds_are_seeded_and_typed(models: dict[str, Path]) -> None:
    bert = onnx.load(str(models["bert"]))
    a, b = synthetic_feeds(bert, seed=3), synthetic_feeds(bert, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["input_ids"].dtype == np.int64 and a["input_ids"].shape == (4, 8)
    assert set(np.unique(a["attention_mask"])) <= {0, 1}
    vit = synthetic_feeds(onnx.load(str(models["vit_sep"])))
    assert vit["input"].dtype == np.float32 and vit["input"].shape == (4, *VIT_SHAPE)


def _ctx(tmp_path: Path, profile: str = "cpu") -> StageContext:
    return StageContext(
        workdir=tmp_path / "work",
        profile=load_profile(profile),
        data=None,
        teacher=None,
        input_shape=VIT_SHAPE,
    )


def _facts(path: Path) -> ModelFacts:
    probe = STAGES["quantize"].probe(ProbeInput(module=None, onnx_path=path, input_shape=(4,)))
    return ModelFacts(onnx_input=True, stages={"quantize": probe})


def test_dynamic_int8_of_a_fused_graph_quantizes_attention(
    models: dict[str, Path], tmp_path: Path
) -> None:
    fused = tmp_path / "f.onnx"
    fuse(models["vit_sep"], fused)
    out = tmp_path / "q.onnx"
    # ORT's default raised "Unable to find data type for weight_name" on the fused graph
    quantize_dynamic(fused, out, QuantizeConfig(mode=QuantMode.INT8_DYNAMIC))
    assert quant_node_counts(out).get("QAttention", 0) == 2


@pytest.mark.parametrize(
    ("mode", "op"), [("int8_dynamic", "QAttention"), ("fp32", "Attention"), ("fp16", "Attention")]
)
def test_quantize_stage_fuses_before_its_mode(
    models: dict[str, Path], tmp_path: Path, mode: str, op: str
) -> None:
    stage = STAGES["quantize"]
    config = QuantizeConfig(mode=QuantMode(mode), fuse=True)
    assert not stage.is_identity(config) and stage.describe(config) == f"{mode} fused"
    done = stage.apply(
        models["vit_sep"], config, _ctx(tmp_path, "gpu" if mode == "fp16" else "cpu")
    )
    assert quant_node_counts(done.artifact)[op] == 2
    assert done.info["fuse"]["attention"] == "2 of 2"
    assert done.info["fuse"]["ops"]["BiasGelu"] == 2


def test_fuse_only_with_the_modes_that_take_a_fused_graph() -> None:
    for mode in ("int8_static", "fp32_opt", "ort_default"):
        with pytest.raises(ConfigError, match="quantize.fuse"):
            QuantizeConfig(mode=QuantMode(mode), fuse=True)


def test_fuse_is_suggested_only_where_it_fuses_and_runs(models: dict[str, Path]) -> None:
    stage = STAGES["quantize"]
    vit = _facts(models["vit_sep"])
    assert vit.of("quantize")["fusible"]
    cpu, gpu = load_profile("cpu"), load_profile("gpu")
    for mode in ("fp32", "fp16"):
        ask = Answers({"quantize.mode": mode, "quantize.fuse": True})
        assert stage.suggest(ask, gpu, vit).fuse and ask.asked["quantize.fuse"] == [False, True]
    static = Answers({"quantize.mode": "int8_static"})
    assert not stage.suggest(static, cpu, vit).fuse and "quantize.fuse" not in static.asked
    assert stage.grid_axes(cpu, vit)["quantize.fuse"] == [False, True]
    # ORT Mobile / OpenVINO targets: no com.microsoft contrib ops
    for name in ("mobile-mid", "openvino"):
        assert not RUNTIMES[load_profile(name).runtime_name].contrib_ops
        ask = Answers({"quantize.mode": "fp32"})
        stage.suggest(ask, load_profile(name), vit)
        assert "quantize.fuse" not in ask.asked
    merged = merge_profiles([cpu, load_profile("mobile-mid")])
    ask = Answers({"quantize.mode": "fp32"})
    stage.suggest(ask, merged, vit)
    assert "quantize.fuse" not in ask.asked and "quantize.fuse" not in stage.grid_axes(merged, vit)
    # a CNN has nothing to fuse
    cnn = models["vit_sep"].parent / "cnn.onnx"
    torch.manual_seed(0)
    export_onnx(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten()).eval(), VIT_SHAPE, cnn)
    assert "fusible" not in _facts(cnn).of("quantize")


def test_user_space_accepts_quantize_fuse(models: dict[str, Path]) -> None:
    vit = _facts(models["vit_sep"])
    space = parse_space(
        {"quantize": {"mode": ["fp32"], "fuse": [True]}}, "--space", load_profile("cpu"), vit
    )
    assert space["quantize.fuse"] == {"choices": [True]}


def test_skip_layer_norm_is_written_back_with_its_bias_and_sum(tmp_path: Path) -> None:
    """A SkipLayerNormalization with a bias whose sum output is read becomes Add, Add and
    LayerNormalization with the same outputs in ORT; one whose mean is read stays."""
    rng = np.random.default_rng(0)
    h = 16
    inits = [
        numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), name)
        for name in ("gamma", "beta", "bias")
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, h]) for n in "xkys"]
    sln = helper.make_node(
        "SkipLayerNormalization",
        ["x", "k", "gamma", "beta", "bias"],
        ["y", "", "", "s"],
        domain="com.microsoft",
        epsilon=1e-5,
    )
    graph = helper.make_graph([sln], "g", io[:2], io[2:], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    feeds = {n: rng.standard_normal((2, 5, h)).astype(np.float32) for n in "xk"}
    fused, unfused = tmp_path / "fused.onnx", tmp_path / "unfused.onnx"
    onnx.save(model, str(fused))
    assert unfuse_skip_layer_norm(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Add", "Add", "LayerNormalization"]
    onnx.save(model, str(unfused))
    want_got = zip(_outputs(fused, feeds), _outputs(unfused, feeds), strict=True)
    for want, got in want_got:
        np.testing.assert_allclose(got, want, atol=1e-5)

    sln.output[1] = "mean"
    kept = helper.make_model(
        helper.make_graph([sln], "g", io[:2], [*io[2:], io[2]], inits), opset_imports=opsets
    )
    kept.graph.output[2].name = "mean"
    assert unfuse_skip_layer_norm(kept) == 0
    assert [n.op_type for n in kept.graph.node] == ["SkipLayerNormalization"]


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
