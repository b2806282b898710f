"""Small example architectures of three CNN families, used by ``models/`` and the tests.

Bundles made by ``models/build.py`` refer to these builders by ``edgeopt.zoo:NAME``.
"""

from __future__ import annotations

from torch import Tensor, nn


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


class ResNetSmall(nn.Module):
    """A ResNet with three stages of basic blocks (CIFAR-style stem)."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 32, blocks: int = 2
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, width))
        layers: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


def resnet_small(
    in_channels: int = 1, num_classes: int = 10, width: int = 32, blocks: int = 2
) -> nn.Module:
    """Residual CNN (ResNet-14-like with ``blocks=2``)."""
    return ResNetSmall(in_channels, num_classes, width, blocks)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

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


BUILDERS = {
    "plain_cnn": plain_cnn,
    "resnet_small": resnet_small,
    "mobilenet_small": mobilenet_small,
}
