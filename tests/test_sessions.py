"""Models timed and scored in their own runtime: the timing child and the accuracy scorer
load ``.ort`` in ONNX Runtime and OpenVINO ``.xml`` in OpenVINO (f32), interleaved in one
process as ONNX files are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeopt.export.convert import convert
from edgeopt.measure.accuracy import onnx_accuracy, onnx_logits
from edgeopt.measure.local_runner import measure_latency, measure_memory
from edgeopt.profiles.runtime_spec import Runtime

SHAPE = (1, 16, 16)


def test_the_timing_child_interleaves_onnx_ort_and_openvino_files(
    model_files: dict, tmp_path: Path
) -> None:
    onnx_path = model_files["onnx"]
    ort_file = convert(onnx_path, Runtime.ORT_FORMAT, tmp_path / "m.ort").path
    xml = convert(onnx_path, Runtime.OPENVINO, tmp_path / "m.xml").path
    stats = measure_latency(
        [onnx_path, ort_file, xml],
        threads=1,
        input_shape=SHAPE,
        min_rounds=3,
        max_rounds=3,
        time_budget_s=2.0,
        target_round_ms=5.0,
    )
    assert [s.rounds for s in stats] == [3, 3, 3]
    assert all(0 < s.p50_ms < 50 for s in stats)
    memory = measure_memory(xml, threads=1, input_shape=SHAPE)
    assert memory.peak_rss_mb > memory.model_memory_mb >= 0


def test_accuracy_is_scored_through_the_runtime(
    model_files: dict, tiny_data: Path, tmp_path: Path
) -> None:
    data = np.load(tiny_data)
    x, y = data["x_test"], data["y_test"]
    xml = convert(model_files["onnx"], Runtime.OPENVINO, tmp_path / "m.xml").path
    ort_file = convert(model_files["onnx"], Runtime.ORT_FORMAT, tmp_path / "m.ort").path
    ref = onnx_logits(model_files["onnx"], x, batch_size=16)
    for path in (xml, ort_file):
        assert np.abs(onnx_logits(path, x, batch_size=16) - ref).max() < 1e-4
        assert onnx_accuracy(path, x, y) == onnx_accuracy(model_files["onnx"], x, y)
