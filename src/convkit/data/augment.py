"""Augmentation on whole batches of uint8 images: no per-image Python."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image (N, C, H, W) by up to `pad` pixels (zeros come in) and mirror it
    left-right with probability 1/2: the CIFAR augmentation of He et al. 2016."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dev = images.device  # the random draws come from a CPU generator, then move
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
    rows = dy[:, None] + torch.arange(h, device=dev)  # (N, H) source row of each output row
    cols = dx[:, None] + torch.arange(w, device=dev)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = padded[
        torch.arange(n, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]
    ]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
