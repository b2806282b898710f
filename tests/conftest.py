"""Shared fixtures: tiny seeded models saved in every format users bring, and tiny data."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt import zoo
from edgeopt.loading import save_bundle

SHAPE = (1, 16, 16)
REPO = Path(__file__).resolve().parent.parent

# A shell's background job (`pytest ... &`, nohup) starts with SIGINT/SIGQUIT (SIGHUP) ignored,
# and edgeopt deliberately keeps a signal ignored that was ignored when it started; the signal
# tests expect the default dispositions a foreground shell gives, so give them those here
# (children inherit an ignored signal, not a handler).
for _sig, _default in (
    (signal.SIGINT, signal.default_int_handler),
    (signal.SIGQUIT, signal.SIG_DFL),
    (signal.SIGHUP, signal.SIG_DFL),
):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _default)


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.plain_cnn(in_channels=1, num_classes=10, width=4).eval()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, tiny_model: torch.nn.Module) -> dict:
    """One file per supported format (and a few broken ones), all of the same tiny model."""
    d = tmp_path_factory.mktemp("models")
    files: dict[str, Path] = {}
    files["bundle"] = save_bundle(
        tiny_model,
        d / "bundle.pt",
        arch="edgeopt.zoo:plain_cnn",
        arch_kwargs={"in_channels": 1, "num_classes": 10, "width": 4},
        input_shape=SHAPE,
    )
    # channels 16/32/64: prunable on every profile (the mobile NPU keeps multiples of 16,
    # so the width-4 model above cannot lose a channel there)
    torch.manual_seed(0)
    files["bundle_wide"] = save_bundle(
        zoo.plain_cnn(in_channels=1, num_classes=10, width=16).eval(),
        d / "bundle_wide.pt",
        arch="edgeopt.zoo:plain_cnn",
        arch_kwargs={"in_channels": 1, "num_classes": 10, "width": 16},
        input_shape=SHAPE,
    )
    files["state_dict"] = d / "weights.pt"
    torch.save(tiny_model.state_dict(), files["state_dict"])
    files["pickle"] = d / "full.pt"
    torch.save(tiny_model, files["pickle"])
    files["torchscript"] = d / "scripted.pt"
    torch.jit.save(torch.jit.script(tiny_model), files["torchscript"])
    example = (torch.randn(2, *SHAPE),)
    dyn = torch.export.export(tiny_model, example, dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    files["pt2"] = d / "program.pt2"
    torch.export.save(dyn, files["pt2"])
    files["pt2_static"] = d / "static.pt2"
    torch.export.save(torch.export.export(tiny_model, example), files["pt2_static"])
    from edgeopt.onnx_export import export_onnx

    files["onnx"] = export_onnx(tiny_model, SHAPE, d / "model.onnx")
    files["empty"] = d / "empty.pt"
    files["empty"].write_bytes(b"")
    files["garbage"] = d / "garbage.pt"
    files["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["truncated_onnx"] = d / "truncated.onnx"
    files["truncated_onnx"].write_bytes(files["onnx"].read_bytes()[:300])
    files["truncated_bundle"] = d / "truncated.pt"
    files["truncated_bundle"].write_bytes(files["bundle"].read_bytes()[:-2000])
    return files


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small learnable 10-class task shaped like the models' input."""
    rng = np.random.default_rng(0)
    protos = rng.standard_normal((10, *SHAPE)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = protos[y] + 0.3 * rng.standard_normal((n, *SHAPE)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    xtr, ytr = split(200)
    xva, yva = split(60)
    xte, yte = split(60)
    np.savez(path, x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    return path


@pytest.fixture(scope="session")
def slow_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough training data that a fine-tune runs for seconds (an epoch 2-3 s at one thread):
    a trial that is still running when a test signals it."""
    rng = np.random.default_rng(0)
    shape = (1, 16, 16)
    protos = rng.standard_normal((10, *shape)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = protos[y] + 0.3 * rng.standard_normal((n, *shape)).astype(np.float32)
        return x.astype(np.float32), y.astype(np.int64)

    path = tmp_path_factory.mktemp("slow") / "slow.npz"
    xtr, ytr = split(6000)
    xva, yva = split(100)
    xte, yte = split(100)
    np.savez(path, x_train=xtr, y_train=ytr, x_val=xva, y_val=yva, x_test=xte, y_test=yte)
    return path


@pytest.fixture(scope="session")
def onnx_run(tmp_path_factory: pytest.TempPathFactory, model_files: dict, tiny_data: Path) -> Path:
    """A finished run, made once through the CLI: ``edgeopt optimize`` of the tiny ONNX model
    on ``tiny_data``, target mobile, 2 trials (the two baselines), ``--no-report``. Tests that
    change a run directory copy it first (``shutil.copytree``; its paths are relative)."""
    out = tmp_path_factory.mktemp("onnx_run") / "run"
    args = ["optimize", model_files["onnx"], "--data", tiny_data, "--target", "mobile"]
    args += ["--out", out, "--trials", "2", "--no-report"]
    done = subprocess.run(
        [sys.executable, "-c", "from edgeopt.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch at one thread for the test (two processes at the default on 2 cores ran a
    training loop 10x slower), restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
