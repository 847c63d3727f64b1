"""The layers the lecture names, as Keras names them, validated when they are built.

Each is a thin subclass of the PyTorch module it stands for, so state-dict keys and speed are
PyTorch's; what they add is the lecture's vocabulary, Keras's 'same' padding and initialisation,
and errors that name the value received. Tensors are (N, C, H, W).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"relu": F.relu, "linear": None, None: None}
Padding = str | int | tuple[int, int]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"expected {name} >= {minimum}, received {name}={value!r}")


def _pair(name: str, value: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"expected {name} as an int or (height, width), received {name}={value!r}")
    for v in pair:
        _check_int(name, v, minimum)
    return pair  # type: ignore[return-value]


def _check_activation(activation: str | None) -> None:
    if activation not in _ACTIVATIONS:
        known = ", ".join(repr(a) for a in _ACTIVATIONS)
        raise ValueError(f"expected activation in {known}, received activation={activation!r}")


def _check_padding(padding: Padding) -> Padding:
    if padding in ("same", "valid"):
        return padding
    if isinstance(padding, str):
        raise ValueError(
            f"expected padding 'same', 'valid' or an int >= 0, received padding={padding!r}"
        )
    return _pair("padding", padding, 0)


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """Keras/TensorFlow 'same': output ceil(size / stride); any odd pixel of padding goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def layer_pads(
    padding: Padding,
    h: int,
    w: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixels of padding for an (h, w) input."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return (
            *same_pads(h, kernel[0], stride[0], dilation[0]),
            *same_pads(w, kernel[1], stride[1], dilation[1]),
        )
    ph, pw = padding  # type: ignore[misc]
    return ph, ph, pw, pw


class Conv2D(nn.Conv2d):
    """Keras's Conv2D(filters, kernel_size, strides, padding, activation) on (N, C, H, W) input."""

    def __init__(
        self,
        in_channels: int,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: Padding = "valid",
        activation: str | None = None,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        _check_int("in_channels", in_channels, 1)
        _check_int("filters", filters, 1)
        kernel = _pair("kernel_size", kernel_size, 1)
        stride = _pair("strides", strides, 1)
        dil = _pair("dilation", dilation, 1)
        self.pad_mode = _check_padding(padding)
        _check_activation(activation)
        self.activation = activation
        self._act = _ACTIVATIONS[activation]
        super().__init__(in_channels, filters, kernel, stride=stride, padding=0, dilation=dil)

    def reset_parameters(self) -> None:
        # Keras's defaults: glorot_uniform kernel, zero bias.
        nn.init.xavier_uniform_(self.weight)
        nn.init.zeros_(self.bias)

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        return layer_pads(self.pad_mode, h, w, self.kernel_size, self.stride, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads(x.shape[-2], x.shape[-1])
        if top == bottom and left == right:  # symmetric: let the convolution pad
            y = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation)
        else:  # Keras's even-kernel 'same': the extra row and column go at the bottom and right
            y = F.conv2d(
                F.pad(x, (left, right, top, bottom)),
                self.weight,
                self.bias,
                self.stride,
                0,
                self.dilation,
            )
        return y if self._act is None else self._act(y)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"strides={self.stride}, padding={self.pad_mode!r}, activation={self.activation}"
        )


class MaxPool(nn.MaxPool2d):
    """Keras's MaxPooling2D(pool_size, strides=pool_size, padding): the largest value per window."""

    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: str = "valid",
    ) -> None:
        pool = _pair("pool_size", pool_size, 1)
        stride = pool if strides is None else _pair("strides", strides, 1)
        if padding not in ("same", "valid"):
            raise ValueError(f"expected padding 'same' or 'valid', received padding={padding!r}")
        self.pad_mode = padding
        super().__init__(pool, stride)

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        return layer_pads(self.pad_mode, h, w, self.kernel_size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads(x.shape[-2], x.shape[-1])
        if top or bottom or left or right:  # padded cells never win the max
            x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class BlurPool(nn.Module):
    """Anti-aliased max pooling (Zhang 2019, "Making convolutional networks shift-invariant
    again"): the max over each 2x2 window at stride 1, then a fixed [1, 2, 1] x [1, 2, 1] blur
    sampled at stride 2. Max pooling at stride 2 aliases: a one-pixel shift of the input can
    change which values survive; blurring before subsampling keeps the output close to a
    shifted copy. Same output size as MaxPool(2) ('valid': floor(n / 2))."""

    def __init__(self, channels: int, pool_size: int = 2) -> None:
        super().__init__()
        _check_int("channels", channels, 1)
        if pool_size != 2:
            raise ValueError(f"expected pool_size=2, received pool_size={pool_size!r}")
        self.channels = channels
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0  # (3, 3), sums to 1
        # A fixed filter, saved with the model so an export carries it; never trained.
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, 2, stride=1)  # (N, C, H - 1, W - 1): the max, densely
        h, w = x.shape[-2:]
        # Reflect one pixel in so the blur sees no invented zeros; then crop to floor(n / 2).
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        y = F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)
        return y[..., : (h + 1) // 2, : (w + 1) // 2]

    def extra_repr(self) -> str:
        return f"{self.channels}, pool_size=2, blur=[1, 2, 1]"


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): the mean of each channel over all positions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Dense(nn.Linear):
    """Fully connected layer with an optional activation: Keras's Dense(units, activation)."""

    def __init__(self, in_features: int, units: int, activation: str | None = None) -> None:
        _check_int("in_features", in_features, 1)
        _check_int("units", units, 1)
        _check_activation(activation)
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
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"expected 0 <= rate < 1, received rate={rate!r}")
        super().__init__(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        # On the CPU, PyTorch draws one Mersenne-Twister number per element (bernoulli_), which
        # costs more than the matmuls of a small MLP. Draw 64 random bits per 4 elements
        # instead and keep an element when its 16 bits fall below keep * 2**16.
        keep = 1.0 - self.p
        n = x.numel()
        bits = torch.randint(-(2**63), 2**63 - 1, (-(-n // 4),), dtype=torch.int64)
        bits = bits.view(torch.int16)[:n].view(x.shape)
        mask = (bits < round(keep * 65536) - 32768).to(x.dtype).mul_(1.0 / keep)
        return x * mask


class Flatten(nn.Flatten):
    """(N, C, H, W) -> (N, C*H*W): the step that throws away spatial structure."""


_KERAS_NAMES = {
    Conv2D: "conv2d",
    MaxPool: "max_pooling2d",
    GlobalAvgPool: "global_average_pooling2d",
    BlurPool: "blur_pooling2d",
    Dense: "dense",
    Dropout: "dropout",
    Flatten: "flatten",
}


def keras_sequential(layers: Iterable[nn.Module]) -> nn.Sequential:
    """nn.Sequential whose layers are named as Keras names them: conv2d_1, max_pooling2d_1, ..."""
    counts: Counter[str] = Counter()
    named: OrderedDict[str, nn.Module] = OrderedDict()
    for layer in layers:
        base = _KERAS_NAMES.get(type(layer), type(layer).__name__.lower())
        counts[base] += 1
        named[f"{base}_{counts[base]}"] = layer
    return nn.Sequential(named)


def flat_features(layers: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """How many features `layers` produce per image of `in_shape` (C, H, W), by running one.

    Runs in eval mode (Dropout off), so building a model draws nothing from the random stream.
    """
    was_training = layers.training
    layers.eval()
    try:
        with torch.no_grad():
            return int(layers(torch.zeros(1, *in_shape)).numel())
    finally:
        layers.train(was_training)
