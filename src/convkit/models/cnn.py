"""Small convolutional networks: the lecture's CIFAR-10 CNN, and a CNN that beats the MLP on MNIST."""

from __future__ import annotations

from torch import nn

from convkit.models.layers import (
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool,
    flat_features,
    keras_sequential,
)
from convkit.models.registry import register


def conv_classifier(
    features: list[nn.Module],
    in_shape: tuple[int, int, int],
    hidden: int,
    dropout: float,
    num_classes: int,
) -> nn.Sequential:
    """features -> Flatten -> Dense(hidden, ReLU) -> Dropout -> Dense(num_classes), Keras-named.

    The first Dense layer's input size is measured by running the features once, not computed
    by hand, so the same definition serves any input size.
    """
    flat = flat_features(nn.Sequential(*features, Flatten()), in_shape)
    head = [Flatten(), Dense(flat, hidden, activation="relu"), Dropout(dropout)]
    return keras_sequential([*features, *head, Dense(hidden, num_classes)])


@register(
    "cifar10-cnn",
    family="cnn",
    input_shape=(3, 32, 32),
    description="The lecture's CIFAR-10 CNN: Conv2D 16/32/64 (2x2, 'same') with 2x2 max pooling, "
    "dropout 0.3, dense 500, dropout 0.4 (Udacity AIND Keras notebook)",
)
def cifar10_cnn(
    num_classes: int = 10, in_channels: int = 3, input_size: tuple[int, int] = (32, 32)
) -> nn.Module:
    features = [
        Conv2D(in_channels, 16, 2, padding="same", activation="relu"),
        MaxPool(2),
        Conv2D(16, 32, 2, padding="same", activation="relu"),
        MaxPool(2),
        Conv2D(32, 64, 2, padding="same", activation="relu"),
        MaxPool(2),
        Dropout(0.3),
    ]
    return conv_classifier(features, (in_channels, *input_size), 500, 0.4, num_classes)


@register(
    "mnist-cnn",
    family="cnn",
    input_shape=(1, 28, 28),
    description="A small CNN that keeps spatial information: two 5x5 conv + 2x2 max-pool stages "
    "(16, 32 filters), dense 128; 8x fewer parameters than the MLP (after LeCun et al. 1998)",
)
def mnist_cnn(
    num_classes: int = 10, in_channels: int = 1, input_size: tuple[int, int] = (28, 28)
) -> nn.Module:
    features = [
        Conv2D(in_channels, 16, 5, activation="relu"),  # 28 -> 24
        MaxPool(2),  # -> 12
        Conv2D(16, 32, 5, activation="relu"),  # -> 8
        MaxPool(2),  # -> 4
        Dropout(0.1),
    ]
    return conv_classifier(features, (in_channels, *input_size), 128, 0.25, num_classes)
