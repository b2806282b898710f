"""Structured pruning that understands attention: whole heads or head dims of a ViT's
attention sites, the MLP hidden width by the ratio, the residual stream left whole, and a
pruned model that computes what the original did with the removed rows zeroed."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from edgeopt import zoo
from edgeopt.errors import CandidateError, ConfigError
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.search.strategy.space import grid_space
from edgeopt.search.strategy.user_space import _Recorder, declared_params
from edgeopt.stages import ModelFacts, ProbeInput, StageContext
from edgeopt.stages.attention import (
    AttentionPruning,
    find_attention,
    first_layer,
    residual_layers,
)
from edgeopt.stages.prune import PruneStage
from edgeopt.stages.prune_config import PruneConfig
from edgeopt.stages.prune_trace import build_dependency_graph
from edgeopt.zoo_transformers import FusedQkvAttention

SHAPE = (1, 32, 32)


def _vit(qkv: str = "fused") -> nn.Module:
    torch.manual_seed(0)
    return zoo.vit_cifar(in_channels=1, width_mult=1 / 6, depth=2, heads=4, qkv=qkv).eval()


def _ctx(tmp_path: Path) -> StageContext:
    return StageContext(
        workdir=tmp_path, profile=load_profile("cpu"), data=None, teacher=None, input_shape=SHAPE
    )


def _prune(model: nn.Module, tmp_path: Path, **kw: object) -> tuple[nn.Module, dict]:
    out = PruneStage().apply(model, PruneConfig(**kw), _ctx(tmp_path))  # type: ignore[arg-type]
    return out.artifact, out.info["prune_report"]


def _x(n: int = 2) -> Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(1))


def _kept_rows(before: nn.Linear, after: nn.Linear) -> list[int]:
    """The rows of ``before`` that ``after`` kept (each kept row is an exact copy)."""
    w, kept = before.weight.detach(), []
    for row in after.weight.detach():
        hits = [i for i in range(len(w)) if torch.equal(w[i], row)]
        assert len(hits) == 1
        kept.append(hits[0])
    return kept


def test_sites_and_residual_stream_are_found_by_layout_and_graph() -> None:
    model = _vit()
    sites = find_attention(model)
    assert [(s.name, s.layout.name, s.heads) for s in sites] == [
        ("blocks.0.attn", "fused_qkv", 4),
        ("blocks.1.attn", "fused_qkv", 4),
    ]
    assert [s.name for s in find_attention(_vit("separate"))] == ["blocks.0.attn", "blocks.1.attn"]
    example = torch.zeros(1, *SHAPE)
    graph = build_dependency_graph(model, example)
    first = first_layer(model, example)
    assert first is model.patch
    assert set(residual_layers(graph, model, first)) == {
        "patch",
        "blocks.0.attn.proj",
        "blocks.0.fc2",
        "blocks.1.attn.proj",
        "blocks.1.fc2",
    }


def test_heads_half_removes_whole_heads_and_keeps_what_they_computed(tmp_path: Path) -> None:
    model = _vit()
    pruned, report = _prune(
        model, tmp_path, ratio=0.0, attention=AttentionPruning.HEADS, head_ratio=0.5
    )
    for b1 in pruned.blocks:
        assert b1.attn.qkv.out_features == 48 and b1.attn.num_heads == 2
        assert b1.attn.head_dim == 8 and b1.attn.proj.in_features == 16
        assert b1.attn.proj.out_features == 32 and b1.fc1.out_features == 64  # MLP at ratio 0
    assert report["macs_ratio"] < 1.0
    assert report["channels"]["blocks.0.attn.qkv"] == 48
    # the kept rows are whole heads, the same heads in q, k and v
    reference = copy.deepcopy(model)
    for b0, b1, ref in zip(model.blocks, pruned.blocks, reference.blocks, strict=True):
        kept = _kept_rows(b0.attn.qkv, b1.attn.qkv)
        heads = sorted({r % 32 // 8 for r in kept})
        assert len(heads) == 2
        assert kept == [p * 32 + h * 8 + i for p in range(3) for h in heads for i in range(8)]
        removed = [r for r in range(96) if r not in kept]
        with torch.no_grad():
            ref.attn.qkv.weight[removed] = 0
            ref.attn.qkv.bias[removed] = 0
    with torch.no_grad():
        assert float((pruned(_x()) - reference(_x())).abs().max()) < 1e-5


def test_ratio_zero_prunes_nothing(tmp_path: Path) -> None:
    model = _vit()
    for kw in ({}, {"attention": AttentionPruning.HEADS}):
        pruned, report = _prune(model, tmp_path, ratio=0.0, **kw)
        assert report["macs_ratio"] == 1.0
        with torch.no_grad():
            assert torch.equal(pruned(_x()), model(_x()))


def test_mlp_ratio_prunes_the_hidden_width_only(tmp_path: Path) -> None:
    model = _vit()
    pruned, _ = _prune(model, tmp_path, ratio=0.5)
    for b in pruned.blocks:
        assert b.fc1.out_features == 32 and b.fc2.out_features == 32
        assert b.attn.qkv.out_features == 96 and b.attn.num_heads == 4  # attention whole
    assert pruned.patch.out_channels == 32


def test_class_token_and_positions_are_named_to_torch_pruning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    # Torch-Pruning warned "Unwrapped parameters detected" on every prune of a ViT
    pruned, _ = _prune(
        _vit(), tmp_path, ratio=0.5, attention=AttentionPruning.HEADS, head_ratio=0.5
    )
    assert not [w for w in recwarn if "Unwrapped parameters" in str(w.message)]
    shapes = [tuple(p.shape) for p in (pruned.cls_token, pruned.cls_pos, pruned.pos)]
    assert shapes == [(1, 1, 32), (1, 1, 32), (1, 64, 32)]  # the residual stream stays whole
    with torch.no_grad():
        assert tuple(pruned(_x()).shape) == (2, 10)
    # their named dim is the embedding width: pruning it takes the same channels off them
    model = _vit()
    graph = build_dependency_graph(model, torch.zeros(1, *SHAPE))
    pruner = graph.get_pruner_of_module(model.patch)
    graph.get_pruning_group(model.patch, pruner.prune_out_channels, [0, 5]).prune()
    shapes = [tuple(p.shape) for p in (model.cls_token, model.cls_pos, model.pos)]
    assert shapes == [(1, 1, 30), (1, 1, 30), (1, 64, 30)]
    with torch.no_grad():
        assert tuple(model(_x()).shape) == (2, 10)


def test_separate_qkv_heads_fix_the_hf_attributes(tmp_path: Path) -> None:
    model = _vit("separate")
    pruned, _ = _prune(
        model, tmp_path, ratio=0.25, attention=AttentionPruning.HEADS, head_ratio=0.5
    )
    for b in pruned.blocks:
        a = b.attn
        assert a.query.out_features == a.key.out_features == a.value.out_features == 16
        assert (a.num_attention_heads, a.attention_head_size, a.all_head_size) == (2, 8, 16)
        assert b.fc1.out_features == 48
    with torch.no_grad():
        assert tuple(pruned(_x()).shape) == (2, 10)


def test_head_dims_with_a_stored_scale_keep_the_kept_dims(tmp_path: Path) -> None:
    model = _vit()
    pruned, _ = _prune(
        model, tmp_path, ratio=0.0, attention=AttentionPruning.HEAD_DIMS, head_ratio=0.25
    )
    for b in pruned.blocks:  # equivalence was checked by the stage
        assert (b.attn.num_heads, b.attn.head_dim, b.attn.qkv.out_features) == (4, 6, 72)


class ScaleFromHeadDim(FusedQkvAttention):
    """timm before its stored ``scale``: the softmax scale computed from ``head_dim``."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self.scale = self.head_dim**-0.5
        return super().forward(x, mask)


