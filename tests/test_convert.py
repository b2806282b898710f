"""Converters to the file each runtime loads (``edgeopt.export.convert``), with the real
tools: ORT's ``convert_onnx_models_to_ort`` and OpenVINO's ``convert_model``; the converted
files run in their runtime (scored with ``edgeopt.measure.accuracy``; an OpenVINO session's
own properties read in a runtime child, so OpenVINO never loads into this process) and give
the ONNX model's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeopt.errors import ConfigError, ConversionError
from edgeopt.export.convert import CONVERTERS, ConvertOptions, convert
from edgeopt.measure.accuracy import onnx_logits
from edgeopt.measure.session import SESSION_FACTORIES, model_session
from edgeopt.profiles import load_profile
from edgeopt.profiles.runtime_spec import RUNTIMES, Runtime
from edgeopt.runtime_child import in_runtime_child

X = np.random.default_rng(0).standard_normal((5, 1, 16, 16)).astype(np.float32)


def _outputs(path: Path) -> np.ndarray:
    return onnx_logits(path, X, threads=1)


def _runs_in(path: str, precision_hint: str) -> bool:
    """True when OpenVINO compiled ``path`` at ``precision_hint`` (run in a runtime child)."""
    import openvino as ov
    import openvino.properties.hint as hints

    sess = model_session(path, threads=1, precision_hint=precision_hint)
    return bool(
        sess.raw.get_property(hints.inference_precision) == getattr(ov.Type, precision_hint)
    )


def test_the_three_runtime_tables_name_the_same_runtimes() -> None:
    assert set(CONVERTERS) == set(RUNTIMES)
    assert set(SESSION_FACTORIES) == {r.value for r in Runtime}


def test_ort_format_for_a_phone_loads_in_ort_and_matches_the_onnx(
    model_files: dict, tmp_path: Path
) -> None:
    options = ConvertOptions.for_profile(load_profile("mobile"))
    assert options.target_platform == "arm"
    art = convert(model_files["onnx"], Runtime.ORT_FORMAT, tmp_path / "m.onnx", options)
    assert [p.name for p in art.paths] == ["m.ort", "m.required_operators.config"]
    assert all(p.is_file() for p in art.paths)
    config = art.paths[1].read_text()
    assert "Gemm" in config and "nchwc" not in config  # no x86 layouts in a phone's file
    assert str(tmp_path) not in config and "edgeopt-ort-format" not in config
    assert art.facts["target_platform"] == "arm"
    diff = np.abs(_outputs(art.path) - _outputs(model_files["onnx"])).max()
    assert diff < 1e-5


def test_ort_format_for_this_host_is_amd64(model_files: dict, tmp_path: Path) -> None:
    options = ConvertOptions.for_profile(load_profile("cpu"))
    art = convert(model_files["onnx"], Runtime.ORT_FORMAT, tmp_path / "m.ort", options)
    assert art.facts["target_platform"] == "amd64"
    assert np.abs(_outputs(art.path) - _outputs(model_files["onnx"])).max() < 1e-5


def test_openvino_ir_keeps_fp32_weights_runs_f32_and_matches_the_onnx(
    model_files: dict, tmp_path: Path
) -> None:
    art = convert(model_files["onnx"], Runtime.OPENVINO, tmp_path / "ir" / "m.xml")
    assert [p.name for p in art.paths] == ["m.xml", "m.bin"]
    half = convert(
        model_files["onnx"], Runtime.OPENVINO, tmp_path / "h.xml", ConvertOptions(fp16_weights=True)
    )
    # fp32 weights: about twice the fp16 file (save_model's default would halve them)
    assert art.paths[1].stat().st_size > 1.8 * half.paths[1].stat().st_size
    assert in_runtime_child(_runs_in, str(art.path), "f32")
    assert np.abs(_outputs(art.path) - _outputs(model_files["onnx"])).max() < 1e-4
    assert in_runtime_child(_runs_in, str(art.path), "bf16")


def _unknown_op_model(path: Path) -> Path:
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("runtime", [Runtime.ORT_FORMAT, Runtime.OPENVINO])
def test_a_model_the_converter_cannot_take_fails_with_its_reason(
    runtime: Runtime, tmp_path: Path
) -> None:
    src = _unknown_op_model(tmp_path / "odd.onnx")
    with pytest.raises(ConversionError) as e:
        convert(src, runtime, tmp_path / "out" / "odd")
    assert e.value.runtime == RUNTIMES[runtime].label
    assert "Frobnicate" in e.value.reason
    assert str(e.value).startswith(f"converting to {RUNTIMES[runtime].label} failed: ")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("runtime", "why"),
    [
        (Runtime.LITERT, "LiteRT files are converted from the torch model"),
        (Runtime.TENSORRT, "not supported yet"),
    ],
)
def test_runtimes_without_a_converter_of_onnx_here_are_refused(
    runtime: Runtime, why: str, model_files: dict, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=why):
        convert(model_files["onnx"], runtime, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
