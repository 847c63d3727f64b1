"""One frozen, typed config per run. Layers: defaults < recipe < config file < command line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from convkit.errors import ConfigError


def _setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


DEVICES = ("auto", "cpu", "cuda", "mps")
SWITCH = ("auto", "on", "off")

# Settings that say how to compute, not what: a resumed run may change them.
ENGINE_SETTINGS = ("device", "precision", "channels_last", "compile", "threads")


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = _setting("", "the recipe these settings started from")
    model: str = _setting("mnist-mlp", "registered model name (see `convkit models`)")
    dataset: str = _setting("mnist", "registered dataset name (see `convkit data list`)")
    epochs: int = _setting(10, "passes over the training split")
    batch_size: int = _setting(128, "images per optimizer step")
    optimizer: str = _setting(
        "adam", "optimizer; rmsprop uses Keras's rho=0.9", ("adam", "adamw", "sgd", "rmsprop")
    )
    lr: float = _setting(1e-3, "learning rate (peak rate when a schedule is used)")
    momentum: float = _setting(0.9, "momentum for sgd")
    weight_decay: float = _setting(0.0, "L2 weight decay (decoupled for adamw)")
    schedule: str = _setting(
        "constant",
        "learning-rate schedule: constant; cosine (to 0 over all steps); step (divide by 10 at "
        "50%% and 75%% of the steps, as He et al. 2016); plateau (halve the rate when val loss "
        "has not improved for 2 epochs, as Keras's ReduceLROnPlateau)",
        ("constant", "cosine", "step", "plateau"),
    )
    augment: str = _setting(
        "none",
        "training-batch augmentation: crop-flip shifts images by up to 4 pixels and mirrors half",
        ("none", "crop-flip"),
    )
    normalize: str = _setting(
        "scale",
        "pixel preprocessing: scale to [0, 1], or standardize each channel with the training "
        "split's mean and std",
        ("scale", "standardize"),
    )
    label_smoothing: float = _setting(0.0, "label smoothing of the cross-entropy loss, in [0, 1)")
    val_split: float = _setting(0.2, "fraction held out for validation: the last samples, as Keras")
    patience: int = _setting(0, "stop after this many epochs without a better val loss (0: never)")
    keep: str = _setting(
        "best", "weights kept and tested: best val loss, or the last epoch's", ("best", "last")
    )
    limit: int = _setting(0, "use only the first N training images, before the split (0: all)")
    eval_batch_size: int = _setting(1000, "images per batch when evaluating")
    seed: int = _setting(0, "seed for initialisation, shuffling and dropout")
    threads: int = _setting(0, "CPU threads for PyTorch (0: PyTorch's default)")
    device: str = _setting(
        "auto", "where to train: auto picks a CUDA or Apple GPU when present", DEVICES
    )
    precision: str = _setting(
        "auto",
        "arithmetic: auto is bf16 autocast where the hardware does bf16 natively (CPUs with "
        "AVX512_BF16, recent GPUs), fp16 on older GPUs, fp32 elsewhere",
        ("auto", "fp32", "bf16", "fp16"),
    )
    channels_last: str = _setting(
        "auto", "channels-last memory layout (auto: on for models with convolutions)", SWITCH
    )
    compile: str = _setting("off", "torch.compile the model (pays only on long runs)", SWITCH[1:])

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(
                    f"expected {f.name} in {', '.join(choices)}, received {f.name}={value!r}"
                )
        positive = ("epochs", "batch_size", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"expected {name} >= 1, received {name}={getattr(self, name)}")
        for name in ("patience", "limit", "threads", "weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"expected {name} >= 0, received {name}={getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"expected lr > 0, received lr={self.lr}")
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"expected 0 <= val_split < 1, received val_split={self.val_split}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"expected 0 <= label_smoothing < 1, received label_smoothing={self.label_smoothing}"
            )
        if self.schedule == "plateau" and self.val_split == 0:
            raise ConfigError("schedule=plateau needs a validation split: set --val-split > 0")
        if self.keep == "best" and self.val_split == 0:
            raise ConfigError(
                "keep=best needs a validation split: set --val-split > 0 or --keep last"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "settings") -> TrainConfig:
        return cls().merged(values, source)

    def merged(self, values: dict[str, Any], source: str) -> TrainConfig:
        """A copy with `values` applied, each checked against its field's type; `source` names them."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(
                    f"{source}: unknown setting {key!r}; settings are: {', '.join(fields)}"
                )
            changes[key] = _coerce(key, value, type(getattr(self, key)), source)
        return dataclasses.replace(self, **changes)


def _coerce(key: str, value: Any, kind: type, source: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: expected {key} to be {kind.__name__}, received {value!r}")
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file (a flat table of setting = value)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings, found {type(data).__name__}")
    return data
