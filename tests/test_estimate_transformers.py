"""Cost model on transformers: real exports of the tiny ViT and BERT, real fusion by ORT's
transformer optimizer, real dynamic int8; MACs checked against the analytic count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_fuse import _bert, export_bert

from edgeopt.estimate import estimate, kernel_work
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile, validate_profile_file
from edgeopt.stages import QuantizeConfig, QuantMode
from edgeopt.stages.onnx_graph import MATMUL_HEAVY, matmul_mac_fraction
from edgeopt.stages.ort_fuse import fuse
from edgeopt.stages.ort_quant import quantize_dynamic
from edgeopt.zoo_transformers import vit_cifar

DATA = Path(__file__).parent / "data" / "profiles"
FPGA = validate_profile_file(DATA / "arith-fpga.toml")
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
        fuse(out[name], d / f"{name}_fused.onnx", skip_layer_norm=True)  # Olive's fusions
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


def _ops(e: object) -> float:
    return sum(k.ops for k in e.nodes if k.bound != "transfer")  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["vit", "bert"])
def test_fused_graph_costs_what_the_unfused_one_does(models: dict[str, Path], name: str) -> None:
    cpu = load_profile("cpu")
    plain = estimate(models[name], cpu, BERT_SEQ)
    fused = estimate(models[f"{name}_fused"], cpu, BERT_SEQ)
    assert {k.op for k in fused.nodes} >= {"Attention", "SkipLayerNormalization", "BiasGelu"}
    assert not any("without an inferred shape" in a for a in fused.assumptions)
    # the same matrix products; only elementwise work (softmax, GELU, norms) is counted apart
    assert fused.macs == plain.macs
    assert _ops(fused) == pytest.approx(_ops(plain), rel=0.02)
    assert fused.latency_ms > 0.3 * plain.latency_ms


def test_attention_macs_are_projection_and_scores(models: dict[str, Path]) -> None:
    fused = estimate(models["vit_fused"], load_profile("cpu"))
    attn = [k for k in fused.nodes if k.op == "Attention"]
    assert len(attn) == DEPTH
    assert all(k.macs == N * DIM * 3 * DIM + 2 * N * N * DIM for k in attn)
    assert all((k.op_class, k.dtype) == ("gemm", "fp32") for k in attn)


def test_qattention_is_attention_at_int8(models: dict[str, Path]) -> None:
    cpu = load_profile("cpu")
    fused = estimate(models["vit_fused"], cpu)
    q = estimate(models["vit_qattn"], cpu)
    qattn = [k for k in q.nodes if k.op.startswith("QAttention")]
    assert len(qattn) == DEPTH and all(k.dtype == "int8" for k in qattn)
    assert all(k.macs == N * DIM * 3 * DIM + 2 * N * N * DIM for k in qattn)
    assert q.macs == fused.macs


def test_unit_without_transformer_ops_falls_back(models: dict[str, Path]) -> None:
    e = estimate(models["vit_fused"], FPGA)
    assert {k.unit for k in e.nodes if k.op in ("Attention", "SkipLayerNormalization")} == {"cpu"}


def test_unit_that_lists_qattention_runs_it(models: dict[str, Path], tmp_path: Path) -> None:
    text = (DATA / "arith-fpga.toml").read_text()
    listed = '"Conv", "Relu", "Add", "QAttention", "SkipLayerNormalization"'
    toml = tmp_path / "acc.toml"
    toml.write_text(text.replace('"Conv", "Relu", "Add"', listed))
    e = estimate(models["vit_qattn"], validate_profile_file(toml))
    assert {k.unit for k in e.nodes if k.op.startswith("QAttention")} == {"acc"}
