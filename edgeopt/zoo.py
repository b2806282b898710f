"""Example architectures, used by ``models/`` and the tests.

Two sets, both in ``BUILDERS`` (a bundle refers to a builder by ``edgeopt.zoo:NAME``):

- ``SMALL_BUILDERS``: small models of three CNN families (plain, residual, depthwise), built
  as ``build(in_channels=, num_classes=, width=)`` with ``width`` a channel count; bundles made
  by ``models/build.py``, and the calibration set (``edgeopt.measure.calibrate``).
- ``REAL_BUILDERS``: real architectures written here after their papers, built as
  ``build(in_channels=, num_classes=, width_mult=)``: CIFAR-size (3x32x32) ResNet-18,
  MobileNetV2 and ShuffleNetV2 (whose channel split and shuffle Torch-Pruning cannot follow),
  bundles made on demand by ``models/build_real.py``; and ResNet-18 and MobileNetV2 in their
  ImageNet layout (strided stems, 3x224x224 ends at 7x7) for image folders at full size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from edgeopt.zoo_transformers import bert_text, vit_cifar


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def plain_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 32) -> nn.Module:
    """VGG-style stack of 3x3 conv-BN-ReLU blocks."""
    w = width
    return nn.Sequential(
        *_conv_bn(in_channels, w),
        *_conv_bn(w, w),
        nn.MaxPool2d(2),
        *_conv_bn(w, 2 * w),
        *_conv_bn(2 * w, 2 * w),
        nn.MaxPool2d(2),
        *_conv_bn(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class _BasicResNet(nn.Module):
    """Stem (``stem``, else 3x3 conv-BN-ReLU), stages of ``blocks`` basic blocks of ``widths``
    (each stage but the first starting at stride 2), global average pool, linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, ...],
        blocks: int,
        stem: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem if stem is not None else nn.Sequential(*_conv_bn(in_channels, widths[0]))
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


class ResNetSmall(_BasicResNet):
    """A ResNet with three stages of basic blocks (CIFAR-style stem)."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 32, blocks: int = 2
    ) -> None:
        super().__init__(in_channels, num_classes, (width, 2 * width, 4 * width), blocks)


def resnet_small(
    in_channels: int = 1, num_classes: int = 10, width: int = 32, blocks: int = 2
) -> nn.Module:
    """Residual CNN (ResNet-14-like with ``blocks=2``)."""
    return ResNetSmall(in_channels, num_classes, width, blocks)


def _inverted_residual(
    cin: int, hidden: int, cout: int, stride: int, expand_conv: bool
) -> list[nn.Module]:
    """1x1 expand-BN-ReLU6 (when ``expand_conv``), 3x3 depthwise-BN-ReLU6, linear 1x1
    project-BN: the layers of a MobileNetV2 block."""
    layers: list[nn.Module] = []
    if expand_conv:
        layers += [
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
        ]
    layers += [
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU6(inplace=True),
        nn.Conv2d(hidden, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return layers


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    always_expand = True  # the 1x1 expand conv even at expansion 1

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = _inverted_residual(cin, hidden, cout, stride, self.always_expand or expand != 1)
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_res else out


def mobilenet_small(
    in_channels: int = 1, num_classes: int = 10, width: int = 16, expand: int = 4
) -> nn.Module:
    """Depthwise-separable CNN (MobileNetV2-style inverted residuals)."""
    w = width
    cfg = [(w, 1), (w, 1), (2 * w, 2), (2 * w, 1), (4 * w, 2), (4 * w, 1)]
    layers: list[nn.Module] = [*_conv_bn(in_channels, w)]
    cin = w
    for cout, stride in cfg:
        layers.append(InvertedResidual(cin, cout, stride, expand))
        cin = cout
    layers += [
        nn.Conv2d(cin, 8 * w, 1, bias=False),
        nn.BatchNorm2d(8 * w),
        nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8 * w, num_classes),
    ]
    return nn.Sequential(*layers)


def _divisible(value: float, divisor: int) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), never
    below 90% of ``value`` (MobileNet's ``_make_divisible``)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


class ResNet18Cifar(_BasicResNet):
    """ResNet-18 for 32x32 inputs: 3x3 stride-1 stem, no max-pool, basic blocks [2, 2, 2, 2]
    of widths ``w, 2w, 4w, 8w`` (``w = 64 * width_mult``), global average pool, linear head."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
    ) -> None:
        w = _divisible(64 * width_mult, 4)
        super().__init__(in_channels, num_classes, (w, 2 * w, 4 * w, 8 * w), 2)


