"""The lecture's model summary: one row per layer with output shape and parameters, then totals.

Computed as data by running one input through the model with hooks on its leaf layers; the
table and the JSON are front ends over `Summary`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from convkit.errors import ConfigError


@dataclass(frozen=True)
class LayerRow:
    name: str  # qualified module name, e.g. dense_1 or layer1.0.conv1
    type: str  # class name: Dense, Conv2D, ...
    output_shape: tuple[int, ...]  # without the batch dimension: (C, H, W) or (features,)
    params: int  # parameters this layer owns
    trainable: int


@dataclass(frozen=True)
class Summary:
    model: str
    input_shape: tuple[int, ...]  # (C, H, W)
    layers: tuple[LayerRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for row in d["layers"]:
            row["output_shape"] = list(row["output_shape"])
        d["input_shape"] = list(self.input_shape)
        return d


def _shape(out: Any) -> tuple[int, ...]:
    if torch.is_tensor(out):
        return tuple(out.shape[1:])
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return tuple(out[0].shape[1:])
    return ()


def _device(model: nn.Module) -> torch.device:
    """Where the model lives; on the meta device shapes come out without any arithmetic."""
    return next(model.parameters(), torch.zeros(0)).device


def summarize(model: nn.Module, input_shape: tuple[int, ...], name: str = "") -> Summary:
    """Run one zero image of `input_shape` (C, H, W) through `model` and tabulate its leaf layers."""
    rows: dict[str, LayerRow] = {}
    hooks = []
    for qual, module in model.named_modules():
        if qual and not any(True for _ in module.children()):

            def hook(mod: nn.Module, _inp: Any, out: Any, qual: str = qual) -> None:
                if qual not in rows:  # a layer used twice is listed once, where first used
                    own = list(mod.parameters(recurse=False))
                    rows[qual] = LayerRow(
                        qual,
                        type(mod).__name__,
                        _shape(out),
                        sum(p.numel() for p in own),
                        sum(p.numel() for p in own if p.requires_grad),
                    )

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=_device(model)))
    except (RuntimeError, ValueError) as exc:
        shape = ",".join(map(str, input_shape))
        raise ConfigError(
            f"model {name or type(model).__name__} cannot take input shape "
            f"(C,H,W)=({shape}): {str(exc).splitlines()[0]}"
        ) from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Summary(
        name, tuple(input_shape), tuple(rows.values()), total, trainable, total - trainable
    )


def format_summary(s: Summary) -> list[str]:
    """The Keras-style table as lines; shapes show the batch dimension as None."""
    cells = [
        (
            f"{r.name} ({r.type})",
            "(None, " + ", ".join(map(str, r.output_shape)) + ")",
            f"{r.params:,}",
        )
        for r in s.layers
    ]
    head = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) + 3 for i in range(3)]
    rule = "=" * sum(widths)

    def fmt(c: tuple[str, str, str]) -> str:
        return c[0].ljust(widths[0]) + c[1].ljust(widths[1]) + c[2].rjust(widths[2] - 3)

    title = f'Model: "{s.model}"  input (C, H, W) = ({", ".join(map(str, s.input_shape))})'
    lines = [title, "_" * sum(widths), fmt(head), rule]
    for i, c in enumerate(cells):
        lines.append(fmt(c))
        lines.append("_" * sum(widths) if i < len(cells) - 1 else rule)
    lines += [
        f"Total params: {s.total_params:,}",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
    ]
    return lines


def print_summary(s: Summary, print_fn: Callable[[str], None] = print) -> None:
    for line in format_summary(s):
        print_fn(line)
