"""Transformer architectures for the examples and tests: a ViT-class image classifier and a
BERT-class text classifier, written in the layouts users bring (timm-style fused ``qkv``,
HF-style separate ``query``/``key``/``value``, vit-pytorch-style ``chunk``).

The attention modules keep ``num_heads`` and ``head_dim`` as attributes and compute their
widths from them (never from the input width), and the softmax scale is a stored constant:
what structured head pruning needs to leave a working model (a fix-up sets the attributes).
No SDPA: an explicit ``softmax(q @ kᵀ) @ v`` is what ONNX Runtime's transformer optimizer
recognises, and it keeps the scale visible.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QkvLayout = Literal["fused", "separate", "chunk"]


class FusedQkvAttention(nn.Module):
    """timm layout: one ``qkv`` Linear, ``reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class ChunkQkvAttention(FusedQkvAttention):
    """vit-pytorch layout: ``qkv(x).chunk(3, -1)``, then a per-tensor head split.

    Torch-Pruning cannot follow ``chunk`` into heads: a model written this way keeps its
    attention whole and has its MLP pruned.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = (
            t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
            for t in self.qkv(x).chunk(3, dim=-1)
        )
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class SeparateQkvAttention(nn.Module):
    """HF BERT layout: ``query``/``key``/``value`` Linears, scores divided by a stored
    ``sqrt(d)`` (a Div: the pattern ORT's Attention fusion matches)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = dim // heads
        self.all_head_size = dim
        self.scale_div = math.sqrt(self.attention_head_size)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / self.scale_div
        if mask is not None:
            scores = scores + mask
        out = torch.matmul(scores.softmax(-1), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.all_head_size))


_ATTENTION: dict[str, type[nn.Module]] = {
    "fused": FusedQkvAttention,
    "separate": SeparateQkvAttention,
    "chunk": ChunkQkvAttention,
}


class EncoderBlock(nn.Module):
    """Pre-LN (ViT) or post-LN (BERT) encoder block with a GELU MLP ``fc1``/``fc2``."""

    def __init__(self, dim: int, heads: int, mlp: int, qkv: QkvLayout, post_norm: bool) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _ATTENTION[qkv](dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.post_norm:
            x = self.norm1(x + self.attn(x, mask))
            return self.norm2(x + self.fc2(F.gelu(self.fc1(x))))
        x = x + self.attn(self.norm1(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT: patch Conv, CLS token, learned positions (added before the concat, which keeps the
    first block fusable), pre-LN blocks, final LN, CLS -> Linear."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        img_size: int,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp: int,
        qkv: QkvLayout,
    ) -> None:
        super().__init__()
        tokens = (img_size // patch) ** 2
        self.patch = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, mlp, qkv, post_norm=False) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        cls = (self.cls_token + self.cls_pos).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class BertClassifier(nn.Module):
    """BERT-class encoder: token + position embeddings -> LN, post-LN blocks with separate
    q/k/v, the HF additive mask ``(1 - mask) * -10000``, classifier on the CLS position.
    ``forward(input_ids, attention_mask)``: two int64 inputs of shape (batch, seq)."""

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        num_classes: int,
        hidden: int,
        depth: int,
        heads: int,
        intermediate: int,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, hidden)
        self.pos = nn.Embedding(max_len, hidden)
        self.emb_norm = nn.LayerNorm(hidden)
        self.blocks = nn.ModuleList(
            EncoderBlock(hidden, heads, intermediate, "separate", post_norm=True)
            for _ in range(depth)
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        n = input_ids.shape[1]
        positions = torch.arange(n, device=input_ids.device)
        x = self.emb_norm(self.tok(input_ids) + self.pos(positions))
        mask = (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(x.dtype)) * -10000.0
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x[:, 0])


def vit_cifar(
    in_channels: int = 3,
    num_classes: int = 10,
    width_mult: float = 1.0,
    img_size: int = 32,
    patch: int = 4,
    depth: int = 6,
    heads: int = 8,
    mlp_ratio: float = 2.0,
    qkv: QkvLayout = "fused",
) -> nn.Module:
    """ViT-class classifier for small images: patch 4, dim 192 x ``width_mult`` (a multiple
    of ``heads``), depth 6, 8 heads, MLP 2x, ``qkv`` layout as users write it."""
    dim = max(heads, round(192 * width_mult / heads) * heads)
    mlp = round(dim * mlp_ratio)
    return VisionTransformer(in_channels, num_classes, img_size, patch, dim, depth, heads, mlp, qkv)


def bert_text(
    vocab_size: int = 1024,
    max_len: int = 128,
    num_classes: int = 2,
    hidden: int = 128,
    depth: int = 4,
    heads: int = 4,
    intermediate: int = 512,
) -> nn.Module:
    """BERT-class text classifier: hidden 128, 4 post-LN layers, 4 heads, intermediate 512."""
    return BertClassifier(vocab_size, max_len, num_classes, hidden, depth, heads, intermediate)
