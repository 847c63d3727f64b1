"""Conv arithmetic: for each layer the shapes, padding, output-size formula, receptive field, jump,
parameters and multiply-accumulates, computed as data from one forward pass.

Receptive field per spatial dimension, in input pixels, layer by layer (Araujo et al. 2019):
    rf'    = rf + (k_eff - 1) * jump       k_eff = (k - 1) * dilation + 1
    jump'  = jump * stride                 input pixels between neighbouring outputs
    start' = start - pad_before * jump     input coordinate where output 0's field begins
so output i of a layer sees input pixels [start + i * jump, start + i * jump + rf - 1] (clipped
to the image: padding lies outside it). Flatten, Dense and global pooling see the whole input.
Layers on a residual shortcut (named downsample or shortcut) are listed, but the chain follows
the main path, whose field contains the shortcut's and whose jump is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from convkit.inspect.trace import trace
from convkit.models.layers import BlurPool, Conv2D, GlobalAvgPool, MaxPool, layer_pads

Pair = tuple[int, int]
SHORTCUT_NAMES = ("downsample", "shortcut")


@dataclass(frozen=True)
class LayerArithmetic:
    name: str
    type: str
    input_shape: tuple[int, ...]  # (C, H, W) or (features,), without the batch dimension
    output_shape: tuple[int, ...]
    kernel: Pair | None  # (height, width); None for layers that do not slide a window
    stride: Pair | None
    dilation: Pair | None
    padding: tuple[int, int, int, int] | None  # pixels added (top, bottom, left, right)
    formula: tuple[str, str] | None  # the output-size formula for H and for W, numbers filled in
    receptive_field: Pair  # input pixels one output sees (height, width)
    jump: Pair | None  # input pixels between neighbouring outputs; None once spatial is gone
    start: Pair  # input (row, col) where the field of output (0, 0) begins; negative: padding
    params: int
    macs: int  # multiply-accumulates per image

    def to_dict(self) -> dict[str, Any]:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}
        if self.padding is not None:
            d["padding"] = dict(zip(("top", "bottom", "left", "right"), self.padding, strict=True))
        return d


@dataclass(frozen=True)
class Arithmetic:
    model: str
    input_shape: tuple[int, int, int]
    layers: tuple[LayerArithmetic, ...]
    total_params: int
    total_macs: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
            "total_params": self.total_params,
            "total_macs": self.total_macs,
        }


def _pair(v: Any) -> Pair:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # type: ignore[return-value]


def _window(
    m: nn.Module, h: int, w: int
) -> tuple[Pair, Pair, Pair, tuple[int, int, int, int]] | None:
    """(kernel, stride, dilation, pads) of a sliding-window layer at input (h, w), else None."""
    if isinstance(m, (Conv2D, MaxPool)):
        return _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation), m.pads(h, w)
    if isinstance(m, BlurPool):
        # A 2x2 max at stride 1, then a 3x3 blur at stride 2 over one reflected pixel a side:
        # together a 4x4 window at stride 2 padded by 1 (output floor(n / 2), as MaxPool(2)).
        return (4, 4), (2, 2), (1, 1), (1, 1, 1, 1)
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _pair(m.kernel_size), _pair(m.stride)
        d = _pair(getattr(m, "dilation", 1))
        pad = m.padding
        pads = layer_pads(pad if isinstance(pad, str) else _pair(pad), h, w, k, s, d)
        return k, s, d, pads
    if isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        oh, ow = _pair(m.output_size)
        oh, ow = oh or h, ow or w
        if h % oh == 0 and w % ow == 0:  # an ordinary pooling window then
            return (h // oh, w // ow), (h // oh, w // ow), (1, 1), (0, 0, 0, 0)
    return None


def output_size(
    n: int, before: int, after: int, k_eff: int, stride: int, ceil: bool = False
) -> int:
    """Output length of a sliding window over n inputs padded by before/after pixels."""
    span = n + before + after - k_eff
    out = (-(-span // stride) if ceil else span // stride) + 1
    if ceil and (out - 1) * stride >= n + before:  # PyTorch: the last window must start inside
        out -= 1
    return out


def _formula(n: int, before: int, after: int, k_eff: int, s: int, ceil: bool) -> str:
    rounding = "ceil" if ceil else "floor"
    out = output_size(n, before, after, k_eff, s, ceil)
    return f"{rounding}(({n} + {before} + {after} - {k_eff}) / {s}) + 1 = {out}"


def _macs(m: nn.Module, out_shape: tuple[int, ...]) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return math.prod(out_shape) * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    if isinstance(m, BlurPool):  # the blur: one 3x3 filter per channel (a depthwise convolution)
        return math.prod(out_shape) * 9
    return 0


def _is_global(m: nn.Module) -> bool:
    if isinstance(m, (nn.Flatten, nn.Linear, GlobalAvgPool)):
        return True
    return isinstance(m, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d) and _pair(m.output_size) == (
        1,
        1,
    )


def explain(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> Arithmetic:
    """Conv arithmetic of every leaf layer of `model`, in the order they run, for one (C, H, W) input."""
    calls = [
        (c.name, c.module, c.input_shape, c.output_shape)
        for c in trace(model, input_shape, name)
        if c.input_shape and c.output_shape
    ]

    _, H, W = input_shape
    rf, jump, start = (1, 1), (1, 1), (0, 0)
    spatial = True  # until something flattens or pools globally
    rows = []
    for qual, m, ishape, oshape in calls:
        kernel = stride = dil = pads = formula = None
        on_shortcut = any(part in SHORTCUT_NAMES for part in qual.split("."))
        sliding = spatial and len(ishape) == 3 and not _is_global(m)  # global pools are not windows
        win = _window(m, ishape[1], ishape[2]) if sliding else None
        if win is not None:
            kernel, stride, dil, pads = win
            k_eff = tuple((kernel[i] - 1) * dil[i] + 1 for i in range(2))
            ceil = bool(getattr(m, "ceil_mode", False))
            formula = tuple(
                _formula(ishape[1 + i], pads[2 * i], pads[2 * i + 1], k_eff[i], stride[i], ceil)
                for i in range(2)
            )
            if not on_shortcut:  # the chain follows the main path (see the module docstring)
                rf = tuple(rf[i] + (k_eff[i] - 1) * jump[i] for i in range(2))
                start = tuple(start[i] - pads[2 * i] * jump[i] for i in range(2))
                jump = tuple(jump[i] * stride[i] for i in range(2))
        elif spatial and _is_global(m):
            spatial = False
            rf, start = (H, W), (0, 0)  # every output now depends on the whole image
        rows.append(
            LayerArithmetic(
                name=qual,
                type=type(m).__name__,
                input_shape=ishape,
                output_shape=oshape,
                kernel=kernel,
                stride=stride,
                dilation=dil,
                padding=pads,
                formula=formula,
                receptive_field=rf,
                jump=jump if spatial else None,
                start=start,
                params=sum(p.numel() for p in m.parameters(recurse=False)),
                macs=_macs(m, oshape),
            )
        )
    total = sum(p.numel() for p in model.parameters())
    return Arithmetic(name, tuple(input_shape), tuple(rows), total, sum(r.macs for r in rows))


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _fmt_pair(p: Pair | None) -> str:
    return "-" if p is None else (str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}")


def format_arithmetic(a: Arithmetic) -> list[str]:
    """The arithmetic as a table; each sliding layer is followed by its output-size formula."""
    head = (
        "Layer (type)",
        "Input",
        "Output",
        "Kernel",
        "Stride",
        "Pad t,b,l,r",
        "RF",
        "Jump",
        "Params",
        "MACs",
    )
    cells = []
    for r in a.layers:
        pad = "-" if r.padding is None else ",".join(map(str, r.padding))
        cells.append(
            (
                f"{r.name} ({r.type})",
                _fmt_shape(r.input_shape),
                _fmt_shape(r.output_shape),
                _fmt_pair(r.kernel),
                _fmt_pair(r.stride),
                pad,
                _fmt_pair(r.receptive_field),
                _fmt_pair(r.jump),
                f"{r.params:,}",
                f"{r.macs:,}",
            )
        )
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(len(head))]

    def fmt(c: tuple[str, ...]) -> str:
        return "  ".join(
            v.ljust(widths[i]) if i < 8 else v.rjust(widths[i]) for i, v in enumerate(c)
        )

    lines = [
        f'Conv arithmetic of "{a.model}" for input (C, H, W) = ({", ".join(map(str, a.input_shape))})',
        fmt(head),
        "-" * len(fmt(head)),
    ]
    for r, c in zip(a.layers, cells, strict=True):
        lines.append(fmt(c))
        if r.formula is not None:
            fh, fw = r.formula
            lines.append(f"    out H = {fh}" + ("" if fh == fw else f";  out W = {fw}"))
    lines += [
        "-" * len(fmt(head)),
        f"Total params: {a.total_params:,}",
        f"Total MACs per image: {a.total_macs:,} ({a.total_macs / 1e6:.2f} M)",
        "RF: receptive field, input pixels one output sees; Jump: input pixels between "
        "neighbouring outputs; padding pixels are added (top, bottom, left, right).",
    ]
    return lines


def print_arithmetic(a: Arithmetic, print_fn: Callable[[str], None] = print) -> None:
    for line in format_arithmetic(a):
        print_fn(line)
