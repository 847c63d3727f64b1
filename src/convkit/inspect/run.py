"""A trained run, loaded for looking inside: its model (fp32, CPU, eval mode), classes, how its
images were preprocessed, its history; and user images converted the way the run expects."""

from __future__ import annotations

import contextlib
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
from convkit.train.config import TrainConfig
from convkit.train.engine import resolve_precision
from convkit.train.runner import RunDir, load_kept_model

CPU = torch.device("cpu")


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

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's precision on the CPU, so predictions match its own evaluation (bf16 where
        it trained in bf16 and the CPU does bf16 natively); gradients are always fp32."""
        if resolve_precision(self.cfg.precision.replace("fp16", "auto"), CPU) == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
    run, cfg, model, meta = load_kept_model(run_dir)
    spec = get_dataset_spec(cfg.dataset)
    c, h, w = spec.image_shape
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
    path: str | Path,
    image_shape: tuple[int, int, int],
    *,
    invert_light: bool = True,
    digit_frame: bool = False,
) -> dict[str, Any]:
    """A user's image file, any size or mode, converted as the run's dataset stores images.

    Grey or RGB, resized to (H, W). A grey image on a light background is inverted to MNIST's
    light-on-dark when `invert_light`. With `digit_frame` (MNIST), the drawing is cropped to
    its ink, scaled to fit 20x20 and centred by its centre of mass in 28x28, as MNIST's digits
    were made. Returns the original (for showing), the converted uint8 array (C, H, W), and a
    line that says what was done."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    c, h, w = image_shape
    if c not in (1, 3):
        raise ConfigError(f"the run expects {c}-channel images; only grey and RGB are supported")
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
            shown = np.asarray(im.convert("RGB"))
            converted = im.convert("L" if c == 1 else "RGB")
    except UnidentifiedImageError:
        raise ConfigError(
            f"{path} is not an image PIL can read (PNG, JPEG, BMP, GIF, TIFF, WebP...)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ConfigError(f"{path} is a damaged image file: {exc}") from None
    steps = [f"{original_size[0]}x{original_size[1]} {original_mode}"]
    if converted.mode != original_mode:
        steps.append("grey" if c == 1 else "RGB")
    if c == 1 and invert_light:
        a = np.asarray(converted)
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        if border.mean() > 127:
            converted = Image.fromarray(255 - a)  # dark ink on paper -> MNIST's light on black
            steps.append("inverted (light background)")
    if c == 1 and digit_frame and (h, w) == (28, 28):
        array, note = _mnist_frame(converted)
        steps.append(note)
    else:
        resized = converted.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        array = np.array(resized, dtype=np.uint8)  # a writable copy
        array = array[None] if c == 1 else array.transpose(2, 0, 1)
        if (w, h) != original_size:
            steps.append(f"resized to {w}x{h}")
    return {
        "path": str(path),
        "original": shown,
        "converted": array,
        "conversion": " -> ".join(steps),
    }


def _mnist_frame(grey) -> tuple[np.ndarray, str]:
    """MNIST's normalisation of a light-on-dark drawing: crop to the ink, fit in 20x20 keeping
    the aspect ratio, paste into 28x28 so the centre of mass sits at the centre."""
    from PIL import Image

    a = np.asarray(grey, dtype=np.float64)
    ink = a > 0.2 * a.max() if a.max() > 0 else np.zeros_like(a, dtype=bool)
    if not ink.any():
        return np.zeros((1, 28, 28), dtype=np.uint8), "blank: no ink found"
    rows, cols = np.nonzero(ink)
    box = grey.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    scale = 20 / max(box.size)
    size = (max(1, round(box.size[0] * scale)), max(1, round(box.size[1] * scale)))
    digit = np.asarray(box.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    total = digit.sum()
    cy = (digit.sum(1) * np.arange(size[1])).sum() / total if total else size[1] / 2
    cx = (digit.sum(0) * np.arange(size[0])).sum() / total if total else size[0] / 2
    top = int(round(14 - cy - 0.5))
    left = int(round(14 - cx - 0.5))
    top, left = min(max(top, 0), 28 - size[1]), min(max(left, 0), 28 - size[0])
    out = np.zeros((28, 28), dtype=np.float64)
    out[top : top + size[1], left : left + size[0]] = digit
    note = "cropped to the ink, fit in 20x20 and centred by mass in 28x28 (as MNIST)"
    return out.clip(0, 255).round().astype(np.uint8)[None], note
