"""Multi-layer perceptrons: the lecture's 512-512-10 network for MNIST."""

from __future__ import annotations

import math

from torch import nn

from convkit.models.layers import Dense, Dropout, Flatten, keras_sequential
from convkit.models.registry import register


def mlp(
    in_features: int, hidden: tuple[int, ...], num_classes: int, dropout: float
) -> nn.Sequential:
    """Flatten -> [Dense(h, ReLU) -> Dropout] per hidden width -> Dense(num_classes), Keras-named."""
    layers: list[nn.Module] = [Flatten()]
    width = in_features
    for h in hidden:
        layers += [Dense(width, h, activation="relu"), Dropout(dropout)]
        width = h
    layers.append(Dense(width, num_classes))  # logits; the softmax is in the loss
    return keras_sequential(layers)


@register(
    "mnist-mlp",
    family="mlp",
    input_shape=(1, 28, 28),
    description="The lecture's 512-512-10 MLP with dropout 0.2 (Keras MNIST example)",
)
def mnist_mlp(
    num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (28, 28)
) -> nn.Module:
    return mlp(in_channels * math.prod(input_size), (512, 512), num_classes, dropout=0.2)
