"""Every model format loads to the same function; unsafe or broken inputs fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.errors import ConfigError
from edgeopt.loading import (
    ModelFormat,
    check_model_and_data,
    is_builtin_arch,
    load_model,
    model_output_shape,
    parse_shape,
)

SHAPE = (1, 16, 16)


def _out(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x).numpy()


@pytest.mark.parametrize(
    ("key", "fmt", "kwargs"),
    [
        ("bundle", ModelFormat.BUNDLE, {}),
        (
            "state_dict",
            ModelFormat.STATE_DICT,
            {
                "arch": "edgeopt.zoo:plain_cnn",
                "arch_kwargs": {"in_channels": 1, "width": 4},
                "input_shape": SHAPE,
            },
        ),
        ("pickle", ModelFormat.PICKLE, {"trust_pickle": True, "input_shape": SHAPE}),
        ("torchscript", ModelFormat.TORCHSCRIPT, {"input_shape": SHAPE}),
        ("pt2", ModelFormat.EXPORTED_PROGRAM, {}),
    ],
)
def test_torch_formats_load_the_same_function(
    model_files: dict, tiny_model: torch.nn.Module, key: str, fmt: ModelFormat, kwargs: dict
) -> None:
    loaded = load_model(model_files[key], **kwargs)
    assert loaded.format == fmt
    assert loaded.input_shape == SHAPE
    x = torch.randn(3, *SHAPE)
    np.testing.assert_allclose(_out(loaded.module, x), _out(tiny_model, x), atol=1e-5)


def test_onnx_loads_with_shape_from_graph(model_files: dict) -> None:
    loaded = load_model(model_files["onnx"])
    assert loaded.format == ModelFormat.ONNX
    assert loaded.is_onnx and loaded.module is None
    assert loaded.input_shape == SHAPE


def test_pickle_is_refused_without_trust(model_files: dict) -> None:
    with pytest.raises(ConfigError, match="full pickled model; loading it would run code") as e:
        load_model(model_files["pickle"], input_shape=SHAPE)
    assert "--trust-pickle" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("key", "kwargs", "message"),
    [
        ("empty", {}, "model file is empty"),
        ("garbage", {}, "is not a model edgeopt can read"),
        ("truncated_onnx", {}, "is not a valid ONNX model"),
        ("truncated_bundle", {}, "is not a model edgeopt can read"),
        ("state_dict", {}, "is a state_dict \\(weights only\\)"),
        ("state_dict", {"arch": "edgeopt.zoo:resnet_small"}, "do not fit architecture"),
        ("state_dict", {"arch": "no_such_module_xyz:net"}, "cannot import 'no_such_module_xyz'"),
        ("state_dict", {"arch": "edgeopt.zoo"}, "invalid architecture reference"),
        ("torchscript", {}, "does not record its input shape"),
        ("pt2_static", {}, "fixed batch size"),
        ("onnx", {"input_shape": (3, 8, 8)}, "does not match the ONNX graph's input"),
    ],
)
def test_bad_models_raise_config_errors(
    model_files: dict, key: str, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_model(model_files[key], **kwargs)
    assert e.value.exit_code == 2


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model file not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match="model path is a directory"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("text", "shape"), [("1,16,16", (1, 16, 16)), ("3x32x32", (3, 32, 32)), ("8", (8,))]
)
def test_parse_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "a,b", "1,-3", "0,4"])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid input shape"):
        parse_shape(text)


@pytest.mark.parametrize(
    ("ref", "builtin"),
    [
        ("edgeopt.zoo:plain_cnn", True),
        ("edgeopt.zoo:resnet_small", True),
        ("edgeopt.zoo:nn.Module", False),
        ("edgeopt.zoo:_conv_bn", False),
        ("edgeopt.zoo_evil:plain_cnn", False),
        ("os:system", False),
    ],
)
def test_only_zoo_builders_are_builtin(ref: str, builtin: bool) -> None:
    assert is_builtin_arch(ref) is builtin


def test_onnx_load_probes_the_model_in_ort(model_files: dict) -> None:
    loaded = load_model(model_files["onnx"])
    assert loaded.output_shape == (1, 10)
    assert model_output_shape(loaded) == (1, 10)
    torch_loaded = load_model(model_files["bundle"])
    assert torch_loaded.output_shape is None
    assert model_output_shape(torch_loaded) == (1, 10)


def test_labels_are_checked_against_the_outputs(model_files: dict) -> None:
    from edgeopt.data import DataBundle

    x = np.zeros((4, *SHAPE), np.float32)
    ok = DataBundle(x, np.array([0, 1, 2, 9]), x, np.array([0, 0, 0, 0]))
    bad = DataBundle(x, np.array([0, 1, 2, 9]), x, np.array([0, 0, 0, 0]), x, np.array([10] * 4))
    for key in ("bundle", "onnx"):
        loaded = load_model(model_files[key])
        check_model_and_data(loaded, ok)
        check_model_and_data(loaded, None)
        with pytest.raises(ConfigError, match=r"labels in y_test go up to 10, but the model has"):
            check_model_and_data(loaded, bad)
