"""Datasets in memory: uint8 image tensors, batched by indexing, converted to float per batch."""

from __future__ import annotations

import bisect
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
    # True when the splits hold only this process's part (packed shards under torchrun), not
    # the whole dataset for every process to take its part of
    local: bool = False
    stats: tuple[torch.Tensor, torch.Tensor] | None = None  # the training images' mean and std

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

    `window=(rows, block)`: for a split larger than memory (mapped from disk), shuffle blocks
    of `block` consecutive rows, then the rows within each window of about `rows` rows, and
    read each window with one sequential copy per block: memory holds a window, not the split,
    and the disk is read in long runs instead of one row at a time (the file's rows are
    already in a seeded random order, so a block mixes the classes as well as any rows do).
    A window as large as the split is the plain shuffle, sample for sample.
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
        window: tuple[int, int] | None = None,
        device: torch.device | str | None = None,
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
        # where batches go: the split's device, unless it stays on the host (read by window)
        self.device = device = torch.device(device) if device is not None else split.images.device
        self.mean = None if mean is None else mean.to(device)
        self.std = None if std is None else std.to(device)
        self.rank, self.world = rank, world
        self.memory_format = memory_format
        if window is not None and (window[0] < 1 or window[1] < 1):
            raise ValueError(f"expected window=(rows >= 1, block >= 1), received window={window}")
        self.window = window

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

    def windowed(self) -> bool:
        """True when a pass reads the split window by window (it is larger than one window)."""
        return self.shuffle and self.window is not None and self.window[0] < len(self.split)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        images, labels = self.split.images, self.split.labels
        order = reader = None
        if self.windowed():
            order, reader = _windows(n, *self.window, self.generator, images)
        elif self.shuffle:
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
                x = images.index_select(0, idx) if reader is None else reader(start, stop)
                y = labels.index_select(0, idx)
            if x.device != self.device:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                idx = None if idx is None else idx.to(self.device)
            if self.augment is not None:
                if idx is None:
                    idx = torch.arange(start, stop, device=self.device)
                x = self.augment(x, idx, self.epoch)
            x = to_float(x, self.mean, self.std)
            yield x.contiguous(memory_format=self.memory_format), y


def _windows(
    n: int, rows: int, block: int, generator: torch.Generator | None, images: torch.Tensor
) -> tuple[torch.Tensor, Callable[[int, int], torch.Tensor]]:
    """(order, read): an epoch's sample order made of windows of shuffled blocks, and
    read(start, stop) -> images[order[start:stop]], copying each window in once, block by block."""
    n_blocks = -(-n // block)
    per_window = max(1, rows // block)
    blocks = torch.randperm(n_blocks, generator=generator)
    order, local, ranges, ends = [], [], [], []
    for w in range(0, n_blocks, per_window):
        chosen = blocks[w : w + per_window].sort().values  # read in file order: one long run
        spans = [(int(b) * block, min(n, (int(b) + 1) * block)) for b in chosen]
        size = sum(b - a for a, b in spans)
        perm = torch.randperm(size, generator=generator)
        rows_here = torch.cat([torch.arange(a, b) for a, b in spans])
        order.append(rows_here[perm])
        local.append(perm)
        ranges.append(spans)
        ends.append((ends[-1] if ends else 0) + size)
    order_t, local_t = torch.cat(order), torch.cat(local)
    loaded: dict[int, torch.Tensor] = {}

    def window(w: int) -> torch.Tensor:
        if w not in loaded:
            for old in [k for k in loaded if k < w]:  # passed: free it before reading the next
                del loaded[old]
            loaded[w] = torch.cat([images[a:b] for a, b in ranges[w]])
        return loaded[w]

    def read(start: int, stop: int) -> torch.Tensor:
        parts, i = [], start
        while i < stop:
            w = bisect.bisect_right(ends, i)
            j = min(stop, ends[w])
            parts.append(window(w).index_select(0, local_t[i:j]))
            i = j
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    return order_t.to(images.device), read


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
