"""A trained run, loaded for looking inside: its model (fp32, CPU, eval mode), classes, how its
images were preprocessed, its history; and user images converted the way the run expects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convkit.data import load_dataset
from convkit.data.arrays import Split, to_float
from convkit.data.catalog import get_dataset_spec
from convkit.errors import ConfigError
from convkit.models import create_model
from convkit.train import checkpoint
from convkit.train.config import TrainConfig
from convkit.train.runner import RunDir


@dataclass
class LoadedRun:
    run: RunDir
    cfg: TrainConfig
    model: nn.Module
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)
    mean: torch.Tensor | None
    std: torch.Tensor | None
    epoch: int | None  # the epoch whose weights were kept
    history: list[dict[str, Any]]
    data_dir: str | Path | None = None
    download: bool = True
    _test: Split | None = None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the float input the model was trained on."""
        return to_float(images, self.mean, self.std)

    def test_split(self) -> Split:
        if self._test is None:
            data = load_dataset(self.cfg.dataset, self.data_dir, download=self.download)
            self._test = data.test
        return self._test


def load_run(
    run_dir: str | Path, *, data_dir: str | Path | None = None, download: bool = True
) -> LoadedRun:
    run = RunDir(Path(run_dir))
    if not run.model.exists():
        raise ConfigError(
            f"{run.root} is not a run folder with weights (no {run.model.name}); "
            f"train one with `convkit train RECIPE --out {run.root}`"
        )
    weights, meta = checkpoint.load(run.model)
    cfg = TrainConfig.from_dict(meta["config"], str(run.model))
    spec = get_dataset_spec(cfg.dataset)
    c, h, w = spec.image_shape
    model = create_model(cfg.model, num_classes=spec.num_classes, in_channels=c, input_size=(h, w))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"{run.model} does not fit model {cfg.model}: {exc}") from None
    model.eval()
    norm = meta.get("normalization") or {}
    return LoadedRun(
        run=run,
        cfg=cfg,
        model=model,
        classes=tuple(spec.classes),
        image_shape=(c, h, w),
        mean=torch.tensor(norm["mean"]) if "mean" in norm else None,
        std=torch.tensor(norm["std"]) if "std" in norm else None,
        epoch=meta.get("epoch"),
        history=run.read_metrics(),
        data_dir=data_dir,
        download=download,
    )


def load_image(
    path: str | Path, image_shape: tuple[int, int, int], *, invert_light: bool = True
) -> dict[str, Any]:
    """A user's image file, any size or mode, converted as the run's dataset stores images:
    grey or RGB, resized to (H, W); a grey image on a light background is inverted to the
    light-on-dark of MNIST when `invert_light`. Returns the original (as RGB, for showing), the converted
    uint8 array (C, H, W), and a line that says what was done."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    c, h, w = image_shape
    if not path.is_file():
        raise ConfigError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            original_mode, original_size = im.mode, im.size
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")  # transparent pixels become white, as a viewer shows them
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            shown = im.convert("RGB")
            converted = im.convert("L" if c == 1 else "RGB")
    except UnidentifiedImageError:
        raise ConfigError(
            f"{path} is not an image PIL can read (PNG, JPEG, BMP, GIF, TIFF, WebP...)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{path} is a damaged image file: {exc}") from None
    if c not in (1, 3):
        raise ConfigError(f"the run expects {c}-channel images; only grey and RGB are supported")
    resized = converted.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
    array = np.array(resized, dtype=np.uint8)  # a writable copy
    array = array[None] if c == 1 else array.transpose(2, 0, 1)
    steps = [f"{original_size[0]}x{original_size[1]} {original_mode}"]
    if converted.mode != original_mode:
        steps.append("grey" if c == 1 else "RGB")
    if (w, h) != original_size:
        steps.append(f"resized to {w}x{h}")
    border = np.concatenate([array[:, 0], array[:, -1], array[:, :, 0], array[:, :, -1]], None)
    if c == 1 and invert_light and border.mean() > 127:
        array = 255 - array  # a dark digit on white paper, as MNIST's are light on black
        steps.append("inverted (light background)")
    return {
        "path": str(path),
        "original": np.asarray(shown),
        "converted": array,
        "conversion": " -> ".join(steps),
    }
