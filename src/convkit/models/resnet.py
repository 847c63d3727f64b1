"""ResNet (He, Zhang, Ren, Sun 2016): stages of residual blocks. Variants are (block, layers).

* ImageNet ResNets in torchvision's layout (stride on the 3x3 conv of bottlenecks, "v1.5").
* ResNet-18/34/50 for 32x32 images: a 3x3 stride-1 stem and no max-pool.
* The paper's CIFAR ResNets (section 4.2): 6n+2 layers, 16/32/64 channels, option-A shortcuts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convkit.models.registry import register


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """Stem, four stages of `layers[i]` blocks (64/128/256/512 planes), global pool, fc."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int,
        in_channels: int,
        small_input: bool = False,
    ):
        super().__init__()
        self.inplanes = 64
        if small_input:  # 32x32: keep the resolution, as is usual for CIFAR
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _resnet(
    block: type[BasicBlock | Bottleneck],
    layers: list[int],
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    small_input: bool = False,
) -> ResNet:
    """The generic ResNet builder; `input_size` is unused (global pooling takes any size)."""
    return ResNet(block, layers, num_classes, in_channels, small_input=small_input)


@register(
    "resnet18",
    family="resnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="ResNet-18, torchvision's layout (He et al., CVPR 2016)",
)
def resnet18(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, input_size)


@register(
    "resnet34",
    family="resnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="ResNet-34, torchvision's layout (He et al., CVPR 2016)",
)
def resnet34(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, input_size)


@register(
    "resnet50",
    family="resnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="ResNet-50, torchvision's layout (He et al., CVPR 2016)",
)
def resnet50(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, input_size)


@register(
    "resnet101",
    family="resnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="ResNet-101, torchvision's layout (He et al., CVPR 2016)",
)
def resnet101(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes, in_channels, input_size)


@register(
    "resnet152",
    family="resnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="ResNet-152, torchvision's layout (He et al., CVPR 2016)",
)
def resnet152(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _resnet(Bottleneck, [3, 8, 36, 3], num_classes, in_channels, input_size)


@register(
    "resnet18-cifar",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-18 for 32x32 images: 3x3 stride-1 stem, no max-pool",
)
def resnet18_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, input_size, small_input=True)


@register(
    "resnet34-cifar",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-34 for 32x32 images: 3x3 stride-1 stem, no max-pool",
)
def resnet34_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, input_size, small_input=True)


@register(
    "resnet50-cifar",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-50 for 32x32 images: 3x3 stride-1 stem, no max-pool",
)
def resnet50_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, input_size, small_input=True)


class ShortcutA(nn.Module):
    """The paper's option A: subsample by 2 and pad the new channels with zeros (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x):
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarBlock(BasicBlock):
    """A basic block whose shortcut, when the shape changes, is option A."""

    def __init__(self, cin: int, planes: int, stride: int = 1):
        shortcut = ShortcutA(planes - cin) if stride != 1 or cin != planes else None
        super().__init__(cin, planes, stride, shortcut)


class CifarResNet(nn.Module):
    """He et al. 2016, section 4.2: 3x3 conv (16), then 3 stages of n blocks at 16/32/64
    channels on 32/16/8 maps, global average pooling, fc: 6n + 2 weighted layers."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = conv3x3(in_channels, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [CifarBlock(cin, planes, stride)] + [
                CifarBlock(planes, planes) for _ in range(n - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)  # the paper's initialisation (He et al. 2015)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def _cifar_resnet(
    depth: int, num_classes: int, in_channels: int, input_size: tuple[int, int]
) -> CifarResNet:
    """The generic CIFAR ResNet builder: `depth` = 6n + 2 weighted layers, n blocks a stage;
    `input_size` is unused (global pooling takes any size)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"expected depth = 6n + 2 with n >= 1, received depth={depth}")
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)


@register(
    "resnet20",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-20 for CIFAR: 3 blocks a stage, 16/32/64 channels, option-A shortcuts "
    "(He et al., CVPR 2016, sec. 4.2)",
)
def resnet20(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _cifar_resnet(20, num_classes, in_channels, input_size)


@register(
    "resnet32",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-32 for CIFAR: 5 blocks a stage, 16/32/64 channels, option-A shortcuts "
    "(He et al., CVPR 2016, sec. 4.2)",
)
def resnet32(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _cifar_resnet(32, num_classes, in_channels, input_size)


@register(
    "resnet44",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-44 for CIFAR: 7 blocks a stage, 16/32/64 channels, option-A shortcuts "
    "(He et al., CVPR 2016, sec. 4.2)",
)
def resnet44(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _cifar_resnet(44, num_classes, in_channels, input_size)


@register(
    "resnet56",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-56 for CIFAR: 9 blocks a stage, 16/32/64 channels, option-A shortcuts "
    "(He et al., CVPR 2016, sec. 4.2)",
)
def resnet56(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _cifar_resnet(56, num_classes, in_channels, input_size)


@register(
    "resnet110",
    family="resnet",
    input_shape=(3, 32, 32),
    description="ResNet-110 for CIFAR: 18 blocks a stage, 16/32/64 channels, option-A shortcuts "
    "(He et al., CVPR 2016, sec. 4.2)",
)
def resnet110(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _cifar_resnet(110, num_classes, in_channels, input_size)
