"""ORT's transformer optimizer as a quantize step (``quantize.fuse``): real exports of the
tiny transformers, real ``optimize_model`` runs, real ORT sessions for the parity check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeopt.errors import CandidateError
from edgeopt.onnx_export import export_onnx
from edgeopt.stages.ort_fuse import fuse, model_type, synthetic_feeds
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
    assert info.counts["Attention"] == 2 and info.attention == "2 of 2"
    assert info.counts["SkipLayerNormalization"] >= 2 and info.counts["BiasGelu"] == 2
    assert "FastGelu" not in info.counts  # no GELU approximation
    assert info.max_diff < 1e-4
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "Softmax" not in ops and "Attention" in ops


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
    assert info.counts == {"Attention": 2, "SkipLayerNormalization": 4, "BiasGelu": 2}
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
