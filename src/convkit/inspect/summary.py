"""The lecture's model summary: one row per layer with output shape and parameters, then totals.

Computed as data by running one input through the model with hooks on its leaf layers; the
table and the JSON are front ends over `Summary`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from convkit.inspect.trace import trace


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


def summarize(model: nn.Module, input_shape: tuple[int, ...], name: str = "") -> Summary:
    """Run one zero image of `input_shape` (C, H, W) through `model` and tabulate its leaf layers."""
    rows: dict[str, LayerRow] = {}
    for call in trace(model, input_shape, name):
        if call.name not in rows:  # a layer used twice is listed once, where first used
            own = list(call.module.parameters(recurse=False))
            rows[call.name] = LayerRow(
                call.name,
                type(call.module).__name__,
                call.output_shape,
                sum(p.numel() for p in own),
                sum(p.numel() for p in own if p.requires_grad),
            )
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
