"""The IDX file format of MNIST and Fashion-MNIST, parsed with every field checked.

Layout: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension, then the data, row-major. Images have magic 0x00000803 (uint8, 3 dims), labels
0x00000801 (uint8, 1 dim). Files may be gzip-compressed (*.gz) or raw.
"""

from __future__ import annotations

import gzip
import io
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

# Decompressed bytes read from one .gz file, at most: 22x the largest file convkit reads (MNIST's
# train-images, 47,040,016 bytes) and 2x EMNIST's largest (547 MB), so no real IDX file comes near
# it, while a gzip bomb (a few MB inflating to many GB) stops here instead of exhausting memory.
MAX_DECOMPRESSED = 1 << 30
# numpy 1.x arrays have at most 32 dimensions (2.x: 64); IDX files in the wild have 1 to 4.
MAX_DIMS = 32


def read_bytes(path: Path, max_size: int = MAX_DECOMPRESSED) -> bytearray:
    """The decompressed bytes of `path` (gzip when it is named *.gz), writable for zero-copy use.

    A .gz file is inflated in chunks and refused once it passes `max_size` bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path.name}: cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix != ".gz":
        return bytearray(raw)
    if raw[:2] != b"\x1f\x8b":
        head = " ".join(f"{b:02x}" for b in raw[:4])
        raise DataError(
            f"{path.name}: not a gzip file (starts with bytes {head or 'nothing'}; expected 1f 8b). "
            f"If it was decompressed already, drop the .gz from its name; otherwise download it "
            f"again ({path})"
        )
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            while chunk := stream.read(1 << 20):
                out += chunk
                if len(out) > max_size:
                    raise DataError(
                        f"{path.name}: decompresses to more than {max_size:,} bytes (from "
                        f"{len(raw):,} on disk), more than any IDX dataset holds: refused as a "
                        f"gzip bomb or a wrong file ({path}); read_bytes(path, max_size=...) "
                        f"reads a larger one"
                    )
        return out
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
    if ndim > MAX_DIMS:
        raise DataError(
            f"{name}: IDX header declares {ndim} dimensions; at most {MAX_DIMS} are supported"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    shape = " x ".join(str(d) for d in dims)
    # numpy multiplies the nonzero dimensions, in bytes, even for an empty array: (2^31, 2^31,
    # 2^31, 0) holds no data but no array can have that shape.
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(
            f"{name}: the header declares {shape} {dtype.name} values, a shape no array can "
            f"have; this is not a real IDX file"
        )
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
