"""Small BatchNorm CNNs sized for the shortest time to accuracy on a CPU.

Each stage is conv 3x3 -> 2x2 max-pool -> BatchNorm -> ReLU. Pooling straight after the
convolution (as airbench, Jordan 2024, does) lets BatchNorm and ReLU work on a quarter of the
pixels: on a 2-core CPU those memory-bound layers, not the convolutions, are most of a small
network's step. The convolutions have no bias (BatchNorm's shift replaces it), and one linear
layer reads the last stage's features.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
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


# ---- cifar10-fast: the network of the CIFAR-10 speed records, in our own code ---------------------
#
# The ideas are those of airbench (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU"),
# which descends from tysam-code's hlb-CIFAR10 and Page's 2018 DAWNBench network:
# - a first 2x2 convolution fixed to whiten the pixels' 2x2 patches (its filters are the patch
#   covariance's eigenvectors scaled by 1/sqrt(eigenvalue), and their negatives, so a GELU after
#   it keeps both signs); only its bias trains;
# - three blocks of conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU, widths
#   64, 256, 256, the convolutions without bias and partly initialised to the identity (the first
#   in_channels filters pass their input through);
# - BatchNorm with its scale fixed at 1 (only the shift trains), eps 1e-12 and a short memory
#   (torch momentum 0.4: the running statistics follow the last few batches);
# - a global max-pool and a linear classifier without bias whose weights start at unit std and
#   whose output is divided by the number of features.


class FixedScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose scale stays 1: only the shift (bias) is trained."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class Scale(nn.Module):
    """Multiplies by a constant (kept in the module, not in the state dict)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def _identity_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():  # the first cin filters copy their input: each block starts near identity
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=_identity_conv(cin, cout),
            pool=nn.MaxPool2d(2),
            bn1=FixedScaleBatchNorm(cout),
            act1=nn.GELU(),
            conv2=_identity_conv(cout, cout),
            bn2=FixedScaleBatchNorm(cout),
            act2=nn.GELU(),
        )
    )


class WhitenedCNN(nn.Sequential):
    """whiten (2x2, fixed) -> GELU -> three blocks -> global max-pool -> linear / features.

    `fit_whitening(images)` sets the first layer from training images (standardized floats);
    until then it is a plain random convolution."""

    def __init__(
        self, widths: tuple[int, int, int], num_classes: int, in_channels: int, patch: int = 2
    ) -> None:
        whiten_width = 2 * in_channels * patch * patch
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["whiten"] = nn.Conv2d(in_channels, whiten_width, patch, padding=0, bias=True)
        layers["act0"] = nn.GELU()
        cin = whiten_width
        for i, width in enumerate(widths, start=1):
            layers[f"block{i}"] = _block(cin, width)
            cin = width
        layers["pool"] = nn.AdaptiveMaxPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["classifier"] = nn.Linear(cin, num_classes, bias=False)
        layers["scale"] = Scale(1.0 / cin)
        super().__init__(layers)
        self.whiten.weight.requires_grad_(False)
        with torch.no_grad():
            nn.init.zeros_(self.whiten.bias)
            self.classifier.weight.div_(self.classifier.weight.std())

    @torch.no_grad()
    def fit_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whiten the first layer on `images` (N, C, H, W float, standardized as in training):
        filters V / sqrt(lambda + eps) and their negatives, from the eigen-decomposition of the
        covariance of every k x k patch."""
        w = self.whiten.weight
        half, c, k = w.shape[0] // 2, w.shape[1], w.shape[2]
        x = images.to(torch.float64)
        patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
        filters = filters.reshape(half, c, k, k).to(w.dtype)
        w.copy_(torch.cat([filters, -filters]))


@register(
    "cifar10-fast",
    family="fast",
    input_shape=(3, 32, 32),
    description="airbench's CIFAR-10 network (Jordan 2024) in our own code: a fixed whitening "
    "2x2 convolution, three conv-pool-BatchNorm-GELU blocks of 64, 256, 256 filters, a global "
    "max-pool and a linear classifier (the cifar10-fast recipe: 94% on CIFAR-10)",
)
def cifar10_fast(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    if min(input_size) < 9:  # 2x2 whitening, then three 2x2 pools
        raise ValueError(f"cifar10-fast needs images of at least 9x9 pixels, received {input_size}")
    return WhitenedCNN((64, 256, 256), num_classes, in_channels)
