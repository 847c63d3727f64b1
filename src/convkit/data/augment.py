"""Augmentation on whole batches of uint8 images: no per-image Python.

An augmentation is called as augment(images, indices, epoch): the batch (N, C, H, W), which
samples of the split they are (N,), and the 1-based epoch, for those that depend on them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor, pad: int, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Shift each image (N, C, H, W) by up to `pad` pixels (zeros come in) and, with `flip`,
    mirror it left-right with probability 1/2: the CIFAR augmentation of He et al. 2016.
    Without `flip`, shifts only (digits and text: a mirrored 2 is not a 2)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dev = images.device  # the random draws come from a CPU generator, then move
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (N, H) source row of each output row
    cols = dx[:, None] + torch.arange(w, device=dev)  # (N, W)
    if flip:
        mirrored = (torch.rand(n, generator=generator) < 0.5).to(dev)
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    return _gather(padded, rows, cols)


def random_resized_crop_flip(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """A random part of each image (N, C, H, W) stretched back to H x W, mirrored with
    probability 1/2: Inception's random resized crop (Szegedy et al. 2015), the photo
    augmentation of ImageNet training. The part covers `scale` of the image's area (uniform),
    its width over height is `ratio` (log-uniform), both clipped to the image; it is sampled
    bilinearly (the edge repeated where a pixel's footprint overhangs), all images at once."""
    n, c, h, w = images.shape
    area = torch.empty(n).uniform_(*scale, generator=generator)
    aspect = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = aspect.exp() * (h / w)  # in pixels -> in shares of the width and the height
    cw, ch = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    # centres in [-1, 1] coordinates, the part inside the image
    cx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - cw)
    cy = (torch.rand(n, generator=generator) * 2 - 1) * (1 - ch)
    mirrored = torch.rand(n, generator=generator) < 0.5
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = torch.where(mirrored, -cw, cw), cx
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy
    grid = F.affine_grid(theta.to(images.device), [n, c, h, w], align_corners=False)
    out = F.grid_sample(images.float(), grid, "bilinear", "border", align_corners=False)
    return out.round_().clamp_(0, 255).to(images.dtype)


class ResizedCropFlip:
    """random_resized_crop_flip as an augmentation of the training loop."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        return random_resized_crop_flip(images, self.generator)


def translate_pad(image_shape: tuple[int, ...]) -> int:
    """How far `translate` shifts: a tenth of the shorter side, rounded up (3 pixels for
    MNIST's 28x28, 4 for CIFAR's 32x32, as crop-flip)."""
    return max(1, -(-min(image_shape[-2:]) // 10))


class CropFlip:
    """random_crop_flip as an augmentation of the training loop."""

    def __init__(self, pad: int, generator: torch.Generator, flip: bool = True) -> None:
        self.pad, self.generator, self.flip = pad, generator, flip

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        return random_crop_flip(images, self.pad, self.generator, self.flip)


class FlipTranslate:
    """Alternating flips and small translations (airbench, Jordan 2024).

    Each image of the split draws once whether it starts mirrored; from then on it is mirrored
    in every other epoch, so any two epochs running see it both ways (random flips would show
    half of the images the same way in both). Each batch is also shifted by up to `pad`
    pixels each way, the border reflected in (no black edges). The start flips come from
    `seed` alone and the shifts from `generator`, so a resumed run draws the same ones."""

    def __init__(self, n: int, pad: int, generator: torch.Generator, seed: int) -> None:
        self.pad, self.generator = pad, generator
        self.start_flipped = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        n, _, h, w = images.shape
        dev, pad = images.device, self.pad
        flip = self.start_flipped[indices.cpu()] ^ (epoch % 2 == 0)  # epochs 1, 3... as drawn
        dy = torch.randint(-pad, pad + 1, (n,), generator=self.generator)
        dx = torch.randint(-pad, pad + 1, (n,), generator=self.generator)
        rows = _reflect(dy[:, None] + torch.arange(h), h)  # (N, H) source row of each row
        cols = _reflect(dx[:, None] + torch.arange(w), w)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        return _gather(images, rows.to(dev), cols.to(dev))


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside 0..size-1 mirrored back in, the edge pixel not repeated (as 'reflect'
    padding): -1 -> 1, size -> size - 2. Shifts stay below size."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


def _gather(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, :, r, c] = images[n, :, rows[n, r], cols[n, c]], in one indexing."""
    n = len(images)
    out = images[
        torch.arange(n, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]
    ]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class LowResolutionStart:
    """Progressive resolution: in the first `epochs` epochs, a random `size` x `size` crop of
    each image that `inner` (if any) made; later epochs get `inner`'s images whole.

    A network that ends in a global pool takes any size, and a convolution's cost follows the
    pixels, so early steps on 24 x 24 crops of 32 x 32 images cost about half as much. Crops,
    not downscaled images: objects keep the size they have at test time."""

    def __init__(self, inner, size: int, epochs: int, generator: torch.Generator) -> None:
        self.inner, self.size, self.epochs, self.generator = inner, size, epochs, generator

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.inner is not None:
            images = self.inner(images, indices, epoch)
        n, _, h, w = images.shape
        if epoch > self.epochs or self.size >= min(h, w):
            return images
        dev, size = images.device, self.size
        dy = torch.randint(0, h - size + 1, (n,), generator=self.generator)
        dx = torch.randint(0, w - size + 1, (n,), generator=self.generator)
        rows = (dy[:, None] + torch.arange(size)).to(dev)
        cols = (dx[:, None] + torch.arange(size)).to(dev)
        return _gather(images, rows, cols)
