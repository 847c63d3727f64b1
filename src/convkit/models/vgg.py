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


def vgg(name: str, batch_norm: bool, num_classes: int, in_channels: int) -> VGG:
    """ImageNet VGG: adaptive pooling to 7x7, dense 4096-4096."""
    return VGG(
        make_layers(CONFIGS[name], in_channels, batch_norm), num_classes, 4096, (7, 7), 512 * 7 * 7
    )


def vgg_small(name: str, num_classes: int, in_channels: int, input_size) -> VGG:
    """32x32 VGG: batch norm after every conv (to train from scratch), five pools (32 -> 1),
    dense 512-512."""
    h, w = input_size
    return VGG(
        make_layers(CONFIGS[name], in_channels, True),
        num_classes,
        512,
        None,
        512 * (h // 32) * (w // 32),
    )


def _register_vgg(name: str) -> None:
    depth = name[3:]
    for bn in (False, True):
        full = name + ("_bn" if bn else "")

        def build(num_classes=1000, in_channels=3, input_size=(224, 224), name=name, bn=bn):
            return vgg(name, bn, num_classes, in_channels)

        register(
            full,
            family="vgg",
            input_shape=(3, 224, 224),
            num_classes=1000,
            description=f"VGG-{depth}{' with batch norm' if bn else ''} "
            f"(Simonyan & Zisserman, ICLR 2015)",
        )(build)

    def build_small(num_classes=10, in_channels=3, input_size=(32, 32), name=name):
        return vgg_small(name, num_classes, in_channels, input_size)

    register(
        f"{name}-cifar",
        family="vgg",
        input_shape=(3, 32, 32),
        description=f"VGG-{depth} for 32x32 images: batch norm, dense 512-512",
    )(build_small)


for _name in CONFIGS:
    _register_vgg(_name)
