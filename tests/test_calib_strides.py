"""Bounded calibration memory: past its budget, ORT's calibrator collects the batches in
strides (``CalibStridedMinMax``) whose ranges merge, so a min-max file is exactly the one a
single pass makes; real ORT quantization of a real exported model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeopt import zoo
from edgeopt.inputs import ModelInputs
from edgeopt.onnx_export import export_onnx
from edgeopt.stages import QuantizeConfig
from edgeopt.stages.ort_quant import (
    activation_bytes_per_sample,
    calib_stride,
    calibration_reader,
    quantize_static,
)
from edgeopt.stages.quantize_config import CalibMethod, QuantMode

SHAPE = (1, 16, 16)
ONE = ModelInputs.single(SHAPE)
N = 96  # three batches of 32


@pytest.fixture(scope="module")
def pre(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnxruntime.quantization import quant_pre_process

    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("strides")
    src = export_onnx(zoo.BUILDERS["resnet_small"](width=8).eval(), SHAPE, d / "r.onnx")
    quant_pre_process(str(src), str(d / "pre.onnx"))
    return d / "pre.onnx"


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, *SHAPE)).astype(np.float32)


def _scales(path: Path) -> dict[str, np.ndarray]:
    g = onnx.load(str(path)).graph
    return {
        i.name: numpy_helper.to_array(i)
        for i in g.initializer
        if i.name.endswith(("_scale", "_zero_point"))
    }


def test_the_stride_is_the_most_batches_the_budget_holds(pre: Path) -> None:
    reader = calibration_reader(ONE, _x())
    assert (len(reader), reader.batch_size) == (3, 32)
    # every ReLU, conv and add output of the 16x16 model, float32, per sample
    per_sample = activation_bytes_per_sample(pre)
    assert 8 * 16 * 16 * 4 * 4 < per_sample < 10**6
    batch = per_sample * 32
    assert calib_stride(pre, reader, 3 * batch) is None  # all three fit
    assert calib_stride(pre, reader, 2 * batch) == 1  # 2 does not divide 3
    assert (len(reader), reader.batch_size) == (3, 32)
    # a budget under one batch shrinks the batches to fit it
    small = calibration_reader(ONE, _x())
    assert calib_stride(pre, small, 16 * per_sample) == 1
    assert (len(small), small.batch_size) == (6, 16)
    # six batches of 32, two per stride
    assert (
        calib_stride(pre, calibration_reader(ONE, np.concatenate([_x(), _x()])), 64 * per_sample)
        == 2
    )
    reader.set_range(1, 3)
    got = [reader.get_next() for _ in range(3)]
    assert got[0] is not None and got[1] is not None and got[2] is None
    assert np.array_equal(next(iter(got[0].values())), _x()[32:64])
    assert np.array_equal(next(iter(got[1].values())), _x()[64:96])


@pytest.mark.parametrize("method", [CalibMethod.MINMAX, CalibMethod.PERCENTILE])
def test_strided_calibration_makes_the_single_pass_file(
    pre: Path, tmp_path: Path, method: CalibMethod
) -> None:
    config = QuantizeConfig(mode=QuantMode.INT8_STATIC, calibration=method)
    whole, strided = tmp_path / "whole.onnx", tmp_path / "strided.onnx"
    quantize_static(pre, whole, config, calibration_reader(ONE, _x()))
    budget = activation_bytes_per_sample(pre) * 32  # one batch per stride
    quantize_static(pre, strided, config, calibration_reader(ONE, _x()), calib_budget_bytes=budget)
    a, b = _scales(whole), _scales(strided)
    assert a.keys() == b.keys() and len(a) > 10
    if method is CalibMethod.MINMAX:  # min and max merge exactly
        assert all(np.array_equal(a[k], b[k]) for k in a)
    else:  # merged histograms: the same ranges within a few percent
        for k in a:
            assert np.allclose(a[k], b[k], rtol=0.1, atol=1), k
