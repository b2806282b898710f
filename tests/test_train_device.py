"""``--train-device``: workers get their GPUs round-robin (GPU counts passed in), a trial child
sees only its own GPU, ``cuda`` where torch sees none is refused before any work, the CPU path
gives the numbers it always gave, and the memory watchdog that replaces RLIMIT_AS on a GPU
kills a child that outgrows the cap. All on the CPU: tests/test_gpu.py runs the GPU side."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeopt.cli import main
from edgeopt.errors import ConfigError
from edgeopt.loading import ModelSpec
from edgeopt.profiles import resolve_targets
from edgeopt.search.run.collect import load_run
from edgeopt.search.trial.builder import TrialChild
from edgeopt.search.trial.protocol import FailureKind, Status, TrialRequest
from edgeopt.stages import FinetuneConfig
from edgeopt.training.device import DevicePlan, assign_devices, child_env


def test_workers_take_the_gpus_round_robin_and_more_workers_than_gpus_warn() -> None:
    assert assign_devices("cuda", 2, gpu_count=2) == DevicePlan(("cuda:0", "cuda:1"))
    plan = assign_devices("auto", 4, gpu_count=2)
    assert plan.devices == ("cuda:0", "cuda:1", "cuda:0", "cuda:1")
    assert plan.warning == (
        "warning: --workers 4 on 2 GPU(s): workers 3, 4 share a GPU with workers 1, 2; "
        "--workers 2 gives each its own"
    )
    shared = assign_devices("cuda:1", 3, gpu_count=2)
    assert shared.devices == ("cuda:1",) * 3
    assert shared.warning == "warning: all 3 workers share GPU 1 (--train-device cuda:1)"
    # auto without a GPU, and cpu whatever the GPUs: the CPU, nothing to say
    assert assign_devices("auto", 2, gpu_count=0) == DevicePlan(("cpu", "cpu"))
    assert assign_devices("CPU", 1, gpu_count=8) == DevicePlan(("cpu",))
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        assign_devices("cuda", 1, gpu_count=0)
    with pytest.raises(ConfigError, match=r"torch sees 2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        assign_devices("cuda:2", 1, gpu_count=2)
    with pytest.raises(ConfigError, match="invalid --train-device 'gpu'"):
        assign_devices("gpu", 1, gpu_count=1)


def test_a_child_sees_only_its_gpu_as_cuda_0() -> None:
    assert child_env("cpu", {}) == ("cpu", {})
    assert child_env("cuda:1", {}) == ("cuda:0", {"CUDA_VISIBLE_DEVICES": "1"})
    # the worker's number counts in the GPUs this process was given
    assert child_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "4,6"}) == (
        "cuda:0",
        {"CUDA_VISIBLE_DEVICES": "6"},
    )


def _request(tmp_path: Path, model: Path, data: Path | None, candidate: dict) -> TrialRequest:
    return TrialRequest(
        trial_dir=str(tmp_path / "trials" / "0"),
        model=ModelSpec(path=str(model)).to_dict(),
        data=str(data) if data else None,
        profiles=resolve_targets(["cpu"]).texts,
        seed=0,
        cache_dir=str(tmp_path / "cache"),
        salt="s",
        candidate=candidate,
        reference_onnx=str(tmp_path / "none.onnx"),
    )


def test_a_gpu_workers_trial_child_gets_its_gpu_and_no_address_space_cap(
    tmp_path: Path, model_files: dict
) -> None:
    child = TrialChild(tmp_path / "trials", memory_gb=8.0, device="cuda:1")
    try:
        result = child.run(_request(tmp_path, model_files["bundle"], None, {}), timeout_s=120)
        assert child.proc is not None and child.proc.poll() is None  # it answered and waits
        environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes().split(b"\0")
        limits = Path(f"/proc/{child.proc.pid}/limits").read_text()
    finally:
        child.close(kill=True)
    assert b"CUDA_VISIBLE_DEVICES=1" in environ
    address_space = next(line for line in limits.splitlines() if "address space" in line)
    assert address_space.split()[3] == "unlimited"  # CUDA reserves more than any cap
    request = TrialRequest.read(tmp_path / "trials" / "0" / "request.json")
    assert request.train_device == "cuda:0"
    # this machine has no GPU: the child says so instead of training on the CPU
    assert result.status is Status.FAIL and result.stage == "load"
    assert "torch here sees no CUDA device" in str(result.reason)


def _zeros_npz(path: Path, n_train: int) -> Path:
    """An npz whose float32 x_train holds ``n_train`` 1x16x16 zeros: a few MB on disk, written
    without ever holding the array here."""
    arrays = {
        "y_train": np.zeros(n_train, np.int64),
        "x_val": np.zeros((20, 1, 16, 16), np.float32),
        "y_val": np.arange(20, dtype=np.int64) % 10,
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("x_train.npy", "w", force_zip64=True) as fh:
            header = {"descr": "<f4", "fortran_order": False, "shape": (n_train, 1, 16, 16)}
            np.lib.format.write_array_header_2_0(fh, header)  # type: ignore[attr-defined]
            block = bytes(4 * 256 * 4096)
            for _ in range(n_train // 4096):
                fh.write(block)
        for name, arr in arrays.items():
            with z.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, arr)
    return path


def test_the_memory_watchdog_kills_a_child_over_the_cap(tmp_path: Path, model_files: dict) -> None:
    data = _zeros_npz(tmp_path / "big.npz", 4096 * 256)  # x_train: 1 GiB once loaded
    candidate = {"finetune": FinetuneConfig(epochs=8).to_dict()}
    child = TrialChild(tmp_path / "trials", memory_gb=0.75, rss_watchdog=True)
    try:
        result = child.run(
            _request(tmp_path, model_files["bundle"], data, candidate), timeout_s=300
        )
    finally:
        child.close(kill=True)
    assert result.status is Status.FAIL and result.failure is FailureKind.MEMORY, result
    assert "exceeded the memory cap of 0.75 GiB (--trial-memory-gb)" in str(result.reason)
    assert "GiB resident" in str(result.reason)


def _optimize(*args: object) -> object:
    return CliRunner().invoke(main, ["optimize", *map(str, args)])


def test_train_device_cuda_without_a_gpu_is_refused_before_any_work(
    tmp_path: Path, model_files: dict
) -> None:
    out = tmp_path / "run"
    result = _optimize(model_files["bundle"], "--train-device", "cuda", "--out", out)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert result.stderr.startswith(  # type: ignore[attr-defined]
        "Error: --train-device cuda: torch sees no CUDA device\nHint: use --train-device cpu"
    )
    assert not out.exists()
    bad = _optimize(model_files["bundle"], "--train-device", "gpu:0", "--out", out)
    assert bad.exit_code == 2 and "invalid --train-device 'gpu:0'" in bad.stderr  # type: ignore[attr-defined]
    assert not out.exists()


def test_train_device_cpu_gives_the_numbers_of_the_default_run(
    tmp_path: Path, model_files: dict, tiny_data: Path
) -> None:
    runs = {}
    for name, extra in (("default", []), ("cpu", ["--train-device", "cpu"])):
        out = tmp_path / name
        args = [model_files["bundle_wide"], "--data", tiny_data, "--target", "mobile"]
        result = _optimize(*args, "--trials", 3, "--seed", 0, "--out", out, "--no-report", *extra)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        runs[name] = load_run(out)["trials"]
    default, cpu = runs["default"], runs["cpu"]
    assert [t["state"] for t in cpu] == ["complete"] * 3
    tuned = [t for t in cpu if t["info"].get("finetune.train_result", {}).get("epochs_run")]
    assert tuned, "no trial fine-tuned: the comparison would not cover training"
    for a, b in zip(default, cpu, strict=True):
        assert a["candidate"] == b["candidate"]
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["onnx_sha256"] == b["onnx_sha256"]
        ha = a["info"].get("finetune.train_result", {}).get("history")
        assert ha == b["info"].get("finetune.train_result", {}).get("history")
        assert a["info"]["train_device"] == b["info"]["train_device"] == "cpu"
