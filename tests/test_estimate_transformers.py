"""Cost model on transformers: real exports of the tiny ViT and BERT, real fusion by ORT's
transformer optimizer, real dynamic int8; MACs checked against the analytic count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_fuse import _bert, export_bert

from edgeopt.estimate import kernel_work
from edgeopt.onnx_export import export_onnx
from edgeopt.stages import QuantizeConfig, QuantMode
from edgeopt.stages.onnx_graph import MATMUL_HEAVY, matmul_mac_fraction
from edgeopt.stages.ort_fuse import fuse
from edgeopt.stages.ort_quant import quantize_dynamic
from edgeopt.zoo_transformers import vit_cifar

# the tiny ViT: 32x32 single-channel image, patch 4 -> 64 tokens + cls, width 32, 4 heads of 8
N, DIM, HEADS, DEPTH, MLP = 65, 32, 4, 2, 64
BERT_SEQ = {"input_ids": (16,), "attention_mask": (16,)}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("est_tf")
    torch.manual_seed(0)
    vit = vit_cifar(in_channels=1, width_mult=1 / 6, depth=DEPTH, heads=HEADS, qkv="separate")
    out = {
        "vit": export_onnx(vit.eval(), (1, 32, 32), d / "vit.onnx"),
        "bert": export_bert(_bert(), d / "bert.onnx"),
    }
    for name in ("vit", "bert"):
        fuse(out[name], d / f"{name}_fused.onnx")
        out[f"{name}_fused"] = d / f"{name}_fused.onnx"
    out["vit_qattn"] = d / "vit_qattn.onnx"
    quantize_dynamic(
        out["vit_fused"], out["vit_qattn"], QuantizeConfig(mode=QuantMode.INT8_DYNAMIC)
    )
    return out


def test_vit_attention_matmuls_keep_the_token_dim(models: dict[str, Path]) -> None:
    # cls.expand(x.shape[0], ...) -> Expand/Where: ONNX shape inference loses the token dim
    # there, and every MatMul after it counted 0 MACs
    matmuls = sorted(k.macs for k in kernel_work(models["vit"], frozenset()) if k.op == "MatMul")
    head_dim = DIM // HEADS
    scores = HEADS * N * N * head_dim  # q·kᵀ of all heads; attn·v is the same
    linear = [N * DIM * DIM] * 4 + [N * DIM * MLP] * 2  # query, key, value, proj; fc1, fc2
    assert matmuls == sorted([scores, scores, *linear] * DEPTH)
    assert matmul_mac_fraction(models["vit"]) >= MATMUL_HEAVY
