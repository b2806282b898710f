"""The real example architectures: sizes, forward shapes, ONNX export parity, bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.loading import load_model, save_bundle
from edgeopt.onnx_export import export_onnx

REAL_SHAPE = (3, 32, 32)
TINY = 0.125

# builder -> (parameters at width_mult 1 with 10 classes, what the papers' CIFAR versions have)
FULL_PARAMS = {
    "resnet18_cifar": 11_173_962,  # ~11.2 M
    "mobilenetv2_cifar": 2_236_682,  # ~2.2 M
    "shufflenetv2_cifar": 1_263_854,  # ~1.3 M
}


def _tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return zoo.BUILDERS[name](width_mult=TINY).eval()


def test_registries() -> None:
    assert set(zoo.REAL_BUILDERS) == set(FULL_PARAMS)
    assert zoo.BUILDERS == {**zoo.SMALL_BUILDERS, **zoo.REAL_BUILDERS}
    assert set(zoo.SMALL_BUILDERS) == {"plain_cnn", "resnet_small", "mobilenet_small"}


@pytest.mark.parametrize("name", sorted(FULL_PARAMS))
def test_full_width_parameter_counts(name: str) -> None:
    model = zoo.BUILDERS[name]()
    assert sum(p.numel() for p in model.parameters()) == FULL_PARAMS[name]


def test_resnet18_layout() -> None:
    m = zoo.resnet18_cifar()
    assert isinstance(m, zoo.ResNet18Cifar)
    stem = m.stem[0]
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((3, 3), (1, 1), 64)
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())
    blocks = [b for b in m.layers if isinstance(b, zoo.BasicBlock)]
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]


def test_mobilenetv2_layout() -> None:
    m = zoo.mobilenetv2_cifar()
    blocks = [b for b in m.modules() if isinstance(b, zoo.InvertedResidualV2)]
    assert len(blocks) == 17
    assert any(isinstance(x, nn.ReLU6) for x in m.modules())
    depthwise = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert sum(c.stride == (2, 2) for c in depthwise) == 3  # 32 -> 4
    assert len(blocks[0].block) == 5  # expansion 1: no expanding 1x1 conv (as in the paper)
    assert blocks[1].block[0].out_channels == 6 * blocks[1].block[0].in_channels  # expansion 6
    assert m.classifier.in_features == 1280


def test_shufflenetv2_splits_and_shuffles() -> None:
    m = zoo.shufflenetv2_cifar()
    units = [u for u in m.modules() if isinstance(u, zoo.ShuffleUnit)]
    assert [u.stride for u in units].count(2) == 3 and len(units) == 16
    assert units[-1].branch2[0].in_channels == 464 // 2  # stride 1: half the channels
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert zoo.channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


@pytest.mark.parametrize("name", sorted(FULL_PARAMS))
def test_tiny_forward_and_onnx_parity(name: str, tmp_path: Path) -> None:
    model = _tiny(name)
    x = torch.randn(2, *REAL_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (2, 10)
    # export_onnx runs the file in ONNX Runtime and raises unless it matches torch
    path = export_onnx(model, REAL_SHAPE, tmp_path / f"{name}.onnx", check_inputs=x.numpy())
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, out.numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(FULL_PARAMS))
def test_tiny_bundle_round_trip(name: str, tmp_path: Path) -> None:
    model = _tiny(name)
    kwargs = {"in_channels": 3, "num_classes": 10, "width_mult": TINY}
    path = save_bundle(
        model,
        tmp_path / f"{name}.pt",
        arch=f"edgeopt.zoo:{name}",
        arch_kwargs=kwargs,
        input_shape=REAL_SHAPE,
    )
    loaded = load_model(path)  # a zoo builder loads without --trust-arch
    assert loaded.input_shape == REAL_SHAPE
    x = torch.randn(1, *REAL_SHAPE)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), model(x))
