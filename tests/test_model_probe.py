"""The measured cost of one fine-tune sample, which sizes a round and sets the auto trial
timeout: robust to a loaded machine, the same whatever the split's size."""

from __future__ import annotations

import numpy as np
import torch

from edgeopt import zoo
from edgeopt.data import DataBundle, NpzSource
from edgeopt.search.run.setup import auto_timeout
from edgeopt.stages.finetune_probe import sample_seconds, trial_seconds, typical_step_s
from edgeopt.training import MAX_EPOCH_SAMPLES


def test_load_spikes_do_not_move_the_step_cost() -> None:
    quiet = [0.100, 0.101, 0.099, 0.102, 0.100, 0.098, 0.101, 0.100]
    # another process took the CPU during three of the eight steps, one of them 12x
    loaded = [0.100, 1.200, 0.099, 0.450, 0.100, 0.098, 0.300, 0.100]
    assert abs(typical_step_s(loaded) - typical_step_s(quiet)) < 0.002
    assert auto_timeout(trial_seconds(typical_step_s(loaded) * 256)) < 1.05 * auto_timeout(
        trial_seconds(typical_step_s(quiet) * 256)
    )
    assert typical_step_s([0.5]) == 0.5


def _data(n_train: int) -> DataBundle:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, n_train).astype(np.int64)
    return DataBundle(x, y, x[:64], y[:64])


def _source(n_train: int) -> NpzSource:
    return NpzSource("data.npz", bundle=_data(n_train))


def test_a_sample_on_a_big_data_set_costs_the_same() -> None:
    """The probe measures a sample, whatever the split's size (a round draws at most
    MAX_EPOCH_SAMPLES of them: ``test_finetune_rounds``); the timing is noisy: the bound
    allows 2x, an estimate scaled to the whole split would be 6x."""
    torch.manual_seed(0)
    model = zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval()
    capped = sample_seconds(model, (1, 16, 16), _source(MAX_EPOCH_SAMPLES), threads=1)
    big = sample_seconds(model, (1, 16, 16), _source(6 * MAX_EPOCH_SAMPLES), threads=1)
    assert big < 2.0 * capped
