"""One forward pass with hooks on every leaf layer: what ran, in order, with its shapes.

The summary and the conv arithmetic are both computed from this trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convkit.errors import ConfigError


@dataclass(frozen=True)
class LayerCall:
    name: str  # qualified module name, e.g. layer1.0.conv1
    module: nn.Module
    input_shape: tuple[int, ...]  # without the batch dimension; () when not a tensor
    output_shape: tuple[int, ...]


def device_of(model: nn.Module) -> torch.device:
    """Where the model lives; on the meta device shapes come out without any arithmetic."""
    return next(model.parameters(), torch.zeros(0)).device


def shape_of(value: Any) -> tuple[int, ...]:
    if torch.is_tensor(value):
        return tuple(value.shape[1:])
    if isinstance(value, (tuple, list)) and value and torch.is_tensor(value[0]):
        return tuple(value[0].shape[1:])
    return ()


def trace(model: nn.Module, input_shape: tuple[int, ...], name: str = "") -> list[LayerCall]:
    """Every call of a leaf layer, in the order they run, for one zero image of `input_shape`
    (C, H, W), in eval mode without gradients; the model's mode is restored afterwards."""
    calls: list[LayerCall] = []
    hooks = []
    for qual, module in model.named_modules():
        if qual and not any(True for _ in module.children()):

            def hook(mod: nn.Module, inp: Any, out: Any, qual: str = qual) -> None:
                calls.append(LayerCall(qual, mod, shape_of(inp[0]) if inp else (), shape_of(out)))

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device_of(model)))
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
    return calls
