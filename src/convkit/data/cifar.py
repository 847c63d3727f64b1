"""CIFAR-10 in its two official versions, parsed with every field checked.

* binary: records of 1 label byte + 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each a
  32x32 plane, row-major), 10000 records a file, no header.
* python: pickled dicts {data: (N, 3072) uint8, labels: [N ints], ...}, read by an unpickler that
  resolves only the numpy names those files use, so a crafted pickle cannot run code.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from convkit.errors import DataError

RECORD = 1 + 3 * 32 * 32  # bytes per binary record
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# ndarray pickles as (_reconstruct, (ndarray, shape, dtype-code)) + state; take the function from
# numpy itself rather than naming its module (numpy.core in 1.x, numpy._core in 2.x).
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 writes bytes at pickle protocol 2 as _codecs.encode(text, "latin1"): a pure
    # conversion between encodings (PyTorch's weights_only unpickler allows it too).
    ("_codecs", "encode"): codecs.encode,
}


def _check_labels(labels: np.ndarray, name: str, num_classes: int) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise DataError(
            f"{name}: label {int(labels[bad[0]])} in record {int(bad[0])} is outside "
            f"0..{num_classes - 1}"
        )


def read_cifar_bin(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: images (N, 3, 32, 32) uint8 and labels (N,) uint8."""
    data = bytearray(path.read_bytes())
    if len(data) == 0 or len(data) % RECORD:
        raise DataError(
            f"{path.name}: {len(data):,} bytes is not a whole number of {RECORD}-byte records "
            f"({len(data) // RECORD:,} records and {len(data) % RECORD:,} bytes left over); "
            f"download it again ({path})"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    _check_labels(labels, path.name, num_classes)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy's array and dtype constructors; any other global is refused."""

    def __init__(self, file: Any, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.name}: refusing to load {module}.{name}: CIFAR pickles hold only dicts, "
                f"lists, strings, numbers and numpy arrays (is this file from somewhere else?)"
            ) from None


def load_pickle(path: Path) -> Any:
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, path.name).load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many types for malformed input
        raise DataError(
            f"{path.name}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from None


def _str_keys(obj: Any, name: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar_py(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: images (N, 3, 32, 32) uint8 and labels (N,) uint8."""
    d = _str_keys(load_pickle(path), path.name)
    for key in ("data", "labels"):
        if key not in d:
            raise DataError(f"{path.name}: no {key!r} entry (found: {', '.join(sorted(d))})")
    data = d["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != RECORD - 1
    ):
        found = (
            f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        )
        raise DataError(f"{path.name}: expected data as uint8 (N, 3072), found {found}")
    labels = np.asarray(d["labels"])
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path.name}: expected {len(data):,} integer labels, found "
            f"{labels.dtype} {labels.shape}"
        )
    _check_labels(labels, path.name, num_classes)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


def check_class_names(found: list[str], expected: tuple[str, ...], name: str) -> None:
    if tuple(found) != expected:
        raise DataError(f"{name}: class names {found} differ from CIFAR-10's {list(expected)}")


def meta_names_bin(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def meta_names_py(path: Path) -> list[str]:
    names = _str_keys(load_pickle(path), path.name).get("label_names", [])
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
