"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998): the first convolutional network to work."""

from __future__ import annotations

from torch import nn

from convkit.models.registry import register


class LeNet5(nn.Module):
    """C1 conv 6@5x5 -> S2 pool -> C3 conv 16@5x5 -> S4 pool -> F5 120 -> F6 84 -> output.

    Tanh activations and average-pool subsampling as in the paper (its trainable subsampling
    coefficients and RBF output layer are replaced by plain pooling and a linear layer, as is
    usual). The paper's input is 32x32; smaller inputs (MNIST's 28x28) are zero-padded to 32,
    as the paper padded MNIST.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size=(32, 32)):
        super().__init__()
        h, w = input_size
        if h > 32 or w > 32:
            raise ValueError(
                f"expected input at most 32x32, received input_size={tuple(input_size)}"
            )
        top, left = (32 - h) // 2, (32 - w) // 2
        self.pad = nn.ZeroPad2d((left, 32 - w - left, top, 32 - h - top))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),  # 32 -> 28
            nn.Tanh(),
            nn.AvgPool2d(2),  # -> 14
            nn.Conv2d(6, 16, 5),  # -> 10
            nn.Tanh(),
            nn.AvgPool2d(2),  # -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(self.pad(x)))


@register(
    "lenet5",
    family="lenet",
    input_shape=(1, 32, 32),
    description="LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, 120-84-10 "
    "(LeCun et al., Proc. IEEE 1998); 28x28 input is padded to 32",
)
def lenet5(num_classes: int = 10, in_channels: int = 1, input_size=(32, 32)) -> nn.Module:
    return LeNet5(num_classes, in_channels, input_size)
