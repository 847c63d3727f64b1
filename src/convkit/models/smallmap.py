"""A convolution whose weight gradient is one matmul when its feature map is small.

On the CPU, oneDNN computes a convolution's weight gradient far below the rate of its forward
pass when the map is small: for cifar10-fast's last layer (256 -> 256 channels on 3 x 3 maps,
batch 2,000, bf16) 105 ms at 0.2 TFLOP/s against 14 ms for the forward pass, the slowest
convolution of a step. Gathering the image patches into one (images x positions, 9 x channels)
matrix and multiplying the output gradients by it takes 34 ms for that layer, with the same
rounding error as PyTorch's own (bf16: 1.7e-3 of the gradient, as rounding the exact one).
On 6 x 6 maps it saved only 16-19 ms of 163, and only with the batch gathered in chunks, whose
bf16 partial sums raised the error to 2.4e-3; at 7 x 7 and larger, gathering the patches costs
more than it saves (`benchmarks/small_map_grad.py`, benchmarks/RESULTS.md, 2026-12-07).

`SmallMapConv2d` is an `nn.Conv2d` (same parameters, state-dict keys and forward pass); only
its training step (train mode, gradients on, the weight trainable) on the CPU, for maps of at
most `SMALL_MAP` positions, takes this way to the weight gradient. Everywhere else (GPU,
evaluation and Grad-CAM in eval mode, export, larger maps) it is PyTorch's own convolution.
Double backward and TorchScript are not supported on the gathered way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SMALL_MAP = 9  # output positions (3 x 3) up to which the gathered matmul clearly beat oneDNN
GATHER_BYTES = 256 << 20  # bytes of gathered patches per matmul (batches above it go in chunks)


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
    """nn.Conv2d (square kernel, stride 1, the same padding on every side, no groups, no bias)
    whose CPU training step takes the gathered-matmul weight gradient on maps of <= SMALL_MAP
    positions."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int):
        for name, value, least in (("kernel_size", kernel_size, 1), ("padding", padding, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"expected {name} as an int >= {least}, received {value!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=False)

    def _dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype the gathered way computes in, or None where PyTorch's convolution runs."""
        if not (self.training and torch.is_grad_enabled() and self.weight.requires_grad):
            return None
        if x.device.type != "cpu" or x.dim() != 4 or x.shape[0] == 0:
            return None
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_exporting():
            return None
        p, k = self.padding[0], self.kernel_size[0]
        if (x.shape[-2] + 2 * p - k + 1) * (x.shape[-1] + 2 * p - k + 1) > SMALL_MAP:
            return None
        dtype = x.dtype  # autocast's rule: float32 computes in its dtype, others as they are
        if torch.is_autocast_enabled("cpu") and dtype == torch.float32:
            dtype = torch.get_autocast_dtype("cpu")
        weight = self.weight.dtype
        if torch.is_autocast_enabled("cpu") and weight == torch.float32:
            weight = torch.get_autocast_dtype("cpu")
        return dtype if weight == dtype else None  # a mismatch: let F.conv2d say so

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype(x)
        if dtype is None:
            return super().forward(x)
        return _GatheredWeightGrad.apply(x.to(dtype), self.weight.to(dtype), self.padding[0])
