"""The IDX file format of MNIST and Fashion-MNIST, parsed with every field checked.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data, row-major. Images have magic 0x00000803 (uint8, 3 dims), labels
0x00000801 (uint8, 1 dim). Files may be gzip-compressed (*.gz) or raw.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from convkit.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# dtype code -> numpy dtype (big-endian where it matters)
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}


def read_bytes(path: Path) -> bytearray:
    """The decompressed bytes of `path` (gzip when it is named *.gz), writable for zero-copy use."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return bytearray(raw)
    if raw[:2] != b"\x1f\x8b":
        head = " ".join(f"{b:02x}" for b in raw[:4])
        raise DataError(
            f"{path.name}: not a gzip file (starts with bytes {head or 'nothing'}; expected 1f 8b). "
            f"If it was decompressed already, drop the .gz from its name; otherwise download it "
            f"again ({path})"
        )
    try:
        return bytearray(gzip.decompress(raw))
    except EOFError:
        raise DataError(
            f"{path.name}: truncated gzip stream ({len(raw):,} bytes on disk end before the "
            f"compressed data does); download it again ({path})"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path.name}: corrupt gzip data ({exc}); download it again ({path})"
        ) from None


def parse_idx(data: bytes | bytearray, name: str, expect_magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes into an array, checking magic, dtype code, dimensions and size."""
    if len(data) < 4:
        raise DataError(
            f"{name}: {len(data)} bytes is too short for an IDX header (4 bytes or more)"
        )
    magic = int.from_bytes(data[:4], "big")
    if expect_magic is not None and magic != expect_magic:
        hint = f" (is this {_KIND[magic]}?)" if magic in _KIND else ""
        raise DataError(f"{name}: expected magic 0x{expect_magic:08x}, found 0x{magic:08x}{hint}")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{name}: expected an IDX file (first two bytes 0), found magic 0x{magic:08x}"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _DTYPES)
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{name}: truncated header: {ndim} dimensions need {header} bytes, file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    shape = " x ".join(str(d) for d in dims)
    if found < expected:
        raise DataError(
            f"{name}: truncated: the header declares {shape} = {expected:,} bytes of data, "
            f"found {found:,}; download the file again"
        )
    if found > expected:
        raise DataError(
            f"{name}: {found - expected:,} unexpected bytes after the {shape} data the header declares"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    path = Path(path)
    return parse_idx(read_bytes(path), path.name, expect_magic)


def load_images_labels(
    images_path: Path, labels_path: Path, image_shape: tuple[int, int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One split: images (N, C, H, W) uint8 and labels (N,) uint8, checked against each other."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    c, h, w = image_shape
    if images.shape[1:] != (h, w):
        raise DataError(
            f"{images_path.name}: expected {h}x{w} images, found "
            f"{'x'.join(map(str, images.shape[1:]))}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} has {len(images):,} images but {labels_path.name} has "
            f"{len(labels):,} labels; the two files must come from the same split"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{labels_path.name}: label {int(labels[bad])} at index {bad} is outside 0..{num_classes - 1}"
        )
    return images.reshape(len(images), c, h, w), labels
