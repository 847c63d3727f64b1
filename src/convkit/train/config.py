"""One frozen, typed config per run. Layers: defaults < recipe < config file < command line."""

from __future__ import annotations

import dataclasses
import json
import math
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
# What a resume may change: how long and how to compute, never the model, the data or the
# optimisation (changing those mid-run would not load, or would silently be another run).
RESUMABLE = ("epochs", "patience", "eval_batch_size", "tta", *ENGINE_SETTINGS)


def epoch_parts(values: dict[str, Any], old: int, new: int, keep: set[str] = frozenset()):
    """The warm-up, low-resolution and whitening-bias epochs of `values` (settings made for
    `old` epochs) for a run of `new` epochs, each keeping its share of the run; those named in
    `keep` (the user's) stay. Warm-up and low-resolution epochs are whole (rounded half up)
    and leave at least the last epoch out (none in a run of one epoch); whitening-bias epochs
    may be a fraction. Only what changes is returned."""

    def whole(part: int) -> int:
        return min(new - 1, math.floor(part * new / old + 0.5))

    out: dict[str, Any] = {}
    if values.get("whiten_bias_epochs") and "whiten_bias_epochs" not in keep:
        out["whiten_bias_epochs"] = values["whiten_bias_epochs"] * new / old
    if values.get("warmup_epochs") and "warmup_epochs" not in keep:
        out["warmup_epochs"] = max(1, whole(values["warmup_epochs"])) if new > 1 else 0
    if values.get("low_res_epochs") and "low_res_epochs" not in keep:
        out["low_res_epochs"] = whole(values["low_res_epochs"])
        if not out["low_res_epochs"] and "low_res" not in keep:
            out["low_res"] = 0
    return out


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = _setting("", "the recipe these settings started from")
    model: str = _setting("mnist-mlp", "registered model name (see `convkit models`)")
    dataset: str = _setting("mnist", "registered dataset name (see `convkit data list`)")
    data: str = _setting(
        "",
        "train on your own images instead: a folder of class folders (PATH/cat/*.jpg), or of "
        "train/, test/ (and val/) folders of class folders; decoded once, then cached",
    )
    image_size: int = _setting(
        0, "with --data: images resized to N x N (0: the model's own input size); see --fit"
    )
    fit: str = _setting(
        "auto",
        "how an image of another shape meets the model's square input, in training on --data "
        "and wherever the run converts an image (predict, export, inspect, the page): crop "
        "(the centre, nothing squashed), pad (the whole image, bars of its border's colour), "
        "stretch (squashed); auto crops colour photos and pads the rest (grey drawings, "
        "images near the input's shape)",
        ("auto", "crop", "pad", "stretch"),
    )
    epochs: int = _setting(
        10,
        "passes over the training split (a recipe's warm-up, low-resolution and "
        "whitening-bias epochs keep their share of it)",
    )
    plan_steps: int = _setting(
        0,
        "plan the epochs from the data: as many as it takes to make about this many optimizer "
        "steps (0: --epochs as given). Set for --data when --epochs is not: the recipe's own "
        "number of steps, so a small folder trains long enough and a large one no longer",
    )
    batch_size: int = _setting(128, "images per optimizer step")
    optimizer: str = _setting(
        "adam",
        "optimizer; rmsprop uses Keras's rho=0.9; muon trains convolution filters with Muon "
        "(momentum whose update is orthogonalised, Jordan 2024) at --lr and every other "
        "parameter with Nesterov SGD at --lr-head (linear layers' weights) or --lr-bias (biases, "
        "BatchNorm shifts); it rescales each filter bank every step, so it is for networks "
        "with BatchNorm after every convolution",
        ("adam", "adamw", "sgd", "rmsprop", "muon"),
    )
    lr: float = _setting(1e-3, "learning rate (peak rate when a schedule is used)")
    momentum: float = _setting(0.9, "momentum for sgd (and muon's SGD-trained parameters)")
    weight_decay: float = _setting(
        0.0,
        "L2 weight decay (decoupled for adamw; for muon, the fraction of the SGD-trained "
        "parameters decayed each step at the peak rate)",
    )
    muon_momentum: float = _setting(0.6, "momentum of muon's filter updates")
    lr_bias: float = _setting(0.0, "muon: peak rate of biases and BatchNorm shifts (SGD)")
    lr_head: float = _setting(0.0, "muon: peak rate of linear layers' weights (SGD)")
    schedule: str = _setting(
        "constant",
        "learning-rate schedule: constant; cosine (to 0 over all steps after any warm-up); "
        "linear (straight down to 0 over all steps after any warm-up); step (divide by 10 at 50%% and 75%% of the steps, as He et al. "
        "2016); plateau (halve the rate when val loss has not improved for 2 epochs, as Keras's "
        "ReduceLROnPlateau)",
        ("constant", "cosine", "linear", "step", "plateau"),
    )
    warmup_epochs: int = _setting(
        0,
        "cosine and linear schedules: raise the rate from 0 to its peak (--lr, and muon's "
        "--lr-bias and --lr-head) in a straight line over this many epochs, then follow the "
        "schedule over the rest (0: start at the peak)",
    )
    augment: str = _setting(
        "none",
        "training-batch augmentation: translate shifts images by up to a tenth of their side "
        "(zeros come in; for digits and text, where a mirror image is another class); crop-flip "
        "shifts by up to 4 pixels (zeros come in) and mirrors half; flip-translate shifts by up to 2 pixels (the border reflected in) "
        "and mirrors each image every other epoch, starting from a random half (airbench's "
        "alternating flips: every image is seen both ways in any two epochs); "
        "resized-crop-flip stretches a random part (35-100%% of the area) back to full size "
        "and mirrors half (photos)",
        ("none", "translate", "crop-flip", "flip-translate", "resized-crop-flip"),
    )
    low_res: int = _setting(
        0,
        "progressive resolution: train the first --low-res-epochs epochs on random N x N crops "
        "(a step then costs about (N / image size)^2 of a full one; 0: off). The model must "
        "take any size (end in a global pool)",
    )
    low_res_epochs: int = _setting(0, "epochs trained on --low-res crops")
    whiten_bias_epochs: float = _setting(
        0.0,
        "epochs the whitening layer's bias trains (a model with one, such as cifar10-fast, and "
        "--optimizer muon), its rate falling linearly from --lr-bias to 0 over them (with no "
        "warm-up) and then staying there, as airbench trains it for 3; 0: it trains as long as "
        "every other bias",
    )
    permute_pixels: int = _setting(
        0,
        "shuffle every image's pixels by one fixed permutation drawn from this seed (0: off), "
        "the same for training, validation, test and every later use of the run: the lecture's "
        "experiment on what flattening loses (an MLP learns permuted images as well as the "
        "originals; a CNN does not)",
    )
    tta: str = _setting(
        "none",
        "test-time augmentation: flip averages the logits of each image and its mirror; "
        "flip-translate also those of both shifted by one pixel up-left and down-right (6 views); "
        "selective tests every image as it is and gives flip-translate's 6 views only to the "
        "least confident 15%% of each batch (about 1.75 forward passes an image instead of 6)",
        ("none", "flip", "flip-translate", "selective"),
    )
    normalize: str = _setting(
        "scale",
        "pixel preprocessing: scale to [0, 1], or standardize each channel with the training "
        "split's mean and std",
        ("scale", "standardize"),
    )
    label_smoothing: float = _setting(0.0, "label smoothing of the cross-entropy loss, in [0, 1)")
    class_weights: str = _setting(
        "auto",
        "how much each class weighs in the loss: balanced, every class alike in total; none, "
        "each image alike; auto, on an image folder whose test images are mixed otherwise than "
        "its training images (a balanced test/ folder beside imbalanced classes), each class "
        "by its share of the test images over its share of the training images, so training "
        "aims at the mix it is tested on; none otherwise",
        ("auto", "none", "balanced"),
    )
    val_split: float = _setting(0.2, "fraction held out for validation: the last samples, as Keras")
    patience: int = _setting(0, "stop after this many epochs without a better val loss (0: never)")
    keep: str = _setting(
        "best", "weights kept and tested: best val loss, or the last epoch's", ("best", "last")
    )
    limit: int = _setting(0, "use only the first N training images, before the split (0: all)")
    eval_batch_size: int = _setting(
        1000, "images per batch when evaluating, of 32x32 pixels: larger images get fewer"
    )
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
    init: str = _setting(
        "",
        "start from trained weights (fine-tuning): a .pth or .safetensors state dict, or a run "
        "folder; a classifier for another number of classes is replaced by a new one",
    )
    freeze: bool = _setting(False, "with --init: train only the classifier, keep the rest as is")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(
                    f"expected {f.name} in {', '.join(choices)}, received {f.name}={value!r}"
                )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"expected {f.name} to be a finite number, received {value}")
        positive = ("epochs", "batch_size", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"expected {name} >= 1, received {name}={getattr(self, name)}")
        if self.image_size and not self.data:
            raise ConfigError("image_size resizes the images of --data PATH: give --data with it")
        nonnegative = (
            "patience",
            "limit",
            "threads",
            "weight_decay",
            "momentum",
            "image_size",
            "permute_pixels",
        )
        for name in (
            *nonnegative,
            "muon_momentum",
            "lr_bias",
            "lr_head",
            "low_res",
            "low_res_epochs",
            "warmup_epochs",
            "whiten_bias_epochs",
        ):
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
        if self.optimizer == "muon":
            if not (self.lr_bias > 0 and self.lr_head > 0):
                raise ConfigError(
                    "optimizer=muon trains biases and linear layers with SGD at their own "
                    f"rates: set --lr-bias and --lr-head > 0 (received {self.lr_bias}, "
                    f"{self.lr_head})"
                )
            for name in ("momentum", "muon_momentum"):  # both are Nesterov's
                if not 0.0 < getattr(self, name) < 1.0:
                    raise ConfigError(
                        f"optimizer=muon uses Nesterov momentum: expected 0 < {name} < 1, "
                        f"received {name}={getattr(self, name)}"
                    )
        if self.whiten_bias_epochs and self.optimizer != "muon":
            raise ConfigError(
                "whiten_bias_epochs gives the whitening bias its own rate among Muon's groups: "
                f"use --optimizer muon, or --whiten-bias-epochs 0 (received optimizer="
                f"{self.optimizer})"
            )
        if self.whiten_bias_epochs > self.epochs:
            raise ConfigError(
                f"expected whiten_bias_epochs <= epochs, received whiten_bias_epochs="
                f"{self.whiten_bias_epochs} and epochs={self.epochs}"
            )
        if self.whiten_bias_epochs and self.schedule == "plateau":
            raise ConfigError(
                "whiten_bias_epochs sets the whitening bias's rate batch by batch, which "
                "schedule=plateau does not: choose another --schedule, or --whiten-bias-epochs 0"
            )
        if bool(self.low_res) != bool(self.low_res_epochs):
            raise ConfigError(
                "progressive resolution needs both --low-res N (the crop size) and "
                f"--low-res-epochs K (received low_res={self.low_res}, "
                f"low_res_epochs={self.low_res_epochs})"
            )
        if self.low_res and self.low_res_epochs >= self.epochs:
            raise ConfigError(
                "the last epochs train at full size, as the test sees the images: expected "
                f"low_res_epochs < epochs, received low_res_epochs={self.low_res_epochs} and "
                f"epochs={self.epochs}"
            )
        if self.warmup_epochs:
            if self.schedule not in ("cosine", "linear"):
                raise ConfigError(
                    "warmup_epochs ramps a cosine or linear schedule up from 0: set --schedule "
                    f"cosine or linear, or --warmup-epochs 0 (received schedule={self.schedule})"
                )
            if self.warmup_epochs >= self.epochs:
                raise ConfigError(
                    f"expected warmup_epochs < epochs, received warmup_epochs="
                    f"{self.warmup_epochs} and epochs={self.epochs}"
                )
        if self.freeze and not self.init:
            raise ConfigError("freeze keeps the initial weights: give --init FILE_OR_RUN with it")
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
        return cls.layered([(source, values)])

    @classmethod
    def layered(cls, layers: list[tuple[str, dict[str, Any]]]) -> TrainConfig:
        """Defaults < each (source, values) layer in turn, checked once when all are merged.

        Each value is checked against its field's type as it comes (the error names its source);
        rules that tie settings together (keep=best needs a validation split) are checked on the
        merged result only, so a later layer can mend what an earlier one set."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        merged: dict[str, Any] = {}
        for source, values in layers:
            for key, value in values.items():
                if key not in fields:
                    raise ConfigError(
                        f"{source}: unknown setting {key!r}; settings are: {', '.join(fields)}"
                    )
                merged[key] = _coerce(key, value, type(fields[key].default), source)
        return cls(**merged)

    def merged(self, values: dict[str, Any], source: str) -> TrainConfig:
        """A copy with `values` applied, each checked against its field's type; `source` names them."""
        return self.layered([("", self.to_dict()), (source, values)])

    def resumed(self, values: dict[str, Any], source: str = "command line") -> TrainConfig:
        """This run's config with the changes a resume may make; anything that would change the
        model, the data or the optimisation already under way is refused, naming the setting."""
        current = self.to_dict()
        refused = [
            k for k, v in values.items() if k not in RESUMABLE and k in current and current[k] != v
        ]
        if refused:
            key = refused[0]
            raise ConfigError(
                f"--resume continues the run as it was set up: {key} cannot change (the run has "
                f"{key}={current[key]!r}, asked: {values[key]!r}). A resume may change only "
                f"{', '.join(RESUMABLE)}; train a new run for anything else"
            )
        return self.merged(values, source)


def _coerce(key: str, value: Any, kind: type, source: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: expected {key} to be {kind.__name__}, received {value!r}")
    return value


def read_config_file(path: str | Path, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """Settings from a TOML or JSON file (a flat table of setting = value).

    A settings file is a few hundred bytes; one over `max_bytes` (or a device like /dev/zero)
    is refused after reading that much, never read whole."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(
            f"{path}: more than {max_bytes:,} bytes, too large for a settings file "
            f"(is it the right file?)"
        )
    kind = path.suffix.lstrip(".") or "TOML"  # any other suffix is read as TOML
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not {kind} text: byte 0x{raw[exc.start]:02x} at offset {exc.start} is "
            f"not UTF-8"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid {kind}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, TOMLDecodeError, an integer of 4,300+ digits
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings, found {type(data).__name__}")
    return data
