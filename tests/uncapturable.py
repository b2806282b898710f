"""A model whose forward branches on a value of the data: torch.fx cannot trace
``float(Proxy)``, nor can torch.export capture it (a data-dependent branch); the pruning
pre-flight can. (A model that only reads a size as a Python int, as public ShuffleNetV2 code
does, is captured by torch.export: test_qat.py.) Imported by tests, and named by
``--arch uncapturable:build`` with this folder on PYTHONPATH."""

from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    """1x16x16 in, 10 classes out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.mean()) > 1e9:
            x = -x
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def build() -> nn.Module:
    """A seeded ``Net`` in eval mode."""
    torch.manual_seed(0)
    return Net().eval()
