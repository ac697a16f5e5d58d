"""Stand-ins for model-zoo code, written here because the real packages cannot be imported in tests.

kuangliu/pytorch-cifar style networks (``F.relu`` calls in ``forward``), a hand-built SPOCU twin of
the ResNet, and activation classes that carry timm's and Hugging Face's module paths and class names.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """kuangliu's ResNet BasicBlock: two ``F.relu`` calls in forward, no activation module."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class ResNet(nn.Module):
    """kuangliu's ResNet18 layout, narrow and with two stages (9 ``F.relu`` calls per forward)."""

    def __init__(self, width: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, 2, 1)
        self.layer2 = self._make_layer(2 * width, 2, 2)
        self.linear = nn.Linear(2 * width, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(self.block(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    block = BasicBlock

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class HandBlock(BasicBlock):
    """The BasicBlock written with activation modules: what a swap must be equal to."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, make=None) -> None:
        super().__init__(in_planes, planes, stride)
        self.act1, self.act2 = make(), make()

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return self.act2(out)


class HandResNet(ResNet):
    def __init__(self, make, width: int = 4, num_classes: int = 10) -> None:
        self.block = lambda i, p, s: HandBlock(i, p, s, make)
        super().__init__(width, num_classes)
        self.act = make()

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class Root(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, xs):
        return F.relu(self.bn(self.conv(torch.cat(xs, 1))))


class Tree(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, level: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.root = Root(2 * out_channels, out_channels)
        if level == 1:
            self.left_tree = BasicBlock(in_channels, out_channels, stride=stride)
            self.right_tree = BasicBlock(out_channels, out_channels, stride=1)
        else:
            self.left_tree = Tree(in_channels, out_channels, level=level - 1, stride=stride)
            self.right_tree = Tree(out_channels, out_channels, level=level - 1, stride=1)

    def forward(self, x):
        out1 = self.left_tree(x)
        out2 = self.right_tree(out1)
        return self.root([out1, out2])


class SimpleDLA(nn.Module):
    """kuangliu's dla_simple.py SimpleDLA, narrow: 3 ``nn.ReLU`` modules and 32 ``F.relu`` calls per forward."""

    def __init__(self, w: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.base = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True))
        self.layer1 = nn.Sequential(nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True))
        self.layer2 = nn.Sequential(
            nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(True),
        )
        self.layer3 = Tree(2 * w, 4 * w, level=1, stride=1)
        self.layer4 = Tree(4 * w, 8 * w, level=2, stride=2)
        self.layer5 = Tree(8 * w, 16 * w, level=2, stride=2)
        self.layer6 = Tree(16 * w, 32 * w, level=1, stride=2)
        self.linear = nn.Linear(32 * w, num_classes)

    def forward(self, x):
        out = self.layer2(self.layer1(self.base(x)))
        out = self.layer6(self.layer5(self.layer4(self.layer3(out))))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


class MobileBlock(nn.Module):
    """kuangliu's MobileNetV2 block shape: ``F.relu`` calls only (no module to find)."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 2 * channels, 1, bias=False)
        self.conv2 = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels, bias=False)
        self.conv3 = nn.Conv2d(2 * channels, channels, 1, bias=False)

    def forward(self, x):
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return self.conv3(out) + x


def third_party(package_module: str, name: str, function) -> type:
    """A stand-in activation class that looks like ``package_module.name`` (timm's, Hugging Face's)."""

    def forward(self, x):
        return function(x)

    return type(
        name,
        (nn.Module,),
        {"forward": forward, "__module__": package_module, "__qualname__": name},
    )
