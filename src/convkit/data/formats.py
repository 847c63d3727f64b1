"""File formats: each turns a dataset's verified files into train and test splits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from convkit.data.arrays import Split
from convkit.data.catalog import DatasetSpec
from convkit.data.idx import load_images_labels

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


FORMATS: dict[str, Parser] = {"idx": parse_idx_dataset}
