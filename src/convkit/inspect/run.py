"""A trained run, loaded for looking inside: its model (fp32, CPU, eval mode), classes, how its
images were preprocessed, its history. `load_image` (user images) lives in convkit.data.images."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from convkit.data.arrays import Split, to_float
from convkit.data.images import load_image
from convkit.runs import KeptModel, Run, load_data

if TYPE_CHECKING:
    from convkit.train.config import TrainConfig

__all__ = ["CPU", "LoadedRun", "load_image", "load_run"]

CPU = torch.device("cpu")


@dataclass
class LoadedRun:
    run: Run
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
    kept: KeptModel | None = None  # what the run kept, as read through convkit.runs
    _test: Split | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's precision on the CPU, so predictions match its own evaluation."""
        return self.kept.cpu_autocast()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the float input the model was trained on."""
        return to_float(images, self.mean, self.std)

    @property
    def classifier(self) -> nn.Module:
        """What to predict with (the run's test-time augmentation, if any, around `model`)."""
        return self.kept.classifier

    def test_split(self) -> Split:
        if self._test is None:
            data, _ = load_data(self.cfg, data_dir=self.data_dir, download=self.download)
            self._test = data.test
        return self._test


def load_run(
    run_dir: str | Path, *, data_dir: str | Path | None = None, download: bool = True
) -> LoadedRun:
    run = Run(run_dir)
    kept = run.kept_model()
    kept.model.eval()
    return LoadedRun(
        run=run,
        cfg=kept.cfg,
        model=kept.model,
        classes=kept.classes,
        image_shape=kept.image_shape,
        mean=kept.mean,
        std=kept.std,
        epoch=kept.epoch,
        history=run.history(),
        data_dir=data_dir,
        download=download,
        kept=kept,
    )
