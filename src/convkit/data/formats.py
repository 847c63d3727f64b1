"""File formats: each turns a dataset's verified files into train and test splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from convkit.data import cifar
from convkit.data.arrays import Split
from convkit.data.catalog import DatasetSpec
from convkit.data.idx import load_images_labels
from convkit.errors import DataError

Parser = Callable[[DatasetSpec, dict[str, Path]], tuple[Split, Split]]


def parse_idx_dataset(spec: DatasetSpec, paths: dict[str, Path]) -> tuple[Split, Split]:
    """MNIST-style: train-/t10k- images and labels, four IDX files."""
    splits = []
    for prefix in ("train", "t10k"):
        images, labels = load_images_labels(
            paths[f"{prefix}-images-idx3-ubyte.gz"],
            paths[f"{prefix}-labels-idx1-ubyte.gz"],
            spec.image_shape,
            spec.num_classes,
        )
        splits.append(Split.from_numpy(images, labels))
    return splits[0], splits[1]


def _cifar(spec, paths, read, suffix, meta_name, meta_names) -> tuple[Split, Split]:
    folder = paths[f"test_batch{suffix}"].parent
    meta = paths.get(meta_name) or folder / meta_name
    if meta.is_file():  # the class names the files carry must be the declared ones
        cifar.check_class_names(meta_names(meta), spec.classes, meta.name)
    parts = [read(paths[f"{b}{suffix}"], spec.num_classes) for b in cifar.TRAIN_BATCHES]
    train = Split.from_numpy(
        np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    )
    test = Split.from_numpy(*read(paths[f"test_batch{suffix}"], spec.num_classes))
    for split, expected, what in (
        (train, spec.train_size, "training"),
        (test, spec.test_size, "test"),
    ):
        if len(split) != expected:
            raise DataError(
                f"{spec.name} in {folder}: expected {expected:,} {what} images, "
                f"found {len(split):,}"
            )
    return train, test


def parse_cifar_bin(spec: DatasetSpec, paths: dict[str, Path]) -> tuple[Split, Split]:
    return _cifar(
        spec, paths, cifar.read_cifar_bin, ".bin", "batches.meta.txt", cifar.meta_names_bin
    )


def parse_cifar_py(spec: DatasetSpec, paths: dict[str, Path]) -> tuple[Split, Split]:
    return _cifar(spec, paths, cifar.read_cifar_py, "", "batches.meta", cifar.meta_names_py)


FORMATS: dict[str, Parser] = {
    "idx": parse_idx_dataset,
    "cifar-bin": parse_cifar_bin,
    "cifar-py": parse_cifar_py,
}
