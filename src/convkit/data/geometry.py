"""Whole-batch geometric transforms of uint8 images (N, C, H, W), as the datasets store them.

Used to test a trained model on moved, turned and resized copies of its test set
(`convkit robustness`) and by the web page. Each is one array operation over the batch: no
Python loop per image. Pixels that come in from outside the image are 0, the background of
MNIST's digits, so nothing but the transform itself changes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from convkit.errors import ConfigError


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected uint8 images (N, C, H, W), received {images.dtype} of shape "
            f"{tuple(images.shape)}"
        )


def translate(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Every image moved `dx` pixels right and `dy` pixels down (negative: left, up); the
    vacated rows and columns are 0. Exact: a copy of array slices, no resampling."""
    _check_images(images)
    h, w = images.shape[-2:]
    out = torch.zeros_like(images)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    src_y, dst_y = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    src_x, dst_x = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[..., dst_y, dst_x] = images[..., src_y, src_x]
    return out


def check_max_shift(max_shift: int, image_shape: tuple[int, int, int]) -> None:
    """A shift must leave part of the image in the frame: 0 <= K < min(H, W)."""
    _, h, w = image_shape
    if not 0 <= max_shift < min(h, w):
        raise ConfigError(
            f"expected 0 <= max_shift < {min(h, w)} for {h}x{w} images (a shift of "
            f"{min(h, w)} pixels or more leaves nothing in the frame), received "
            f"max_shift={max_shift}"
        )


def affine(images: torch.Tensor, angle: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """Every image turned `angle` degrees counterclockwise (as seen on screen) and magnified
    `scale` times about its centre, resampled bilinearly; outside pixels are 0. Rounded back
    to uint8. A turn by a multiple of 90 degrees of a square image moves pixel centres onto
    pixel centres, so it equals torch.rot90 exactly."""
    _check_images(images)
    if not scale > 0:
        raise ConfigError(f"expected scale > 0, received scale={scale}")
    if angle == 0 and scale == 1:
        return images.clone()
    n, _, h, w = images.shape
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    # theta maps output coordinates to input ones (normalised to [-1, 1], x right, y down). A
    # counterclockwise turn on screen, with y pointing down, is the clockwise matrix here; the
    # aspect ratio enters because x and y are normalised by different sizes.
    theta = torch.tensor(
        [[cos / scale, -sin * h / w / scale, 0.0], [sin * w / h / scale, cos / scale, 0.0]],
        dtype=torch.float32,
    )
    x = images.float()
    grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def rotate(images: torch.Tensor, angle: float) -> torch.Tensor:
    """`affine` with a turn only."""
    return affine(images, angle=angle)


def rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """`affine` with a magnification only (below 1: smaller, with a frame of 0)."""
    return affine(images, scale=scale)
