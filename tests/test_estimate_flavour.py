"""The int8 flavour per target: a model quantized by edgeopt's quantize stage (real ORT
quantize_static) with the target's own activation/weight types runs its Q/DQ on the target's
int8 unit; one quantized for another target (x86's u8/s8 on a Snapdragon NPU) does not, and
the estimate says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeopt import zoo
from edgeopt.estimate import estimate
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import HardwareProfile, load_profile
from edgeopt.stages import STAGES, QuantizeConfig, QuantMode, StageContext

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = zoo.resnet_small(in_channels=3, width=32).eval()
    return export_onnx(model, SHAPE, tmp_path_factory.mktemp("flavour") / "resnet.onnx")


def _quantize(src: Path, profile: HardwareProfile, act: str, weight: str, work: Path) -> Path:
    ctx = StageContext(workdir=work, profile=profile, data=None, teacher=None, input_shape=SHAPE)
    cfg = QuantizeConfig(
        mode=QuantMode.INT8_STATIC,
        activation_type=act,
        weight_type=weight,
        calibration_samples=8,
    )
    return STAGES["quantize"].apply(src, cfg, ctx).artifact


def test_target_flavour_folds_on_the_npu(tmp_path: Path, fp32_model: Path) -> None:
    mobile = load_profile("mobile")
    own = STAGES["quantize"].identity(mobile)  # the types the search quantizes with
    q = _quantize(fp32_model, mobile, own.activation_type, own.weight_type, tmp_path)
    fp32, int8 = estimate(fp32_model, mobile), estimate(q, mobile)
    assert int8.latency_ms / fp32.latency_ms < 1.0
    assert int8.fallback_fraction == 0.0
    assert not any("fall back" in a or "differ" in a for a in int8.assumptions)
    assert {c.unit for c in int8.nodes if c.op != "Transfer"} == {"npu"}


def test_other_flavour_falls_back_and_says_why(tmp_path: Path, fp32_model: Path) -> None:
    mobile = load_profile("mobile")
    x86 = STAGES["quantize"].identity(load_profile("cpu"))
    assert (x86.activation_type, x86.weight_type) == ("uint8", "int8")
    q = _quantize(fp32_model, mobile, x86.activation_type, x86.weight_type, tmp_path)
    e = estimate(q, mobile)
    own = STAGES["quantize"].identity(mobile)
    native = _quantize(fp32_model, mobile, own.activation_type, own.weight_type, tmp_path)
    assert estimate(native, mobile).latency_ms < e.latency_ms
    assert e.fallback_fraction == 1.0
    assert {c.unit for c in e.nodes if c.op != "Transfer"} == {"cpu"}
    q_ = mobile.quantization
    note = next(a for a in e.assumptions if "differ" in a)
    assert "activation type uint8" in note and "weight type int8" in note
    assert f"{q_.activation_type} activations, {q_.weight_type} weights" in note
    # the x86 flavour on the x86 host: nothing about flavours
    host = estimate(q, load_profile("cpu"))
    assert not any("differ" in a for a in host.assumptions)
