"""Datasets in memory: uint8 image tensors, batched by indexing, converted to float per batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convkit.data.catalog import DatasetSpec


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) uint8 and labels (N,) int64, kept as they are stored: 1 byte a pixel."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(
                f"expected images (N, C, H, W) and labels (N,), received "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice | torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> Split:
        """The same split on `device` (still uint8: CIFAR-10's training set is 150 MB)."""
        return Split(self.images.to(device), self.labels.to(device))

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray) -> Split:
        return cls(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


@dataclass(frozen=True)
class Dataset:
    spec: DatasetSpec
    train: Split
    test: Split
    files: dict[str, Path]  # file name -> the verified file it was read from
    val: Split | None = None  # a validation split of its own (an image folder's val/), if any

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes


def holdout_split(split: Split, fraction: float) -> tuple[Split, Split]:
    """(train, validation): the last `fraction` of the samples held out, as Keras's validation_split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"expected 0 <= val_split < 1, received val_split={fraction}")
    n_val = int(round(len(split) * fraction))
    cut = len(split) - n_val
    return split[:cut], split[cut:]


def to_float(
    images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) -> float32 in [0, 1] (the lecture's x / 255), then standardized
    per channel when `mean` and `std` (each (C,), on the [0, 1] scale) are given."""
    x = images.to(torch.float32).mul_(1.0 / 255.0)
    if mean is not None and std is not None:
        x = x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x


def channel_stats(split: Split, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (C,) of a split's pixels on the [0, 1] scale."""
    total = torch.zeros(split.images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(split), chunk):
        x = split.images[i : i + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = len(split) * split.images.shape[2] * split.images.shape[3]
    mean = total / count
    return mean.float(), (total_sq / count - mean * mean).sqrt().float()


class Batches:
    """One pass over a split in batches of `batch_size`, shuffled by `generator` when asked.

    Batches are made by indexing the in-memory tensors (on whatever device the split lives);
    there is no per-sample Python. The last batch is smaller when the split does not divide
    evenly (as Keras does), unless `drop_last`.

    `shard=(rank, world_size)` gives this process its part of every batch: global batch b is
    the same set of samples as in one process, split evenly over the processes, so DDP with
    the same global batch computes the same gradients. Every process gets the same number of
    batches (a remainder smaller than the number of processes is left out).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        augment: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        shard: tuple[int, int] = (0, 1),
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, received batch_size={batch_size}")
        rank, world = shard
        if batch_size % world:
            raise ValueError(
                f"batch_size={batch_size} does not split evenly over {world} processes; "
                f"choose a multiple of {world}"
            )
        self.split, self.batch_size = split, batch_size
        self.shuffle, self.generator, self.drop_last = shuffle, generator, drop_last
        # augment(x, indices, epoch), applied to each uint8 batch (N, C, H, W) before conversion
        self.augment = augment
        self.epoch = 1  # which epoch the next pass is (the trainer sets it; augmentations read it)
        device = split.images.device
        self.mean = None if mean is None else mean.to(device)
        self.std = None if std is None else std.to(device)
        self.rank, self.world = rank, world
        self.memory_format = memory_format

    def _bounds(self) -> list[tuple[int, int]]:
        n, size = len(self.split), self.batch_size
        bounds = [(i, min(n, i + size)) for i in range(0, n, size)]
        if bounds and (self.drop_last and bounds[-1][1] - bounds[-1][0] < size):
            bounds.pop()
        if bounds and bounds[-1][1] - bounds[-1][0] < self.world:
            bounds.pop()
        return bounds

    def __len__(self) -> int:
        return len(self._bounds())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        images, labels = self.split.images, self.split.labels
        order = None
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(images.device)
        for start, stop in self._bounds():
            part = (stop - start) // self.world
            start += self.rank * part
            stop = start + part
            if order is None:
                x, y = images[start:stop], labels[start:stop]
                idx = None
            else:
                idx = order[start:stop]  # index_select: a tenth of the time of images[idx]
                x, y = images.index_select(0, idx), labels.index_select(0, idx)
            if self.augment is not None:
                if idx is None:
                    idx = torch.arange(start, stop, device=images.device)
                x = self.augment(x, idx, self.epoch)
            x = to_float(x, self.mean, self.std)
            yield x.contiguous(memory_format=self.memory_format), y


def shard_of(split: Split, rank: int, world: int) -> Split:
    """Every `world`-th sample from `rank` on: this process's part of an evaluation set."""
    return split if world == 1 else split[rank::world]


def to_categorical(
    labels: Sequence[int] | np.ndarray | torch.Tensor, num_classes: int
) -> torch.Tensor:
    """One-hot encode integer labels (N,) -> (N, num_classes) float32, as Keras's to_categorical."""
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"expected integer class labels, received dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"expected labels in 0..{num_classes - 1}, received values from "
            f"{int(labels.min())} to {int(labels.max())}"
        )
    return torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
