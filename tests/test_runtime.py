"""Host measurement: an isolated process, interleaved rounds, memory of that process only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.measure.local_runner import measure_latency, measure_memory
from edgeopt.measure.runtime import size_mb

SHAPE = (1, 16, 16)


def test_interleaved_latency_of_one_model_twice_has_ratio_near_one(model_files: dict) -> None:
    onnx_path = model_files["onnx"]
    a, b = measure_latency([onnx_path, onnx_path], threads=1, input_shape=SHAPE, time_budget_s=1)
    assert a.ratio_to_first == 1.0
    assert 0.6 < b.ratio_to_first < 1.6
    assert a.rounds == b.rounds >= 5
    assert 0 < a.min_ms <= a.p50_ms <= a.p90_ms


def test_memory_is_the_measuring_process_not_the_caller(model_files: dict) -> None:
    ballast = np.ones(300 * 2**20 // 8)  # a 300 MB caller must not show up in the reading
    stats = measure_memory(model_files["onnx"], threads=1, input_shape=SHAPE)
    assert ballast.sum() > 0
    assert 0 < stats.model_memory_mb < stats.peak_rss_mb < 250


def test_size_is_the_file_size(model_files: dict) -> None:
    p: Path = model_files["onnx"]
    assert size_mb(p) == p.stat().st_size / 2**20
