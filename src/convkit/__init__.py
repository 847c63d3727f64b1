"""convkit: train, understand and use image classifiers, from the lecture's MNIST MLP to ResNet."""

__version__ = "0.1.0"
