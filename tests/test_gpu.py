"""Training on a CUDA device (``--train-device``): run where torch sees a GPU, skipped (with the
reason in pytest's summary) where it does not. ``EDGEOPT_EXPECT_GPU=1`` turns a machine that
should have one but does not (a CPU-only torch, no driver) into a failure, not a row of skips:

    EDGEOPT_EXPECT_GPU=1 pytest tests/test_gpu.py
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeopt import zoo
from edgeopt.cli import main
from edgeopt.data import DataBundle
from edgeopt.data.augmentation import Augmentation
from edgeopt.search.run.collect import load_run
from edgeopt.training import OptimizerKind, Schedule, TrainConfig, fake_quant, fit
from edgeopt.training.augment import augment_images

HAS_CUDA = torch.cuda.is_available()
requires_gpu = pytest.mark.skipif(
    not HAS_CUDA,
    reason="no CUDA device: GPU tests run where torch.cuda.is_available() (README 'GPU tests')",
)


def test_gpu_expected() -> None:
    """Not skipped: with EDGEOPT_EXPECT_GPU=1 the GPU tests must really run."""
    if os.environ.get("EDGEOPT_EXPECT_GPU") != "1":
        return
    assert torch.version.cuda is not None, f"torch {torch.__version__} is a CPU-only build"
    assert HAS_CUDA and torch.cuda.device_count() > 0, "torch sees no CUDA device"


def _data(n: int = 160, seed: int = 0) -> DataBundle:
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((10, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, n + 64)
    x = (protos[y] + 0.3 * rng.standard_normal((n + 64, 1, 16, 16))).astype(np.float32)
    return DataBundle(x[:n], y[:n].astype(np.int64), x[n:], y[n:].astype(np.int64))


def _fit(device: str, data: DataBundle | None, config: TrainConfig) -> tuple[list, dict]:
    torch.manual_seed(0)
    teacher = zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval().to(device)
    student = copy.deepcopy(teacher)
    result = fit(student, data, config, teacher=teacher, seed=3, input_shape=(1, 16, 16))
    assert all(p.device.type == torch.device(device).type for p in student.parameters())
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    return [loss for _, loss, _ in result.history], state


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("with_data", [True, False], ids=["data", "data-free"])
@pytest.mark.parametrize(("distill", "augment"), [(False, True), (True, False)])
def test_fit_on_cuda_follows_the_cpu(with_data: bool, distill: bool, augment: bool) -> None:
    config = TrainConfig(
        epochs=2,
        lr=0.01,
        batch_size=32,
        optimizer=OptimizerKind.SGD,
        schedule=Schedule.COSINE,
        augment=augment,
        distill=distill or not with_data,
    )
    data = _data() if with_data else None
    torch.backends.cudnn.deterministic = True
    cpu_loss, cpu_state = _fit("cpu", data, config)
    gpu_loss, gpu_state = _fit("cuda", data, config)
    # the same batches and augmentations (CPU random streams), different float arithmetic
    assert gpu_loss == pytest.approx(cpu_loss, abs=1e-3)
    for name, value in cpu_state.items():
        if value.is_floating_point():
            assert torch.allclose(gpu_state[name], value, atol=1e-3, rtol=1e-3), name


@pytest.mark.gpu
@requires_gpu
def test_qat_fake_quant_runs_on_cuda() -> None:
    torch.manual_seed(0)
    model = zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval()
    x = _data().x_val[:32]
    outs = []
    for device in ("cpu", "cuda"):
        qat = fake_quant.prepare_qat(copy.deepcopy(model).to(device), input_shape=(1, 16, 16))
        fake_quant.calibrate(qat, x)
        fake_quant.finalize(qat)
        assert {b.device.type for b in qat.buffers()} == {torch.device(device).type}
        with torch.no_grad():
            outs.append(qat(torch.from_numpy(x).to(device)).cpu())
    peak = float(outs[0].abs().max())
    assert float((outs[0] - outs[1]).abs().max()) <= 0.05 * peak  # a few int8 quanta


@pytest.mark.gpu
@requires_gpu
def test_optimize_trains_on_the_gpu_and_records_it(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    out = tmp_path / "run"
    args = [model_files["bundle_wide"], "--data", tiny_data, "--target", "mobile"]
    args += ["--trials", "3", "--seed", "0", "--out", out, "--no-report"]
    result = CliRunner().invoke(
        main, ["optimize", *map(str, args), "--train-device", "cuda", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    trials = load_run(out)["trials"]
    assert [t["state"] for t in trials] == ["complete"] * 3, [t.get("fail_reason") for t in trials]
    name = torch.cuda.get_device_name(0)
    devices = {t["info"]["train_device"] for t in trials}
    assert len(devices) == 1 and devices.pop().endswith(f" ({name})"), devices
    assert any(t["info"].get("finetune.train_result", {}).get("epochs_run") for t in trials)


@pytest.mark.gpu
@requires_gpu
def test_image_augmentation_on_cuda_draws_what_the_cpu_draws() -> None:
    """An image folder's crop and flip (drawn from fit's CPU generator) resample on the
    batch's device: the same seed gives the CPU's batch up to float rounding."""
    x = torch.randn(8, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    how = Augmentation.parse("crop,flip")
    cpu = augment_images(x, torch.Generator().manual_seed(5), 0.1, how)
    cuda = augment_images(x.to("cuda"), torch.Generator().manual_seed(5), 0.1, how)
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-4)
