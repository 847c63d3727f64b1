"""Small BatchNorm CNNs sized for the shortest time to accuracy on a CPU.

Each stage is conv 3x3 -> 2x2 max-pool -> BatchNorm -> ReLU. Pooling straight after the
convolution (as airbench, Jordan 2024, does) lets BatchNorm and ReLU work on a quarter of the
pixels: on a 2-core CPU those memory-bound layers, not the convolutions, are most of a small
network's step. The convolutions have no bias (BatchNorm's shift replaces it), and one linear
layer reads the last stage's features.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from convkit.models.layers import flat_features
from convkit.models.registry import register


def fast_cnn(
    widths: tuple[int, ...], num_classes: int, in_channels: int, input_size: tuple[int, int]
) -> nn.Sequential:
    """Stages of conv 3x3 -> max-pool -> BatchNorm -> ReLU with `widths` channels, then a
    linear classifier; the layers are named conv1, pool1, bn1, relu1, conv2, ..."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin = in_channels
    for i, cout in enumerate(widths, start=1):
        layers[f"conv{i}"] = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        layers[f"bn{i}"] = nn.BatchNorm2d(cout)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        cin = cout
    layers["flatten"] = nn.Flatten()
    flat = flat_features(nn.Sequential(layers), (in_channels, *input_size))
    layers["classifier"] = nn.Linear(flat, num_classes)
    return nn.Sequential(layers)


@register(
    "mnist-fast",
    family="fast",
    input_shape=(1, 28, 28),
    description="Three conv-pool-BatchNorm-ReLU stages (16, 32, 64 filters) and a linear "
    "classifier: 99% on MNIST in one epoch (the mnist-fast recipe)",
)
def mnist_fast(
    num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (28, 28)
) -> nn.Module:
    return fast_cnn((16, 32, 64), num_classes, in_channels, input_size)


@register(
    "cifar10-quick",
    family="fast",
    input_shape=(3, 32, 32),
    description="mnist-fast's network on colour images (16, 32, 64 filters, 4x4x64 features): "
    "the lecture's 68% on CIFAR-10 in seconds (the cifar10-quick recipe)",
)
def cifar10_quick(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    return fast_cnn((16, 32, 64), num_classes, in_channels, input_size)
