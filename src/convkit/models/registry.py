"""The model registry: builders registered by name, each taking num_classes, in_channels, input_size."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from convkit.errors import ConfigError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # the file it lives in: mlp, cnn, vgg, resnet, ...
    builder: Builder
    input_shape: tuple[int, int, int]  # default (C, H, W)
    num_classes: int  # default number of classes
    description: str  # one line, with the paper where there is one


_MODELS: dict[str, ModelInfo] = {}


def register(
    name: str,
    *,
    family: str,
    input_shape: tuple[int, int, int],
    description: str,
    num_classes: int = 10,
) -> Callable[[Builder], Builder]:
    """Register a builder under `name`; registering a name twice raises."""

    def deco(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].builder})")
        _MODELS[name] = ModelInfo(name, family, builder, input_shape, num_classes, description)
        return builder

    return deco


def model_info(name: str) -> ModelInfo:
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(list_models())} "
            f"(`convkit models` describes them)"
        ) from None


def list_models(pattern: str | None = None) -> list[str]:
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    input_size: tuple[int, int] | None = None,
) -> nn.Module:
    """Build model `name`; unspecified sizes take the model's defaults (its `ModelInfo`).

    Builders take exactly these sizes: any other keyword is a TypeError, raised by Python.
    """
    info = model_info(name)
    c, h, w = info.input_shape
    sizes = dict(
        num_classes=info.num_classes if num_classes is None else num_classes,
        in_channels=c if in_channels is None else in_channels,
        input_size=(h, w) if input_size is None else tuple(input_size),
    )
    try:
        return info.builder(**sizes)
    except (RuntimeError, ValueError) as exc:  # a size the architecture cannot take
        shape = ",".join(map(str, (sizes["in_channels"], *sizes["input_size"])))
        raise ConfigError(
            f"model {name} cannot take input shape (C,H,W)=({shape}) with "
            f"num_classes={sizes['num_classes']}: {str(exc).splitlines()[0]}"
        ) from None