def test_head_dims_with_a_computed_scale_fail_naming_the_scale(tmp_path: Path) -> None:
    model = _vit()
    for b in model.blocks:
        b.attn.__class__ = ScaleFromHeadDim
    with pytest.raises(CandidateError, match="attention scale follows head_dim"):
        _prune(model, tmp_path, attention=AttentionPruning.HEAD_DIMS, head_ratio=0.25)
    pruned, _ = _prune(model, tmp_path, attention=AttentionPruning.HEADS, head_ratio=0.25)
    assert pruned.blocks[0].attn.num_heads == 3  # whole heads keep the scale right


def test_attention_configs_are_checked() -> None:
    with pytest.raises(ConfigError, match="head_ratio needs"):
        PruneConfig(head_ratio=0.25)
    with pytest.raises(ConfigError, match="one local step"):
        PruneConfig(attention=AttentionPruning.HEADS, head_ratio=0.25, iterative_steps=2)
    config = PruneConfig(ratio=0.1, attention=AttentionPruning.HEADS, head_ratio=0.25)
    assert PruneConfig.from_dict(config.to_dict()) == config


def test_pruned_vit_runs_in_onnx_runtime(tmp_path: Path) -> None:
    model = _vit()
    pruned, _ = _prune(model, tmp_path, ratio=0.5, attention=AttentionPruning.HEADS, head_ratio=0.5)
    x = _x().numpy()
    path = export_onnx(pruned, SHAPE, tmp_path / "pruned.onnx", check_inputs=x)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    with torch.no_grad():
        want = pruned(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def _facts(attention: dict) -> ModelFacts:
    prune = {"prunable": True, "ignored": [], "attention": attention}
    return ModelFacts(onnx_input=False, stages={"prune": prune, "quantize": {}})


def test_attention_params_are_declared_only_where_the_probe_found_heads() -> None:
    cpu = load_profile("cpu")  # channel multiple 8: head dims are not offered
    unrounded = dataclasses.replace(
        cpu, pruning=dataclasses.replace(cpu.pruning, channel_multiple=1)
    )
    heads = {"pruning": "heads", "head_dims": True, "sites": ["blocks.0.attn"]}
    declared = declared_params(unrounded, _facts(heads))["prune"]
    assert declared["prune.attention"].choices == ("none", "heads", "head_dims")
    assert declared["prune.head_ratio"].describe() == "float in [0.125, 0.5] step 0.125"
    assert declared_params(cpu, _facts(heads))["prune"]["prune.attention"].choices == (
        "none",
        "heads",
    )
    no_dims = declared_params(unrounded, _facts({**heads, "head_dims": False}))["prune"]
    assert no_dims["prune.attention"].choices == ("none", "heads")
    for found in ({}, {"pruning": "mlp_only"}):
        assert "prune.attention" not in declared_params(cpu, _facts(found))["prune"]
    assert grid_space(cpu, _facts(heads))["prune.attention"] == ["none", "heads"]
    assert "prune.attention" not in grid_space(cpu, _facts({}))
    answers = {"prune.ratio": 0.3, "prune.attention": "heads", "prune.head_ratio": 0.25}
    rec = _Recorder({**answers, "prune.global_pruning": True, "prune.iterative_steps": 3})
    config = PruneStage().suggest(rec, cpu, _facts(heads))
    assert (config.attention, config.head_ratio) == (AttentionPruning.HEADS, 0.25)
    assert not config.global_pruning and config.iterative_steps == 1  # one local step
    assert PruneStage().describe(config) == "prune 0.30 l1 heads 0.25"


def test_bn_scale_importance_is_offered_only_to_models_with_batchnorm() -> None:
    # bn_scale ranks channels by BatchNorm weights: on a BatchNorm-free transformer it prunes
    # nothing, fails the channel check and, counted as the model's failure, switched pruning off
    # for the whole run
    cpu = load_profile("cpu")
    facts = PruneStage().probe(ProbeInput(module=_vit(), onnx_path=None, input_shape=(1, 32, 32)))
    assert facts["batchnorm"] is False
    no_bn = ModelFacts(onnx_input=False, stages={"prune": facts, "quantize": {}})
    assert "bn_scale" not in declared_params(cpu, no_bn)["prune"]["prune.importance"].choices
    cnn = zoo.BUILDERS["resnet_small"](width=8).eval()
    cnn_facts = PruneStage().probe(ProbeInput(module=cnn, onnx_path=None, input_shape=(1, 16, 16)))
    assert cnn_facts["batchnorm"] is True
    with_bn = ModelFacts(onnx_input=False, stages={"prune": cnn_facts, "quantize": {}})
    assert "bn_scale" in declared_params(cpu, with_bn)["prune"]["prune.importance"].choices
    # a study recorded before the fact existed keeps its choices
    assert "bn_scale" in declared_params(cpu, _facts({}))["prune"]["prune.importance"].choices
