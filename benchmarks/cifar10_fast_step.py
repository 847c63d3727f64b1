"""Where a training step of `cifar10-fast` spends its time on this CPU.

    python benchmarks/cifar10_fast_step.py [--batch 2000] [--json OUT.json]

Three measurements, one after the other (nothing else should run meanwhile), with the model,
precision and memory layout that `convkit train cifar10-fast` picks here and convkit's malloc
setting (`keep_freed_memory`):
  steps     seconds of a forward and backward pass of one batch (no optimizer, no data), at
            32 x 32 and at the recipe's 26 x 26 low-resolution start, and the share of the
            bf16 (or fp32) matmul peak that the step's convolution arithmetic reaches
  ops       torch.profiler over three 32 x 32 steps: self time a step per operator, grouped
            (convolutions forward, convolution gradients, BatchNorm, GELU, pooling, zero
            fills, the rest)
  convs     each convolution of the network at its own shape in the step: seconds and TFLOP/s
            of its forward pass, its input gradient and its weight gradient, each timed alone

FLOPs count 2 per multiply-accumulate; a convolution's forward pass, its input gradient and its
weight gradient are each one such count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench import machine, machine_line, matmul_peak  # noqa: E402

from convkit.models import create_model  # noqa: E402
from convkit.train import get_recipe  # noqa: E402
from convkit.train.engine import cpu_has_native_bf16, keep_freed_memory  # noqa: E402

GROUPS = (  # (group, words in the operator's name), first match wins
    ("convolution gradients", ("convolution_backward", "convolutionbackward")),
    ("convolutions forward", ("convolution",)),
    ("BatchNorm", ("batch_norm", "batchnorm")),
    ("GELU", ("gelu",)),
    ("pooling", ("pool",)),
    ("zero fills", ("fill_", "zero_")),
)


PROFILED_STEPS = 3  # after one untimed step


def timed(fn, repeats: int = 3) -> float:
    """Seconds of fn(), the best of `repeats` after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def conv_shapes(model: nn.Module, images: torch.Tensor) -> list[tuple[nn.Conv2d, tuple, tuple]]:
    """Each convolution of `model` with the shapes of its input and output for `images`."""
    seen: list[tuple[nn.Conv2d, tuple, tuple]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, args, out: seen.append((mod, tuple(args[0].shape), tuple(out.shape)))
        )
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2000, help="images a step (the recipe's)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.manual_seed(0)
    info = machine()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(machine_line(info, peaks), flush=True)
    bf16 = cpu_has_native_bf16()
    precision = "bf16" if bf16 else "fp32"
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = create_model("cifar10-fast").to(memory_format=torch.channels_last)
    low_res = get_recipe("cifar10-fast").config().low_res

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()

    def batch(side: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(args.batch, 3, side, side).contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, 10, (args.batch,))

    def step(x, y):
        model.zero_grad(set_to_none=True)
        with autocast():
            out = model(x)
        F.cross_entropy(out.float(), y, label_smoothing=0.2).backward()

    report: dict = dict(machine=info, peak_gflops=peaks, precision=precision, batch=args.batch)
    print(f"\nsteps ({precision}, batch {args.batch}, forward and backward)")
    report["steps"] = []
    for side in (32, low_res):
        x, y = batch(side)
        passes = []  # (forward FLOPs of a convolution for one image, its weight trains)
        for conv, _, out in conv_shapes(model, x[:1]):
            passes.append((2 * conv.weight.numel() * out[-2] * out[-1], conv.weight.requires_grad))
        # forward, weight gradient where it trains, input gradient but for the first layer's
        per_image = sum(f * (1 + trains) for f, trains in passes) + sum(f for f, _ in passes[1:])
        flops = args.batch * per_image
        seconds = timed(lambda x=x, y=y: step(x, y))
        share = flops / seconds / (peaks[precision] * 1e9)
        report["steps"].append(dict(side=side, seconds=seconds, flops=flops, share=share))
        print(f"  {side} x {side}: {seconds:.3f} s, {flops / 1e12:.2f} TFLOP of convolutions, "
              f"{100 * share:.0f}% of the {precision} peak")  # fmt: skip

    x, y = batch(32)
    from torch.profiler import ProfilerActivity, profile

    step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(PROFILED_STEPS):
            step(x, y)
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        name = event.key.lower()
        group = next((g for g, words in GROUPS if any(w in name for w in words)), "the rest")
        groups[group] += event.self_cpu_time_total / 1e6 / PROFILED_STEPS
    total = sum(groups.values())
    report["ops"] = dict(groups)
    print(f"\nops (32 x 32 steps under torch.profiler, {total:.3f} s of self time a step)")
    for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<24} {seconds:7.3f} s  {100 * seconds / total:4.0f}%")

    print(f"\nconvs (each alone at its shape in a 32 x 32 step, {precision})")
    print(f"  {'input':<22} {'filters':<10} {'forward':>16} {'input grad':>16} {'weight grad':>16}")
    report["convs"] = []
    for conv, shape, _ in conv_shapes(model, x[:1]):
        assert not isinstance(conv.padding, str), "padding given as a number of pixels"
        xi = torch.randn(args.batch, *shape[1:], dtype=dtype)
        xi = xi.contiguous(memory_format=torch.channels_last)
        w = conv.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        out = F.conv2d(xi, w, stride=conv.stride, padding=conv.padding)
        g = torch.randn_like(out)
        flops = 2 * w.numel() * out.shape[-2] * out.shape[-1] * args.batch
        common = (conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups)

        def grad(mask, g=g, xi=xi, w=w, common=common):
            return lambda: torch.ops.aten.convolution_backward(g, xi, w, None, *common, mask)

        def forward(xi=xi, w=w, conv=conv):
            return F.conv2d(xi, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)

        times = {  # the first layer's input gradient, and its frozen weight's, never run
            "forward": timed(forward),
            "input grad": timed(grad([True, False, False])),
            "weight grad": timed(grad([False, True, False])),
        }
        row = dict(input=list(shape[1:]), filters=list(w.shape), flops=flops, seconds=times)
        report["convs"].append(row)
        cells = " ".join(
            f"{1e3 * s:7.1f} ms {flops / s / 1e12:4.2f}T" for s in times.values()
        )  # fmt: skip
        filters = "x".join(map(str, w.shape))
        print(f"  {str(shape[1:]):<22} {filters:<10} {cells}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