def resnet18_cifar(
    in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
) -> nn.Module:
    """CIFAR-style ResNet-18 (11.2 M parameters at ``width_mult=1``)."""
    return ResNet18Cifar(in_channels, num_classes, width_mult)


class ResNet18ImageNet(_BasicResNet):
    """ResNet-18 as in the paper for 224x224 inputs: 7x7 stride-2 stem and a 3x3 stride-2
    max-pool, then ``ResNet18Cifar``'s stages (so 224 ends at 7x7)."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
    ) -> None:
        w = _divisible(64 * width_mult, 4)
        stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 7, 2, 3, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        super().__init__(in_channels, num_classes, (w, 2 * w, 4 * w, 8 * w), 2, stem)


def resnet18_imagenet(
    in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
) -> nn.Module:
    """ImageNet-layout ResNet-18 (1.82 G MACs at 224x224 and ``width_mult=1``)."""
    return ResNet18ImageNet(in_channels, num_classes, width_mult)


class InvertedResidualV2(InvertedResidual):
    """MobileNetV2 block as in the paper: 1x1 expand (left out at expansion 1), 3x3 depthwise,
    linear 1x1 project, ReLU6; identity residual when stride is 1 and channels match."""

    always_expand = False


# (expansion, channels, repeats, stride of the first block): the paper's table (a stride-2
# stem makes five stride-2 steps, 224 -> 7), and the CIFAR variant with the stem and the second
# stage at stride 1, so 32x32 inputs end at 4x4 (three stride-2 stages)
_MOBILENETV2_IMAGENET = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_MOBILENETV2_CIFAR = ((1, 16, 1, 1), (6, 24, 2, 1), *_MOBILENETV2_IMAGENET[2:])


class _MobileNetV2(nn.Module):
    """MobileNetV2: 3x3 stem of 32 channels at ``stem_stride``, the inverted residual stages of
    ``table``, a 1x1 conv to ``last`` channels, global average pool, dropout-free linear
    head. Channel counts scale with ``width_mult`` (rounded to multiples of 8)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width_mult: float,
        table: tuple[tuple[int, int, int, int], ...],
        stem_stride: int,
        last: int,
    ) -> None:
        super().__init__()
        cin = _divisible(32 * width_mult, 8)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, cin, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(inplace=True),
        ]
        for expand, channels, repeats, stride in table:
            cout = _divisible(channels * width_mult, 8)
            for i in range(repeats):
                layers.append(InvertedResidualV2(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [
            nn.Conv2d(cin, last, 1, bias=False),
            nn.BatchNorm2d(last),
            nn.ReLU6(inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class MobileNetV2Cifar(_MobileNetV2):
    """MobileNetV2 for 32x32 inputs: stride-1 stem, the paper's inverted residual stages
    (expansion 6) at strides 1, 1, 2, 2, 1, 2, 1, a 1x1 conv to 1280 channels. Every channel
    count scales with ``width_mult``, the last conv's too, so tests can build tiny versions."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
    ) -> None:
        last = _divisible(1280 * width_mult, 8)
        super().__init__(in_channels, num_classes, width_mult, _MOBILENETV2_CIFAR, 1, last)


class MobileNetV2ImageNet(_MobileNetV2):
    """MobileNetV2 as in the paper for 224x224 inputs: stride-2 stem, stages at strides
    1, 2, 2, 2, 1, 2, 1 (224 ends at 7x7), and, as in the paper, the last conv keeps 1280
    channels when ``width_mult`` < 1 (it scales up above 1)."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
    ) -> None:
        last = _divisible(1280 * max(1.0, width_mult), 8)
        super().__init__(in_channels, num_classes, width_mult, _MOBILENETV2_IMAGENET, 2, last)


def mobilenetv2_cifar(
    in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
) -> nn.Module:
    """CIFAR-style MobileNetV2 (2.2 M parameters at ``width_mult=1``)."""
    return MobileNetV2Cifar(in_channels, num_classes, width_mult)


def mobilenetv2_imagenet(
    in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
) -> nn.Module:
    """ImageNet-layout MobileNetV2 (300 M MACs at 224x224 and ``width_mult=1``, 97 M at 0.5)."""
    return MobileNetV2ImageNet(in_channels, num_classes, width_mult)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: (N, g*c, H, W) -> view (N, g, c, H, W) -> transpose the
    group axes -> (N, c*g, H, W), so each group's channels are spread over all groups."""
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. Stride 1: split the channels in two halves (``chunk``), keep one,
    transform the other (1x1, 3x3 depthwise, 1x1), concatenate, shuffle. Stride 2: both
    branches see the whole input (the left one a 3x3 depthwise stride 2 then 1x1), doubling
    the channels; concatenate, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cout % 2 or (stride == 1 and cin != cout):
            raise ValueError(f"ShuffleUnit({cin}, {cout}, stride={stride}): bad channel counts")
        self.stride = stride
        half = cout // 2
        self.branch1: nn.Module = nn.Identity()
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            nn.Conv2d(b2_in, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Cifar(nn.Module):
    """ShuffleNetV2 1.0x for 32x32 inputs: 3x3 stride-1 stem of 24 channels and no max-pool,
    then stages of 4, 8, 4 units of 116, 232, 464 channels (each starting at stride 2), a
    1x1 conv to 1024, global average pool, linear head. Channel counts scale with
    ``width_mult`` (multiples of 4, so halves stay even)."""

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        cin = _divisible(24 * width_mult, 4)
        self.stem = nn.Sequential(*_conv_bn(in_channels, cin))
        stages: list[nn.Module] = []
        for channels, repeats in ((116, 4), (232, 8), (464, 4)):
            cout = _divisible(channels * width_mult, 4)
            units = [ShuffleUnit(cin, cout, 2)] + [
                ShuffleUnit(cout, cout, 1) for _ in range(repeats - 1)
            ]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stages = nn.Sequential(*stages)
        last = _divisible(1024 * width_mult, 4)
        self.conv_last = nn.Sequential(
            nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU(inplace=True)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_last(self.stages(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))


def shufflenetv2_cifar(
    in_channels: int = 3, num_classes: int = 10, width_mult: float = 1.0
) -> nn.Module:
    """CIFAR-style ShuffleNetV2 1.0x (1.3 M parameters at ``width_mult=1``)."""
    return ShuffleNetV2Cifar(in_channels, num_classes, width_mult)


Builder = Callable[..., nn.Module]

SMALL_BUILDERS: dict[str, Builder] = {
    "plain_cnn": plain_cnn,
    "resnet_small": resnet_small,
    "mobilenet_small": mobilenet_small,
}
"""The small families: ``build(in_channels=, num_classes=, width=)``, ``width`` a channel
count. The calibration set (``example_models``) takes these."""

REAL_BUILDERS: dict[str, Builder] = {
    "resnet18_cifar": resnet18_cifar,
    "mobilenetv2_cifar": mobilenetv2_cifar,
    "shufflenetv2_cifar": shufflenetv2_cifar,
    "resnet18_imagenet": resnet18_imagenet,
    "mobilenetv2_imagenet": mobilenetv2_imagenet,
}
"""Real architectures, ``*_cifar`` laid out for 3x32x32 and ``*_imagenet`` for 3x224x224 (any
size works): ``build(in_channels=, num_classes=, width_mult=)``."""

TRANSFORMER_BUILDERS: dict[str, Builder] = {"vit_cifar": vit_cifar, "bert_text": bert_text}
"""``edgeopt.zoo_transformers``: a ViT-class image classifier (``build(in_channels=,
num_classes=, width_mult=, qkv=)``) and a BERT-class text classifier whose ``forward`` takes
``input_ids`` and ``attention_mask``."""

BUILDERS: dict[str, Builder] = {**SMALL_BUILDERS, **REAL_BUILDERS, **TRANSFORMER_BUILDERS}
"""Every builder a bundle may name as ``edgeopt.zoo:NAME`` without ``--trust-arch``."""
