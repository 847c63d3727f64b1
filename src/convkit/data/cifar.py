"""CIFAR-10 in its two official versions, parsed with every field checked.

* binary: records of 1 label byte + 3072 pixel bytes (1024 red, 1024 green, 1024 blue, each a
  32x32 plane, row-major), 10000 records a file, no header.
* python: pickled dicts {data: (N, 3072) uint8, labels: [N ints], ...}, read by an unpickler that
  resolves only the numpy names those files use, so a crafted pickle cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from convkit.errors import DataError

RECORD = 1 + 3 * 32 * 32  # bytes per binary record
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# Pickle opcodes one file may hold. A CIFAR-10 batch has about 40,000 (10,000 labels and file
# names), CIFAR-100's training file about 250,000; each opcode makes at most one small object,
# so this bounds what a crafted file can make the unpickler allocate (~100 bytes an opcode).
MAX_PICKLE_OPS = 1_000_000
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


class _NdarrayName:
    """Stands for numpy.ndarray in a pickle: usable only as _reconstruct's first argument, so a
    pickle cannot call ndarray(shape) itself and allocate any size it names."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("numpy.ndarray called directly, which is not how numpy pickles arrays")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles every array as _reconstruct(ndarray, (0,), b"b") and then sets its state
    # (shape, dtype, bytes), so the bytes come from the file; any other call is not numpy's.
    if subtype is not _NdarrayName or shape != (0,):
        raise ValueError(f"_reconstruct({subtype!r}, {shape!r}, ...) is not how numpy pickles")
    return _RECONSTRUCT(np.ndarray, (0,), dtype)


def _latin1(text: Any, encoding: str = "utf-8") -> bytes:
    # Python 3 writes bytes at pickle protocol 2 as _codecs.encode(text, "latin1"): a pure
    # conversion between encodings (PyTorch's weights_only unpickler allows it too). Other
    # codecs (zlib, punycode...) do work of their own, some in quadratic time: refused.
    if encoding != "latin1" or not isinstance(text, str):
        raise ValueError(f"_codecs.encode with {encoding!r} is not how Python pickles bytes")
    return codecs.encode(text, "latin1")


# ndarray pickles as (_reconstruct, (ndarray, shape, dtype-code)) + state; take the function from
# numpy itself rather than naming its module (numpy.core in 1.x, numpy._core in 2.x).
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NdarrayName,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
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


def _check_opcodes(data: bytes) -> None:
    """Walk the pickle's opcodes without running them (pickletools reads each length against
    the bytes that remain), refusing what would make the unpickler allocate beyond the file:
    too many opcodes, or a memo index past the entries stored so far (the C unpickler grows its
    memo table to twice the index it is given: 7 bytes can ask for gigabytes)."""
    puts = 0
    for ops, (op, arg, pos) in enumerate(pickletools.genops(data), 1):
        if ops > MAX_PICKLE_OPS:
            raise ValueError(f"more than {MAX_PICKLE_OPS:,} pickle opcodes")
        if op.name in _MEMO_PUTS:
            if not isinstance(arg, int) or not 0 <= arg <= puts:
                raise ValueError(f"memo index {arg} at byte {pos} after {puts} entries")
            puts += 1
        elif op.name == "MEMOIZE":
            puts += 1


def load_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
        _check_opcodes(data)
        return RestrictedUnpickler(io.BytesIO(data), path.name).load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many types for malformed input
        raise DataError(
            f"{path.name}: not a readable CIFAR pickle ({type(exc).__name__}: {exc})"
        ) from None


def _str_keys(obj: Any, name: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a dict, found {type(obj).__name__}")
    return {_text(k, name, "key") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _text(value: bytes, name: str, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise DataError(f"{name}: {what} {value[:40]!r} is not UTF-8 text") from None


def read_cifar_py(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch: images (N, 3, 32, 32) uint8 and labels (N,) uint8."""
    d = _str_keys(load_pickle(path), path.name)
    for key in ("data", "labels"):
        if key not in d:
            found = ", ".join(sorted(map(str, d)))  # keys may be any hashable the pickle made
            raise DataError(f"{path.name}: no {key!r} entry (found: {found})")
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
    try:
        labels = np.asarray(d["labels"])
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists, odd objects
        raise DataError(f"{path.name}: expected {len(data):,} integer labels ({exc})") from None
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
    text = _text(path.read_bytes(), path.name, "content")
    return [line.strip() for line in text.splitlines() if line.strip()]


def meta_names_py(path: Path) -> list[str]:
    names = _str_keys(load_pickle(path), path.name).get("label_names", [])
    if not isinstance(names, list):
        raise DataError(
            f"{path.name}: expected label_names as a list of strings, found {type(names).__name__}"
        )
    for n in names:
        if not isinstance(n, (bytes, str)):
            raise DataError(
                f"{path.name}: expected label_names as a list of strings, found "
                f"{type(n).__name__} values among them"
            )
    return [_text(n, path.name, "label name") if isinstance(n, bytes) else n for n in names]
