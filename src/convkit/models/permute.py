"""A fixed shuffle of every image's pixels, in front of a model: the lecture's experiment on what
flattening loses. An MLP sees a vector either way and learns permuted images as well as the
originals; a CNN's local filters find no neighbourhoods left to use.

The shuffle is a forward pre-hook, so the model's weights and their names are unchanged, and
everything that calls the model (training, evaluation, prediction, export, the web page, the
analyses) feeds it the same permuted pixels from the original images.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def pixel_permutation(seed: int, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """The permutation of C*H*W positions that `seed` draws (the same on every machine)."""
    c, h, w = image_shape
    return torch.randperm(c * h * w, generator=torch.Generator().manual_seed(seed))


def permutation_digest(permutation: torch.Tensor) -> str:
    """SHA-256 of the permutation's int64 values: kept with the weights, so a later PyTorch
    whose random numbers differ cannot silently shuffle another way."""
    return hashlib.sha256(permutation.to(torch.int64).numpy().tobytes()).hexdigest()


def permute_pixels(x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> the same shape, position i taking the value at permutation[i]."""
    flat = x.reshape(x.shape[0], -1)
    out = flat.index_select(1, permutation.to(x.device)).reshape(x.shape)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def attach_pixel_permutation(
    model: nn.Module, seed: int, image_shape: tuple[int, int, int]
) -> nn.Module:
    """`model`, with its inputs permuted by `pixel_permutation(seed, image_shape)` first."""
    permutation = pixel_permutation(seed, image_shape)

    def hook(_module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        if tuple(x.shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"this model was trained on pixel-permuted {'x'.join(map(str, image_shape))} "
                f"images and takes only that size, received {tuple(x.shape[1:])}"
            )
        return (permute_pixels(x, permutation), *rest)

    model.register_forward_pre_hook(hook)
    model.pixel_permutation = permutation  # for the analyses that want to show it
    return model
