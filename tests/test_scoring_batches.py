"""Scoring feeds a model a bounded number of input bytes per run: at 224x224 a 64-sample run
held ~250 MB more of ONNX Runtime's memory than a 16-sample one (the search process and the
trial child both score), and gave no speed back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeopt.measure.accuracy import onnx_logits
from edgeopt.measure.session import RUN_INPUT_BYTES, model_session, run_step
from edgeopt.onnx_export import export_onnx


class _Pool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _onnx(tmp_path: Path, shape: tuple[int, ...]) -> Path:
    torch.manual_seed(0)
    return export_onnx(_Pool().eval(), shape, tmp_path / f"m{shape[-1]}.onnx")


def test_a_run_holds_at_most_the_input_bytes_bound_and_small_inputs_keep_their_batch(
    tmp_path: Path,
) -> None:
    big = model_session(_onnx(tmp_path, (3, 224, 224)), threads=1)
    sample = np.zeros((3, 224, 224), np.float32)
    step = run_step(big, 256, sample)
    assert step * sample.nbytes <= RUN_INPUT_BYTES < (step + 1) * sample.nbytes
    assert step == 13
    small = model_session(_onnx(tmp_path, (3, 32, 32)), threads=1)
    assert run_step(small, 256, np.zeros((3, 32, 32), np.float32)) == 256


def test_scores_of_large_inputs_are_those_of_one_sample_at_a_time(tmp_path: Path) -> None:
    path = _onnx(tmp_path, (3, 224, 224))
    x = np.random.default_rng(0).standard_normal((30, 3, 224, 224)).astype(np.float32)
    batched = onnx_logits(path, x, batch_size=256, threads=1)
    sess = model_session(path, threads=1)
    single = np.concatenate([sess.run(x[i : i + 1]) for i in range(len(x))])
    assert batched.shape == (30, 3)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
