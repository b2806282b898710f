"""The real example architectures: sizes, forward shapes, ONNX export parity, bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt import zoo
from edgeopt.estimate import estimate
from edgeopt.loading import load_model, save_bundle
from edgeopt.onnx_export import export_onnx
from edgeopt.profiles import load_profile
from edgeopt.stages.prune_preflight import preflight

REAL_SHAPE = (3, 32, 32)
TINY = 0.125
IMAGENET = ("mobilenetv2_imagenet", "resnet18_imagenet")

# builder -> (parameters at width_mult 1 with 10 classes, what the papers' CIFAR versions have)
FULL_PARAMS = {
    "resnet18_cifar": 11_173_962,  # ~11.2 M
    "mobilenetv2_cifar": 2_236_682,  # ~2.2 M
    "shufflenetv2_cifar": 1_263_854,  # ~1.3 M
    # torchvision's 3,504,872 and 11,689,512 less the 1000-class heads' difference
    "mobilenetv2_imagenet": 2_236_682,
    "resnet18_imagenet": 11_181_642,
}
# a shape each layout downsamples cleanly (the ImageNet ones by 32)
SHAPES = {name: (3, 64, 64) if name in IMAGENET else REAL_SHAPE for name in FULL_PARAMS}


def _tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    return zoo.BUILDERS[name](width_mult=TINY).eval()


def test_registries() -> None:
    assert set(zoo.REAL_BUILDERS) == set(FULL_PARAMS)
    assert zoo.BUILDERS == {**zoo.SMALL_BUILDERS, **zoo.REAL_BUILDERS, **zoo.TRANSFORMER_BUILDERS}
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


def test_imagenet_layouts_end_at_7x7() -> None:
    x = torch.zeros(1, 3, 224, 224)
    m = zoo.mobilenetv2_imagenet(num_classes=1000)
    assert isinstance(m, zoo.MobileNetV2ImageNet)
    assert m.features[0].stride == (2, 2)
    depthwise = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert sum(c.stride == (2, 2) for c in depthwise) == 4  # and the stem: 224 / 32 = 7
    assert len([b for b in m.modules() if isinstance(b, zoo.InvertedResidualV2)]) == 17
    r = zoo.resnet18_imagenet(num_classes=1000)
    stem = r.stem[0]
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((7, 7), (2, 2), 64)
    assert isinstance(r.stem[3], nn.MaxPool2d) and r.stem[3].stride == 2
    blocks = [b for b in r.layers if isinstance(b, zoo.BasicBlock)]
    assert [b.conv2.out_channels for b in blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    with torch.no_grad():
        assert tuple(m.eval().features(x).shape) == (1, 1280, 7, 7)
        assert tuple(r.eval().layers(r.stem(x)).shape) == (1, 512, 7, 7)
    # the paper keeps MobileNetV2's last conv at 1280 channels below width 1
    assert zoo.mobilenetv2_imagenet(width_mult=0.5).classifier.in_features == 1280
    assert zoo.mobilenetv2_cifar(width_mult=0.5).classifier.in_features == 640


def _hand_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Conv and linear MACs by the textbook formula: output elements x (input channels /
    groups) x kernel area, and in x out features, from hooks on the modules."""
    total = 0

    def hook(mod: nn.Module, _i: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out.numel() * mod.in_channels // mod.groups * kh * kw
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return total


# (builder, width_mult, side, MACs in the units the literature gives them, that unit)
KNOWN_MACS = [
    ("mobilenetv2_imagenet", 1.0, 224, 301, 1e6),  # paper 300 M; torchvision 300.77 M
    ("mobilenetv2_imagenet", 0.5, 224, 97, 1e6),  # paper: 97 M
    ("resnet18_imagenet", 1.0, 224, 1.81, 1e9),  # torchvision: 1.81 G (1.82 with BN counted)
    ("resnet18_imagenet", 1.0, 112, 0.49, 1e9),
]


@pytest.mark.parametrize(("name", "width", "side", "known", "unit"), KNOWN_MACS)
def test_imagenet_macs_by_edgeopt_s_estimator(
    name: str, width: float, side: int, known: float, unit: float, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = zoo.BUILDERS[name](num_classes=1000, width_mult=width).eval()
    shape = (3, side, side)
    onnx_path = export_onnx(model, shape, tmp_path / "m.onnx")
    macs = estimate(onnx_path, load_profile("cpu")).macs
    assert macs == _hand_macs(model, shape)
    assert round(macs / unit, 2 if unit == 1e9 else 0) == known, macs


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_layouts_prune_whole(name: str) -> None:
    torch.manual_seed(0)
    result = preflight(zoo.BUILDERS[name](width_mult=TINY).eval(), (3, 64, 64), time_limit_s=90)
    assert result.prunable, result.reason
    assert result.ignored_layers == ()  # Torch-Pruning follows every group
    assert "pruned 10%" in result.reason


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
    shape = SHAPES[name]
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    assert tuple(out.shape) == (2, 10)
    # export_onnx runs the file in ONNX Runtime and raises unless it matches torch
    path = export_onnx(model, shape, tmp_path / f"{name}.onnx", check_inputs=x.numpy())
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, out.numpy(), atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(FULL_PARAMS))
def test_tiny_bundle_round_trip(name: str, tmp_path: Path) -> None:
    model = _tiny(name)
    kwargs = {"in_channels": 3, "num_classes": 10, "width_mult": TINY}
    shape = SHAPES[name]
    path = save_bundle(
        model,
        tmp_path / f"{name}.pt",
        arch=f"edgeopt.zoo:{name}",
        arch_kwargs=kwargs,
        input_shape=shape,
    )
    loaded = load_model(path)  # a zoo builder loads without --trust-arch
    assert loaded.input_shape == shape
    x = torch.randn(1, *shape)
    with torch.no_grad():
        assert torch.equal(loaded.module.eval()(x), model(x))
