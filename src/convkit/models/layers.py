"""The layers the lecture names, as Keras names them, validated when they are built.

Each is a thin subclass of the PyTorch module it stands for, so state-dict keys and speed are
PyTorch's; what they add is the lecture's vocabulary and errors that name the value received.
"""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.functional.relu, "linear": None, None: None}


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected {name} >= {minimum}, received {name}={value!r}")


class Dense(nn.Linear):
    """Fully connected layer with an optional activation: Keras's Dense(units, activation)."""

    def __init__(self, in_features: int, units: int, activation: str | None = None) -> None:
        _check_int("in_features", in_features, 1)
        _check_int("units", units, 1)
        if activation not in _ACTIVATIONS:
            known = ", ".join(repr(a) for a in _ACTIVATIONS)
            raise ValueError(f"expected activation in {known}, received activation={activation!r}")
        self.activation = activation
        self._act = _ACTIVATIONS[activation]
        super().__init__(in_features, units)

    def reset_parameters(self) -> None:
        # Keras's defaults: glorot_uniform kernel, zero bias (PyTorch's Linear differs).
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


class Dropout(nn.Dropout):
    """Zero a fraction `rate` of activations while training (scaled so the mean is kept)."""

    def __init__(self, rate: float) -> None:
        if not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"expected 0 <= rate < 1, received rate={rate!r}")
        super().__init__(rate)


class Flatten(nn.Flatten):
    """(N, C, H, W) -> (N, C*H*W): the step that throws away spatial structure."""
