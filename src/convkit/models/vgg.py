"""VGG (Simonyan & Zisserman 2015): only 3x3 convolutions, broken up by 2x2 max pooling,
finished with three fully connected layers. Variants are a table of widths ("M": pool)."""

from __future__ import annotations

from torch import nn

from convkit.models.registry import register

# fmt: off
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
# fmt: on


def make_layers(config: list[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """features -> (adaptive pool to pool_size) -> three dense layers; torchvision's names."""

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int,
        hidden: int,
        pool_size: tuple[int, int] | None,
        flat: int,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size) if pool_size else nn.Identity()
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _vgg(
    config: list[int | str],
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    batch_norm: bool,
) -> VGG:
    """The generic ImageNet VGG builder: adaptive pooling to 7x7, dense 4096-4096;
    `input_size` is unused (the adaptive pool takes any size)."""
    return VGG(make_layers(config, in_channels, batch_norm), num_classes, 4096, (7, 7), 512 * 7 * 7)


def _vgg_cifar(
    config: list[int | str], num_classes: int, in_channels: int, input_size: tuple[int, int]
) -> VGG:
    """The generic 32x32 VGG builder: batch norm after every conv (to train from scratch),
    five pools (32 -> 1), dense 512-512."""
    h, w = input_size
    return VGG(
        make_layers(config, in_channels, True), num_classes, 512, None, 512 * (h // 32) * (w // 32)
    )


@register(
    "vgg11",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-11 (Simonyan & Zisserman, ICLR 2015)",
)
def vgg11(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg11"], num_classes, in_channels, input_size, batch_norm=False)


@register(
    "vgg11_bn",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-11 with batch norm (Simonyan & Zisserman, ICLR 2015)",
)
def vgg11_bn(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg11"], num_classes, in_channels, input_size, batch_norm=True)


@register(
    "vgg13",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-13 (Simonyan & Zisserman, ICLR 2015)",
)
def vgg13(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg13"], num_classes, in_channels, input_size, batch_norm=False)


@register(
    "vgg13_bn",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-13 with batch norm (Simonyan & Zisserman, ICLR 2015)",
)
def vgg13_bn(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg13"], num_classes, in_channels, input_size, batch_norm=True)


@register(
    "vgg16",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-16 (Simonyan & Zisserman, ICLR 2015)",
)
def vgg16(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg16"], num_classes, in_channels, input_size, batch_norm=False)


@register(
    "vgg16_bn",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-16 with batch norm (Simonyan & Zisserman, ICLR 2015)",
)
def vgg16_bn(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg16"], num_classes, in_channels, input_size, batch_norm=True)


@register(
    "vgg19",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-19 (Simonyan & Zisserman, ICLR 2015)",
)
def vgg19(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg19"], num_classes, in_channels, input_size, batch_norm=False)


@register(
    "vgg19_bn",
    family="vgg",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="VGG-19 with batch norm (Simonyan & Zisserman, ICLR 2015)",
)
def vgg19_bn(
    num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224)
) -> nn.Module:
    return _vgg(CONFIGS["vgg19"], num_classes, in_channels, input_size, batch_norm=True)


@register(
    "vgg11-cifar",
    family="vgg",
    input_shape=(3, 32, 32),
    description="VGG-11 for 32x32 images: batch norm, dense 512-512",
)
def vgg11_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _vgg_cifar(CONFIGS["vgg11"], num_classes, in_channels, input_size)


@register(
    "vgg13-cifar",
    family="vgg",
    input_shape=(3, 32, 32),
    description="VGG-13 for 32x32 images: batch norm, dense 512-512",
)
def vgg13_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _vgg_cifar(CONFIGS["vgg13"], num_classes, in_channels, input_size)


@register(
    "vgg16-cifar",
    family="vgg",
    input_shape=(3, 32, 32),
    description="VGG-16 for 32x32 images: batch norm, dense 512-512",
)
def vgg16_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _vgg_cifar(CONFIGS["vgg16"], num_classes, in_channels, input_size)


@register(
    "vgg19-cifar",
    family="vgg",
    input_shape=(3, 32, 32),
    description="VGG-19 for 32x32 images: batch norm, dense 512-512",
)
def vgg19_cifar(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return _vgg_cifar(CONFIGS["vgg19"], num_classes, in_channels, input_size)
