"""Fine-tune budgets in rounds sized by the measured step cost (``stages/finetune_probe.py``):
a slow model's round draws the samples ``round_s`` pays for, a 32x32 one's stays its epoch,
and a trial fine-tunes the round its run recorded."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.config import RunConfig
from edgeopt.data import DataBundle, NpzSource
from edgeopt.loading import ModelSpec
from edgeopt.rundir import RunDir
from edgeopt.search.run.loop import run_search
from edgeopt.search.run.setup import prepare
from edgeopt.stages import STAGES, ProbeInput
from edgeopt.stages.finetune_probe import (
    LARGEST_BATCH,
    MIN_ROUND_STEPS,
    PROBE_BATCH,
    ROUND_S_MAX,
    ROUND_S_MIN,
    TIMEOUT_EPOCHS,
    round_samples,
    round_seconds,
)
from edgeopt.training import MAX_EPOCH_SAMPLES, SYNTHETIC_TRAIN, TrainConfig, fit

SLEEP_S = 0.03
SHAPE = (1, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Slow(nn.Module):
    """A model whose every forward pass takes at least ``SLEEP_S`` longer (a real sleep): a
    step as costly as a big model's at 224x224, on a tiny one."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(SLEEP_S)
        return self.inner(x)


def _bundle(n_train: int) -> DataBundle:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train, *SHAPE)).astype(np.float32)
    y = rng.integers(0, 10, n_train).astype(np.int64)
    return DataBundle(x, y, x[:64], y[:64])


def _probe(module: nn.Module, data: DataBundle | None, tmp_path: Path, **kw: object) -> dict:
    source = NpzSource(tmp_path / "data.npz", bundle=data) if data is not None else None
    model = ProbeInput(
        module=module,
        onnx_path=tmp_path / "model.onnx",
        input_shape=SHAPE,
        data=source,
        threads=1,
        **kw,  # type: ignore[arg-type]
    )
    return dict(STAGES["finetune"].probe(model))


def test_round_seconds_follow_the_search_timeout() -> None:
    assert round_seconds(None) == ROUND_S_MAX
    assert round_seconds(60.0) == ROUND_S_MIN  # 3 s: at least the floor
    assert round_seconds(400.0) == 20.0  # a 20th of the search
    assert round_seconds(3600.0) == ROUND_S_MAX
    assert round_samples(0.01, 20.0, 50_000) == 2000
    assert round_samples(1.0, 20.0, 50_000) == MIN_ROUND_STEPS * LARGEST_BATCH
    assert round_samples(1e-6, 20.0, 50_000) == MAX_EPOCH_SAMPLES
    assert round_samples(1e-6, 20.0, 300) == 300


def test_a_slow_models_round_is_what_its_measured_samples_cost(tmp_path: Path) -> None:
    """Two sleeps per probed step (student and teacher) of a batch of 64: the measured sample
    cost holds them, and the round draws floor(round_s / sample_s) samples, fewer than the
    epoch (17,000 samples, capped at 16,384) a fast model gets."""
    torch.manual_seed(0)
    data = _bundle(17_000)
    fast = _probe(zoo.plain_cnn(in_channels=1, num_classes=10, width=4), data, tmp_path)
    slow = _probe(
        Slow(zoo.plain_cnn(in_channels=1, num_classes=10, width=4)),
        data,
        tmp_path,
        search_timeout_s=60.0,
    )
    assert fast["round_samples"] == MAX_EPOCH_SAMPLES
    assert slow["sample_s"] >= 2 * SLEEP_S / PROBE_BATCH
    assert slow["round_s"] == ROUND_S_MIN
    n = slow["round_samples"]
    assert n == min(MAX_EPOCH_SAMPLES, max(1024, math.floor(ROUND_S_MIN / slow["sample_s"])))
    assert 1024 < n < MAX_EPOCH_SAMPLES  # the measured cost, not the cap, sets it
    assert slow["epoch_s"] == pytest.approx(slow["sample_s"] * n, abs=1e-3)
    assert STAGES["finetune"].trial_seconds(slow) == pytest.approx(TIMEOUT_EPOCHS * slow["epoch_s"])


def test_tiny_data_rounds_are_whole_epochs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.plain_cnn(in_channels=1, num_classes=10, width=4)
    assert _probe(model, _bundle(200), tmp_path)["round_samples"] == 200
    assert _probe(model, _bundle(6 * MAX_EPOCH_SAMPLES), tmp_path)["round_samples"] == (
        MAX_EPOCH_SAMPLES
    )
    assert _probe(model, None, tmp_path)["round_samples"] == SYNTHETIC_TRAIN


def test_fit_draws_round_samples_per_epoch() -> None:
    data = _bundle(500)
    config = TrainConfig(epochs=3, lr=0.01, batch_size=32, patience=0)

    def run(n: int | None, d: DataBundle | None = data, teacher: nn.Module | None = None) -> tuple:
        torch.manual_seed(0)
        model = zoo.plain_cnn(in_channels=1, num_classes=10, width=4)
        result = fit(model, d, config, seed=0, teacher=teacher, input_shape=SHAPE, round_samples=n)
        return result, model.state_dict()

    short, _ = run(96)
    assert short.steps == 3 * 96 // 32
    whole, weights = run(None)
    assert whole.steps == 3 * math.ceil(500 / 32)
    same, same_weights = run(500)  # a round of the whole split is the epoch, exactly
    assert same.history == whole.history
    assert all(torch.equal(weights[k], same_weights[k]) for k in weights)
    teacher = zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval()
    free, _ = run(256, None, teacher)  # data-free: fewer fresh synthetic inputs per round
    assert free.steps == 3 * 256 // 32


def test_a_trial_fine_tunes_the_round_its_run_recorded(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    """The round is read from the baseline's stage facts (as a slow model's probe would have
    recorded it) and travels to the trial child: its fine-tune takes rounds x round batches
    steps, where a whole epoch of the 200 training samples would take 7 per round."""
    run = tmp_path / "run"
    config = RunConfig(
        model=ModelSpec(path=str(model_files["bundle_wide"])),
        data=str(tiny_data),
        targets=("mobile",),
        seed=0,
        trial_timeout_s=120.0,
    )
    prepare(config, run)
    rd = RunDir(run)
    baseline = json.loads(rd.baseline_file.read_text())
    assert baseline["stage_facts"]["finetune"]["round_samples"] == 200  # tiny data: the epoch
    baseline["stage_facts"]["finetune"]["round_samples"] = 64
    rd.baseline_file.write_text(json.dumps(baseline))
    run_search(run, n_trials=3, timeout_s=None)  # the unchanged model, int8, the first seed
    trial = rd.trial_dir(2)
    request = json.loads((trial / "request.json").read_text())
    assert request["round_samples"] == 64
    train = json.loads((trial / "result.json").read_text())["info"]["finetune.train_result"]
    batch = request["candidate"]["finetune"]["batch_size"]
    assert train["epochs_run"] >= 1
    assert train["steps"] == train["epochs_run"] * math.ceil(64 / batch)
