"""The transformer example architectures: sizes, forward shapes, layouts, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt import zoo
from edgeopt.onnx_export import export_onnx
from edgeopt.zoo_transformers import (
    ChunkQkvAttention,
    FusedQkvAttention,
    SeparateQkvAttention,
)


@pytest.mark.parametrize(
    ("qkv", "cls"),
    [
        ("fused", FusedQkvAttention),
        ("separate", SeparateQkvAttention),
        ("chunk", ChunkQkvAttention),
    ],
)
def test_vit_layouts_build_and_agree_on_shape(qkv: str, cls: type) -> None:
    torch.manual_seed(0)
    m = zoo.BUILDERS["vit_cifar"](in_channels=1, width_mult=1 / 6, depth=2, heads=4, qkv=qkv)
    attn = [x for x in m.modules() if isinstance(x, cls)]
    assert len(attn) == 2
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_full_size_vit_and_bert_match_the_plan() -> None:
    vit = zoo.vit_cifar()
    assert vit.patch.out_channels == 192 and len(vit.blocks) == 6
    assert vit.blocks[0].attn.num_heads == 8 and vit.blocks[0].fc1.out_features == 384
    bert = zoo.bert_text()
    assert len(bert.blocks) == 4 and bert.tok.embedding_dim == 128
    assert bert.blocks[0].attn.num_attention_heads == 4


def test_chunk_and_fused_layouts_compute_the_same_function() -> None:
    torch.manual_seed(0)
    a = zoo.vit_cifar(in_channels=1, width_mult=1 / 6, depth=1, heads=4, qkv="fused").eval()
    b = zoo.vit_cifar(in_channels=1, width_mult=1 / 6, depth=1, heads=4, qkv="chunk").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 32, 32)
    # the same weights split differently: qkv rows are [q|k|v] in both, heads within each
    assert torch.allclose(a(x), b(x), atol=1e-5)


def test_bert_masks_padding_and_takes_two_int64_inputs() -> None:
    torch.manual_seed(0)
    m = zoo.bert_text(vocab_size=64, max_len=16, hidden=32, depth=2, heads=4, intermediate=64)
    m.eval()
    ids = torch.randint(1, 64, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[:, 10:] = 0
    ids2 = ids.clone()
    ids2[:, 10:] = 7  # only padded positions change
    with torch.no_grad():
        assert torch.allclose(m(ids, mask), m(ids2, mask), atol=1e-5)
        assert m(ids, mask).shape == (2, 2)


def test_vit_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    m = zoo.vit_cifar(in_channels=1, width_mult=1 / 6, depth=2, heads=4).eval()
    path = export_onnx(m, (1, 32, 32), tmp_path / "vit.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, m(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
