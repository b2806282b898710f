"""OpenVINO, LiteRT and their converters stay out of edgeopt's process
(``edgeopt.runtime_child``): a child that dies is an error naming the signal, and this very
pytest process, after converting and scoring through OpenVINO and LiteRT with edgeopt's
functions, still forks DataLoader workers and gets the right batches and outputs (each of
those crashed it with a segmentation fault while the runtimes loaded here)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.data.loader import BatchLoader
from edgeopt.errors import ConversionError
from edgeopt.export.convert import convert
from edgeopt.export.litert import to_litert
from edgeopt.measure.accuracy import onnx_logits
from edgeopt.profiles.runtime_spec import Runtime
from edgeopt.runtime_child import ChildDied, RuntimeChild, in_runtime_child

SHAPE = (1, 16, 16)
RUNTIME_MODULES = ("openvino", "jax", "litert_torch", "ai_edge_quantizer")
"""Modules edgeopt's own process must never import (the LiteRT interpreter: below)."""


def _segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _sleep_ignoring_ctrl_c(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_a_child_that_crashes_is_an_error_naming_the_signal_and_the_next_call_works() -> None:
    with RuntimeChild() as child:
        with pytest.raises(ChildDied) as e:
            child.call(_segfault)
        assert e.value.exitcode == -signal.SIGSEGV
        assert "killed by SIGSEGV" in str(e.value)
        assert child.call(os.getpid) != os.getpid()  # a fresh child for the next call


def test_the_child_ignores_ctrl_c_and_its_parent_stops_it() -> None:
    # the terminal's Ctrl-C reaches the whole process group: the child goes on, the parent
    # decides; a KeyboardInterrupt here kills the child
    with RuntimeChild() as child:
        pid = child.call(os.getpid)
        os.kill(pid, signal.SIGINT)
        assert child.call(_sleep_ignoring_ctrl_c, 0.1) == "done"
        old = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            with pytest.raises(KeyboardInterrupt):
                child.call(_sleep_ignoring_ctrl_c, 30)
        finally:
            signal.signal(signal.SIGINT, old)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped


class _Digits:
    """A BatchSource: sample i is an image filled with i, labelled i % 10."""

    def take(self, split: str, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([np.full(SHAPE, i, np.float32) for i in indices])
        return x, np.array([i % 10 for i in indices])

    def count(self, split: str) -> int:
        return 32


def test_after_openvino_and_litert_this_process_forks_loader_workers_and_scores_right(
    model_files: dict, tiny_model: torch.nn.Module, tmp_path: Path
) -> None:
    x = np.random.default_rng(0).standard_normal((20, *SHAPE)).astype(np.float32)
    ref = onnx_logits(model_files["onnx"], x, threads=1)
    ir = convert(model_files["onnx"], Runtime.OPENVINO, tmp_path / "m.xml").path
    assert np.abs(onnx_logits(ir, x, threads=1) - ref).max() < 1e-4
    # LiteRT's first interpreter after OpenVINO, and litert-torch's JAX
    lite = to_litert(tiny_model, SHAPE, tmp_path / "m.tflite").path
    assert np.abs(onnx_logits(lite, x, threads=1) - ref).max() < 1e-4
    # forked DataLoader workers, shut down at the end: the same batches as decoded here
    batches = [[3, 1, 4], [1, 5, 9], [2, 6]]
    source = _Digits()  # the loader holds it weakly
    forked = BatchLoader(source, "train", 1)
    assert forked.workers == 1
    got = [(bx.numpy().copy(), by.numpy().copy()) for bx, by in forked.epoch(batches)]
    want = [(bx.numpy(), by.numpy()) for bx, by in BatchLoader(source, "train", 0).epoch(batches)]
    del forked
    assert len(got) == len(want) == 3
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert np.array_equal(gx, wx) and np.array_equal(gy, wy)
    assert np.abs(onnx_logits(ir, x, threads=1) - ref).max() < 1e-4  # and still scores


def test_converter_errors_keep_their_type_and_reason_from_the_child(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(ConversionError) as e:
        convert(broken, Runtime.OPENVINO, tmp_path / "b.xml")
    assert e.value.runtime == "OpenVINO" and e.value.reason
    assert str(e.value).startswith("converting to OpenVINO failed: ")


def test_the_search_and_bench_never_load_a_runtime_into_edgeopts_process(
    model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    # a fresh interpreter, so that nothing this pytest process did counts
    out = tmp_path / "run"
    onnx, ir = str(model_files["onnx"]), str(out / "baseline" / "openvino-host" / "original.xml")
    code = f"""
import sys
from click.testing import CliRunner
from edgeopt.cli import main
data = {str(tiny_data)!r}
r = CliRunner().invoke(main, ["optimize", {onnx!r}, "--data", data, "--target",
    "cpu,openvino-host", "--trials", "2", "--threads", "1", "--out", {str(out)!r}, "--no-report"])
assert r.exit_code == 0, r.output
for model in ({onnx!r}, {ir!r}):
    r = CliRunner().invoke(main, ["bench", model, "--target", "openvino-host", "--data", data,
        "--time-budget", "1"])
    assert r.exit_code == 0, r.output
loaded = [m for m in sys.modules if m.split(".")[0] in {RUNTIME_MODULES!r}]
loaded += [m for m in sys.modules if m.startswith("ai_edge_litert.") and "schema" not in m]
print("LOADED", sorted(loaded))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "LOADED []" in done.stdout, done.stdout[-2000:]
    assert Path(ir).is_file()  # the set-up converted the original, in a child
    assert in_runtime_child(os.getpid) != os.getpid()
