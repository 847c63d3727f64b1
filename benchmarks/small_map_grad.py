"""A convolution's weight gradient: oneDNN's against one matmul over gathered patches.

    python benchmarks/small_map_grad.py [--batch 2000]

For each 3x3 convolution of `cifar10-fast` at its shape in a 32 x 32 and in a 26 x 26 step
(bf16 and channels_last where the CPU has native bf16, as `convkit train` picks), the
milliseconds of: PyTorch's input and weight gradients in one call (what autograd runs for an
nn.Conv2d), its input gradient alone, its weight gradient alone, and `weight_grad` below (the
image patches gathered into one (images x positions, 9 x channels) matrix, times the output
gradients); "saved" is what a training step would save by taking the input gradient alone plus
the gathered weight gradient on maps of at most SMALL_MAP positions. Then the rounding error
of both weight gradients against the exact (fp64) one on the last layer's shape. Best of 3
after one untimed call, with convkit's malloc setting; nothing else should run meanwhile.

An experiment of 2026-12-07 (benchmarks/RESULTS.md): faster on 3 x 3 maps, but cifar10-fast
trained with it averaged 93.89% over 10 runs against 94.06% over 7 seeds with PyTorch's
gradient, so convkit does not use it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench import machine, machine_line, matmul_peak  # noqa: E402
from cifar10_fast_step import timed  # noqa: E402

from convkit.train.engine import cpu_has_native_bf16, keep_freed_memory  # noqa: E402

SMALL_MAP = 9  # output positions (3 x 3) up to which the gathered way clearly won here
GATHER_BYTES = 256 << 20  # bytes of gathered patches per matmul (batches above it go in chunks)

# (input channels, output channels, map side) of cifar10-fast's 3x3 convolutions
SHAPES = {
    32: [(24, 64, 31), (64, 64, 15), (64, 256, 15), (256, 256, 7), (256, 256, 7), (256, 256, 3)],
    26: [(24, 64, 25), (64, 64, 12), (64, 256, 12), (256, 256, 6), (256, 256, 6), (256, 256, 3)],
}


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


def best_ms(fn) -> float:
    return 1e3 * timed(fn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2000, help="images a step (the recipe's)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.manual_seed(0)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(machine_line(machine(), peaks), flush=True)
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    cl = torch.channels_last
    print(
        f"\nbatch {args.batch}, {dtype}; milliseconds; * = taken the gathered way (maps <= {SMALL_MAP} positions)"
    )
    print(f"{'step':>5} {'conv':>16} {'map':>5} {'both':>7} {'input':>7} {'weight':>7} "
          f"{'gathered':>9} {'saved':>7}")  # fmt: skip
    for side, shapes in SHAPES.items():
        saved = 0.0
        for cin, cout, h in shapes:
            x = torch.randn(args.batch, cin, h, h, dtype=dtype).contiguous(memory_format=cl)
            w = torch.randn(cout, cin, 3, 3, dtype=dtype).contiguous(memory_format=cl)
            g = torch.randn(args.batch, cout, h, h, dtype=dtype).contiguous(memory_format=cl)

            def native(mask, g=g, x=x, w=w):
                return lambda: torch.ops.aten.convolution_backward(
                    g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
                )

            both = best_ms(native([True, True, False]))
            only_input = best_ms(native([True, False, False]))
            only_weight = best_ms(native([False, True, False]))
            gathered = best_ms(lambda g=g, x=x: weight_grad(g, x, 3, 1))
            taken = h * h <= SMALL_MAP
            gain = both - (only_input + gathered) if taken else 0.0
            saved += gain
            print(f"{side:>5} {f'{cin}->{cout}':>16} {f'{h}x{h}':>5} {both:7.1f} {only_input:7.1f} "
                  f"{only_weight:7.1f} {gathered:8.1f}{'*' if taken else ' '} {gain:7.1f}",
                  flush=True)  # fmt: skip
        print(f"{side:>5} saved a step on maps of <= {SMALL_MAP} positions: {saved:.1f} ms")
    x = torch.randn(200, 256, 3, 3, dtype=dtype).contiguous(memory_format=cl)
    w = torch.randn(256, 256, 3, 3, dtype=dtype).contiguous(memory_format=cl)
    g = torch.randn(200, 256, 3, 3, dtype=dtype).contiguous(memory_format=cl)
    exact = torch.nn.grad.conv2d_weight(x.double(), w.shape, g.double(), padding=1)
    pytorchs = torch.ops.aten.convolution_backward(
        g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]
    for name, got in (("PyTorch's", pytorchs), ("gathered", weight_grad(g, x, 3, 1))):
        error = ((got.double() - exact).norm() / exact.norm()).item()
        print(f"relative error of {name} weight gradient, 200 images on 3 x 3 maps: {error:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
