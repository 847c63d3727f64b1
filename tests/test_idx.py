"""The IDX parser on tiny files made here: valid ones, and every way one can be wrong."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import fake_mnist_arrays, idx_bytes, write

from convkit.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    MAX_DECOMPRESSED,
    load_images_labels,
    parse_idx,
    read_bytes,
    read_idx,
)
from convkit.errors import DataError


def pair(tmp_path, n_images=5, n_labels=5, gz=True):
    images, _ = fake_mnist_arrays(n_images, 0)
    _, labels = fake_mnist_arrays(n_labels, 1)
    ext = ".gz" if gz else ""
    return (
        write(tmp_path / f"img-idx3-ubyte{ext}", idx_bytes(images), gz),
        images,
        write(tmp_path / f"lab-idx1-ubyte{ext}", idx_bytes(labels), gz),
        labels,
    )


def test_valid_files_round_trip(tmp_path):
    ip, images, lp, labels = pair(tmp_path)
    x, y = load_images_labels(ip, lp, (1, 28, 28), 10)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], images)
    np.testing.assert_array_equal(y, labels)


def test_uncompressed_files_parse(tmp_path):
    ip, images, lp, _ = pair(tmp_path, gz=False)
    np.testing.assert_array_equal(read_idx(ip, IMAGES_MAGIC), images)


@pytest.mark.parametrize(
    "code,dtype",
    [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_every_idx_dtype_is_big_endian(tmp_path, code, dtype):
    a = np.arange(-6, 6, dtype=dtype).reshape(3, 4)
    p = write(tmp_path / "a.idx", idx_bytes(a, code), gz=False)
    np.testing.assert_array_equal(read_idx(p), a)


def test_labels_file_given_as_images(tmp_path):
    _, _, lp, _ = pair(tmp_path)
    with pytest.raises(
        DataError,
        match=r"lab-idx1-ubyte.gz: expected magic 0x00000803, found "
        r"0x00000801 \(is this a labels file\?\)",
    ):
        read_idx(lp, IMAGES_MAGIC)


def test_images_file_given_as_labels(tmp_path):
    ip, _, _, _ = pair(tmp_path)
    with pytest.raises(DataError, match=r"found 0x00000803 \(is this an images file\?\)"):
        read_idx(ip, LABELS_MAGIC)


def test_unknown_dtype_code(tmp_path):
    p = write(tmp_path / "x.gz", idx_bytes(np.zeros((2, 2), np.uint8), magic=0x00000702))
    with pytest.raises(DataError, match=r"x.gz: unknown IDX dtype code 0x07"):
        read_idx(p)


def test_not_an_idx_file(tmp_path):
    p = write(tmp_path / "x.gz", b"PK\x03\x04 a zip file, not IDX")
    with pytest.raises(DataError, match=r"x.gz: expected an IDX file"):
        read_idx(p)


def test_truncated_data(tmp_path):
    images, _ = fake_mnist_arrays(5, 0)
    p = write(tmp_path / "img.gz", idx_bytes(images)[:-100])
    with pytest.raises(
        DataError,
        match=r"img.gz: truncated: the header declares 5 x 28 x 28 = "
        r"3,920 bytes of data, found 3,820",
    ):
        read_idx(p, IMAGES_MAGIC)


def test_truncated_header(tmp_path):
    p = write(tmp_path / "img.gz", idx_bytes(np.zeros((5, 28, 28), np.uint8))[:10])
    with pytest.raises(
        DataError, match=r"truncated header: 3 dimensions need 16 bytes, file has 10"
    ):
        read_idx(p)


def test_too_short(tmp_path):
    with pytest.raises(DataError, match=r"2 bytes is too short"):
        read_idx(write(tmp_path / "e.gz", b"\x00\x00"))


def test_trailing_bytes(tmp_path):
    p = write(tmp_path / "img.gz", idx_bytes(np.zeros((5, 28, 28), np.uint8)) + b"junk")
    with pytest.raises(DataError, match=r"4 unexpected bytes after the 5 x 28 x 28 data"):
        read_idx(p)


def test_truncated_gzip_stream(tmp_path):
    ip, _, _, _ = pair(tmp_path)
    data = ip.read_bytes()
    ip.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"img-idx3-ubyte.gz: truncated gzip stream"):
        read_idx(ip)


def test_corrupt_gzip(tmp_path):
    ip, _, _, _ = pair(tmp_path)
    data = bytearray(ip.read_bytes())
    data[-8] ^= 0xFF  # break the CRC
    ip.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"img-idx3-ubyte.gz: corrupt gzip data"):
        read_idx(ip)


def test_non_gzip_file_named_gz(tmp_path):
    p = write(tmp_path / "img-idx3-ubyte.gz", idx_bytes(np.zeros((2, 28, 28), np.uint8)), gz=False)
    with pytest.raises(
        DataError,
        match=r"img-idx3-ubyte.gz: not a gzip file \(starts with bytes "
        r"00 00 08 03; expected 1f 8b\)",
    ):
        read_idx(p)


def test_counts_disagree(tmp_path):
    ip, _, lp, _ = pair(tmp_path, n_images=5, n_labels=4)
    with pytest.raises(
        DataError,
        match=r"img-idx3-ubyte.gz has 5 images but lab-idx1-ubyte.gz has "
        r"4 labels",
    ):
        load_images_labels(ip, lp, (1, 28, 28), 10)


def test_wrong_image_size(tmp_path):
    ip = write(tmp_path / "img.gz", idx_bytes(np.zeros((3, 27, 28), np.uint8)))
    lp = write(tmp_path / "lab.gz", idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match=r"img.gz: expected 28x28 images, found 27x28"):
        load_images_labels(ip, lp, (1, 28, 28), 10)


def test_label_out_of_range(tmp_path):
    ip = write(tmp_path / "img.gz", idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    lp = write(tmp_path / "lab.gz", idx_bytes(np.array([1, 12, 3], np.uint8)))
    with pytest.raises(DataError, match=r"lab.gz: label 12 at index 1 is outside 0..9"):
        load_images_labels(ip, lp, (1, 28, 28), 10)


# ---- found by tests/test_fuzz.py: every input gives convkit's error, nothing else ---------------


def header(dims: list[int], code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    "dims",
    [
        [2**31, 2**31, 2**31, 0],  # issue 10, defect 5: numpy's reshape raised ValueError
        [0, 2, 2**31, 2**31],  # found by test_parse_idx: "array is too big"
        [2**32 - 1, 2**32 - 1, 0],
    ],
)
def test_empty_array_of_impossible_shape(dims):
    shape = " x ".join(map(str, dims))
    with pytest.raises(
        DataError, match=rf"h.idx: the header declares {shape} uint8 values, a shape"
    ):
        parse_idx(header(dims), "h.idx")


def test_a_possible_empty_shape_still_parses():
    assert parse_idx(header([2**31, 2**31, 0]), "h.idx").shape == (2**31, 2**31, 0)


def test_too_many_dimensions():
    # found by test_parse_idx: 65 dimensions of 0, no data; numpy raised ValueError
    with pytest.raises(DataError, match=r"h.idx: IDX header declares 65 dimensions; at most 32"):
        parse_idx(header([0] * 65), "h.idx")


def test_gzip_bomb_is_refused_while_inflating(tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header([2_000_000]) + bytes(2_000_000), mtime=0))  # ~2 KB
    with pytest.raises(
        DataError,
        match=r"bomb-idx3-ubyte.gz: decompresses to more than 1,000,000 bytes \(from [0-9,]+ on "
        r"disk\), more than any IDX dataset holds: refused as a gzip bomb",
    ):
        read_bytes(path, max_size=1_000_000)
    assert len(read_bytes(path, max_size=2_000_008)) == 2_000_008  # exactly at the limit: read
    assert MAX_DECOMPRESSED > 20 * 47_040_016  # far above MNIST's largest file


def test_multi_member_gzip_still_reads(tmp_path):
    a = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(a[:10], mtime=0) + gzip.compress(a[10:], mtime=0))
    np.testing.assert_array_equal(read_idx(path), np.arange(6).reshape(2, 3))


def test_unreadable_path(tmp_path):
    (tmp_path / "x.gz").mkdir()
    with pytest.raises(DataError, match=r"x.gz: cannot read"):
        read_idx(tmp_path / "x.gz")
