"""A fine-tune step whose batch would keep more layer outputs than the activation budget runs
as micro-batches with accumulated gradients: the same update as the whole batch (without
BatchNorm), a bounded peak memory, and unchanged steps for inputs that fit."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgeopt.data import DataBundle
from edgeopt.training import TrainConfig, fit
from edgeopt.training.micro_batch import (
    SAVED_FACTOR,
    activation_bytes_per_sample,
    chunks,
    micro_batch_size,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 4),
    )


def _data() -> DataBundle:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, 64).astype(np.int64)
    return DataBundle(x, y, x[:16], y[:16])


def _fit(budget: int) -> tuple[nn.Module, int]:
    torch.set_num_threads(1)
    model = _net()
    calls = 0

    def count(_m: nn.Module, _i: object, _o: object) -> None:
        nonlocal calls
        calls += model.training  # training forwards only (not validation)

    model.register_forward_hook(count)
    cfg = TrainConfig(lr=0.05, epochs=1, batch_size=16, augment=False, schedule="constant")
    fit(model, _data(), cfg, seed=3, activation_budget_bytes=budget)
    return model, calls


def test_layer_outputs_are_counted_per_sample() -> None:
    # conv 8x16x16, relu 8x16x16, pool 8x2x2, flatten 32, linear 4: float32
    want = 4 * (8 * 16 * 16 * 2 + 32 * 2 + 4)
    assert activation_bytes_per_sample(_net(), (1, 16, 16)) == want


def test_the_micro_batch_is_what_the_budget_holds() -> None:
    per = 1000
    assert micro_batch_size(per, budget_bytes=int(10 * per * SAVED_FACTOR)) == 10
    assert micro_batch_size(per, budget_bytes=1) == 2  # BatchNorm needs two
    assert chunks(16, None) == 1 and chunks(16, 16) == 1
    assert chunks(16, 5) == 4  # 4 x 4, never a micro-batch of one
    assert chunks(3, 2) == 1  # 3 samples cannot split into two of at least two


def test_accumulated_micro_batches_give_the_whole_batchs_update() -> None:
    per = activation_bytes_per_sample(_net(), (1, 16, 16))
    whole, n_whole = _fit(budget=1 << 40)
    split, n_split = _fit(budget=int(4 * per * SAVED_FACTOR))  # micro-batches of 4
    assert n_whole == 64 // 16  # one forward per step: inputs that fit are unchanged
    assert n_split == 4 * n_whole
    for a, b in zip(whole.state_dict().values(), split.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_a_budget_bounds_what_a_step_keeps_for_its_backward_pass() -> None:
    # every tensor autograd saves for backward, summed per forward pass: a batch of 64 at
    # 1x64x64 keeps ~17 MiB (64 x 0.27); micro-batches under a 2 MiB budget keep under that
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 2),
    )  # fmt: skip
    x = np.zeros((64, 1, 64, 64), np.float32)
    y = np.zeros(64, np.int64)
    kept: list[int] = []

    def start(_m: nn.Module, _i: object) -> None:
        if model.training:
            kept.append(0)

    weights = {p.data_ptr() for p in model.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if kept and t.data_ptr() not in weights:  # inputs and layer outputs, not weights
            kept[-1] += t.numel() * t.element_size()
        return t

    model.register_forward_pre_hook(start)
    cfg = TrainConfig(lr=0.01, epochs=1, batch_size=64, augment=False)
    budget = 2 << 20
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fit(model, DataBundle(x, y, x[:2], y[:2]), cfg, activation_budget_bytes=1 << 40)
        whole = max(kept)
        kept.clear()
        fit(model, DataBundle(x, y, x[:2], y[:2]), cfg, activation_budget_bytes=budget)
        bounded = max(kept)
    assert whole > 4 * budget, whole
    assert bounded <= budget, (bounded, budget)
