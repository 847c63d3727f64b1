"""Datasets: declared files and mirrors, verified sources, parsers, in-memory batching."""

from __future__ import annotations

import os

from convkit.data import tensorcache
from convkit.data.arrays import Batches, Dataset, Split, holdout_split, to_categorical, to_float
from convkit.data.catalog import (
    DatasetSpec,
    FileSpec,
    Source,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)
from convkit.data.formats import FORMATS
from convkit.data.sources import Log, _stderr, locate, resolve, search_roots


def load_dataset(
    dataset: str | DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    log: Log = _stderr,
) -> Dataset:
    """Find (or download), verify and parse a dataset into uint8 tensors in memory.

    A dataset whose files are unchanged since a verified load comes from the tensor cache
    (see `convkit.data.tensorcache`), unless CONVKIT_TENSOR_CACHE=0."""
    spec = get_dataset_spec(dataset) if isinstance(dataset, str) else dataset
    cache = tensorcache.TensorCache(spec, data_dir, log) if tensorcache.enabled() else None
    if cache is not None and (cached := cache.load()) is not None:
        return cached
    source, paths = resolve(spec, data_dir, download=download, log=log)
    train, test = FORMATS[source.format](spec, paths)
    data = Dataset(spec, train, test, paths)
    if cache is not None:
        cache.store(data, source)
    return data


__all__ = [
    "Batches",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "Source",
    "Split",
    "get_dataset_spec",
    "holdout_split",
    "list_datasets",
    "load_dataset",
    "locate",
    "register_dataset",
    "search_roots",
    "to_categorical",
    "to_float",
]
