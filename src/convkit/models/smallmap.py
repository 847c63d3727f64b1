"""A 3x3 convolution whose weight gradient is one matmul when its feature map is small.

On the CPU, oneDNN computes a convolution's weight gradient far below the rate of its forward
pass when the map is small: for cifar10-fast's last layer (256 -> 256 channels on 3 x 3 maps,
batch 2,000, bf16) 105-112 ms at 0.2 TFLOP/s against 14 ms for the forward pass, the slowest
convolution of a step (benchmarks/RESULTS.md, "Where a step goes with AMX"). Gathering the
image patches into one (images x positions, 9 x channels) matrix and multiplying the output
gradients by it takes 32 ms for that layer, and 134 against 168 ms for 6 x 6 maps; at 7 x 7
and larger, gathering the patches costs more than it saves (`benchmarks/small_map_grad.py`).

`SmallMapConv2d` is an `nn.Conv2d` (same parameters, state-dict keys and forward pass); only
its training step on the CPU, for maps of at most `SMALL_MAP` positions, takes this way to the
weight gradient. Everywhere else (GPU, evaluation, export, larger maps) it is PyTorch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP = 36  # output positions (6 x 6) up to which the gathered matmul beat oneDNN here
GATHER_BYTES = 128 << 20  # images per matmul so that their gathered patches stay this small


def weight_grad(grad: torch.Tensor, x: torch.Tensor, kernel: int, padding: int) -> torch.Tensor:
    """The weight gradient of a stride-1 convolution (N, C, H, W) -> (N, Co, H', W'): the
    output gradients (Co, N H' W') times the gathered input patches (N H' W', k k C), summed
    in fp32 over chunks of images; returned as (Co, C, k, k) in `x`'s dtype."""
    n, c = x.shape[:2]
    co, oh, ow = grad.shape[1:]
    g = grad.permute(0, 2, 3, 1).reshape(n * oh * ow, co).t().contiguous()  # (Co, N H' W')
    xp = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # (N, H + 2p, W + 2p, C)
    per_image = oh * ow * kernel * kernel * c * x.element_size()
    chunk = max(1, min(n, GATHER_BYTES // per_image))
    total = None
    for start in range(0, n, chunk):
        part = xp[start : start + chunk]
        patches = torch.cat(  # (images, H', W', k k C), ordered (row, column, channel)
            [part[:, i : i + oh, j : j + ow] for i in range(kernel) for j in range(kernel)], dim=3
        ).reshape(-1, kernel * kernel * c)
        rows = g[:, start * oh * ow : (start + len(part)) * oh * ow]
        product = rows @ patches  # (Co, k k C)
        total = product.float() if total is None else total.add_(product)
    assert total is not None
    return total.view(co, kernel, kernel, c).permute(0, 3, 1, 2).to(x.dtype)


class _GatheredWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        with torch.autocast("cpu", enabled=False):  # the caller cast both to one dtype
            return F.conv2d(x, weight, None, 1, padding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        p, k = ctx.padding, weight.shape[-1]
        grad = grad.to(x.dtype)
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            gw = weight_grad(grad, x, k, p)
        return gx, gw, None


class SmallMapConv2d(nn.Conv2d):
    """nn.Conv2d (square kernel, stride 1, symmetric padding, no groups, no bias) whose CPU
    training step takes the gathered-matmul weight gradient on maps of <= SMALL_MAP positions."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def _gathered(self, x: torch.Tensor) -> bool:
        if not (torch.is_grad_enabled() and self.weight.requires_grad) or x.device.type != "cpu":
            return False
        if x.dim() != 4 or torch.jit.is_tracing() or torch.jit.is_scripting():
            return False
        p, k = self.padding[0], self.kernel_size[0]
        return (x.shape[-2] + 2 * p - k + 1) * (x.shape[-1] + 2 * p - k + 1) <= SMALL_MAP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._gathered(x):
            return super().forward(x)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return _GatheredWeightGrad.apply(x.to(dtype), self.weight.to(dtype), self.padding[0])
