"""AlexNet (Krizhevsky, Sutskever, Hinton 2012), in torchvision's single-tower layout."""

from __future__ import annotations

from torch import nn

from convkit.models.registry import register


class AlexNet(nn.Module):
    """Module names and shapes are torchvision's, so its checkpoints load unchanged."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


class AlexNetSmall(nn.Module):
    """AlexNet's five-conv / three-dense shape for 32x32 images: 3x3 and 5x5 kernels, stride 1,
    three 2x2 max-pools (32 -> 4), dense 1024-512 (the widths shrunk for 10 classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size=(32, 32)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        h, w = input_size
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(256 * (h // 8) * (w // 8), 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(1024, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


@register(
    "alexnet",
    family="alexnet",
    input_shape=(3, 224, 224),
    num_classes=1000,
    description="AlexNet, torchvision's layout (Krizhevsky, Sutskever, Hinton, NeurIPS 2012)",
)
def alexnet(num_classes: int = 1000, in_channels: int = 3, input_size=(224, 224)) -> nn.Module:
    return AlexNet(num_classes, in_channels)


@register(
    "alexnet-cifar",
    family="alexnet",
    input_shape=(3, 32, 32),
    description="AlexNet's shape for 32x32 images: 3x3/5x5 convs, stride 1, dense 1024-512",
)
def alexnet_cifar(num_classes: int = 10, in_channels: int = 3, input_size=(32, 32)) -> nn.Module:
    return AlexNetSmall(num_classes, in_channels, input_size)
