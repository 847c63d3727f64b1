"""CIFAR-10: the binary and python versions made by the tests, every parse error, the refusing
unpickler, and archives verified before a contained extraction."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import resource
import tarfile

import numpy as np
import pytest
import torch
from conftest import (
    CIFAR_BATCHES,
    cifar_arrays,
    cifar_bin_bytes,
    fake_cifar_spec,
    file_spec,
    make_fake_cifar_bin,
)

from convkit.data import cifar, load_dataset
from convkit.data.archives import safe_extract
from convkit.data.catalog import CIFAR10
from convkit.data.cifar import (
    load_pickle,
    meta_names_bin,
    meta_names_py,
    read_cifar_bin,
    read_cifar_py,
)
from convkit.errors import DataError


def test_binary_records_become_rgb_planes(tmp_path):
    folder = make_fake_cifar_bin(tmp_path)
    data = load_dataset(fake_cifar_spec(folder), tmp_path)
    assert data.train.images.shape == (20, 3, 32, 32) and data.train.images.dtype == torch.uint8
    images, labels = cifar_arrays(4, 2)  # data_batch_3 holds train images 8..11
    assert torch.equal(data.train.images[8:12], torch.from_numpy(images))
    assert data.train.labels[8:12].tolist() == labels.tolist()
    # byte 1 of a record is the top-left red pixel, byte 1025 the top-left green one
    raw = (folder / "test_batch.bin").read_bytes()
    assert data.test.images[0, 0, 0, 0] == raw[1] and data.test.images[0, 1, 0, 0] == raw[1025]
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"


def test_partial_record(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(cifar_bin_bytes(*cifar_arrays(2, 0)) + b"\x01\x02")
    with pytest.raises(
        DataError,
        match=r"data_batch_1.bin: 6,148 bytes is not a whole number of "
        r"3073-byte records \(2 records and 2 bytes left over\)",
    ):
        read_cifar_bin(path)


def test_empty_batch(tmp_path):
    (tmp_path / "b.bin").write_bytes(b"")
    with pytest.raises(DataError, match=r"b.bin: 0 bytes is not a whole number"):
        read_cifar_bin(tmp_path / "b.bin")


def test_label_out_of_range(tmp_path):
    images, labels = cifar_arrays(3, 0)
    labels[2] = 11
    (tmp_path / "b.bin").write_bytes(cifar_bin_bytes(images, labels))
    with pytest.raises(DataError, match=r"b.bin: label 11 in record 2 is outside 0..9"):
        read_cifar_bin(tmp_path / "b.bin")


def test_missing_batch_is_named(tmp_path):
    folder = make_fake_cifar_bin(tmp_path)
    spec = fake_cifar_spec(folder)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DataError, match=r"fake-cifar: 1 of 6 files not found: data_batch_3.bin"):
        load_dataset(spec, tmp_path)


def test_class_names_must_match(tmp_path):
    folder = make_fake_cifar_bin(tmp_path, meta="cat\ndog\n")
    with pytest.raises(DataError, match=r"batches.meta.txt: class names \['cat', 'dog'\] differ"):
        load_dataset(fake_cifar_spec(folder), tmp_path)


def test_wrong_total_is_an_error(tmp_path):
    folder = make_fake_cifar_bin(tmp_path)
    spec = dataclasses.replace(fake_cifar_spec(folder), train_size=50000)
    with pytest.raises(DataError, match=r"expected 50,000 training images, found 20"):
        load_dataset(spec, tmp_path)


# ---- the python version -------------------------------------------------------------------------


def write_py_batches(folder, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR_BATCHES):
        images, labels = cifar_arrays(n, i)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels.tolist(),
            b"data": images.reshape(n, -1),
            b"filenames": [b"x.png"] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [c.encode() for c in CIFAR10.classes], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_python_version_reads_like_the_binary_one(tmp_path):
    folder = tmp_path / "cifar-10" / "cifar-10-batches-py"
    write_py_batches(folder)
    data = load_dataset(fake_cifar_spec(folder, kind="py"), tmp_path)
    images, labels = cifar_arrays(4, 5)
    assert torch.equal(data.test.images, torch.from_numpy(images))
    assert data.test.labels.tolist() == labels.tolist() and len(data.train) == 20


class Payload:
    """A pickle that runs a command when unpickled by pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_does_not_run_code(tmp_path):
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload is real: plain pickle runs it
    assert live.exists()
    marker = tmp_path / "marker"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: refusing to load (posix|os|nt)\.system"):
        read_cifar_py(path)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": io.BytesIO(b"x")}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load _io.BytesIO"):
        load_pickle(path)


@pytest.mark.parametrize(
    "content,message",
    [
        ({b"labels": [1]}, r"no 'data' entry \(found: labels\)"),
        (
            {b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]},
            r"expected data as uint8 \(N, 3072\), found uint8 \(2, 10\)",
        ),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, r"expected 2 integer labels"),
        (
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]},
            r"label 10 in record 0 is outside 0..9",
        ),
        ([1, 2], r"expected a dict, found list"),
    ],
)
def test_python_version_errors(tmp_path, content, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=message):
        read_cifar_py(path)


def test_not_a_pickle(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR pickle"):
        read_cifar_py(tmp_path / "test_batch")


# ---- archives -----------------------------------------------------------------------------------


def make_tar(path, members: dict[str, bytes], links: dict[str, str] | None = None):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.mark.parametrize(
    "members,links,message",
    [
        (
            {"ok.txt": b"1", "../evil.txt": b"x"},
            None,
            r"refusing member '../evil.txt': it would land outside",
        ),
        (
            {"a/../../evil.txt": b"x"},
            None,
            r"refusing member 'a/../../evil.txt': it would land outside",
        ),
        ({"/tmp/evil.txt": b"x"}, None, r"refusing member '/tmp/evil.txt': absolute path"),
        ({}, {"link": "/etc/passwd"}, r"refusing member 'link': a link"),
    ],
)
def test_extraction_refuses_escaping_members(tmp_path, members, links, message):
    archive = make_tar(tmp_path / "a.tar.gz", members, links)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=message):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or list(dest.rglob("*")) == []  # checked before anything is written


def fake_archive(tmp_path, n=4):
    """A cifar-10-binary.tar.gz holding fake batches, and a spec that declares it."""
    folder = make_fake_cifar_bin(tmp_path / "src", n)
    members = {f"cifar-10-batches-bin/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    archive = make_tar(tmp_path / "cifar-10-binary.tar.gz", members)
    spec = fake_cifar_spec(folder, n, archive=file_spec(archive))
    return archive, spec


def test_archive_in_a_data_root_is_verified_then_unpacked(tmp_path):
    archive, spec = fake_archive(tmp_path)
    root = tmp_path / "root"
    (root / "cifar-10").mkdir(parents=True)
    os.replace(archive, root / "cifar-10" / archive.name)
    messages = []
    data = load_dataset(spec, root, log=messages.append)
    assert len(data.train) == 20 and any("unpacking" in m for m in messages)
    assert (root / "cifar-10" / "cifar-10-batches-bin" / "test_batch.bin").is_file()


def test_corrupt_archive_is_never_unpacked(tmp_path):
    archive, spec = fake_archive(tmp_path)
    root = tmp_path / "root"
    (root / "cifar-10").mkdir(parents=True)
    data = bytearray(archive.read_bytes())
    data[100] ^= 0xFF
    (root / "cifar-10" / archive.name).write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_dataset(spec, root)
    assert f"{root / 'cifar-10' / archive.name}: sha256" in str(err.value)
    assert "download cifar-10-binary.tar.gz from" in str(err.value)
    assert not (root / "cifar-10" / "cifar-10-batches-bin").exists()


def test_archive_is_downloaded_verified_and_unpacked(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVKIT_OFFLINE")
    archive, spec = fake_archive(tmp_path)
    spec = dataclasses.replace(spec, mirrors=(tmp_path.as_uri() + "/",))
    data = load_dataset(spec, tmp_path / "dest", log=lambda m: None)
    assert len(data.test) == 4
    assert (tmp_path / "dest" / "cifar-10" / "cifar-10-binary.tar.gz").is_file()


def test_real_cifar10(real_cifar):
    data = load_dataset("cifar10", real_cifar)
    assert data.train.images.shape == (50000, 3, 32, 32) and len(data.test) == 10000
    assert data.train.labels.bincount().tolist() == [5000] * 10
    assert data.test.labels.bincount().tolist() == [1000] * 10
    mean = data.train.images.double().mean(dim=(0, 2, 3))  # the published training-set means
    assert torch.allclose(
        mean,
        torch.tensor([125.30691805, 122.95039414, 113.86538318], dtype=torch.float64),
        atol=1e-6,
    )


# ---- found by tests/test_fuzz.py (and by reading the code): convkit's error, and bounded -------


def test_a_memo_index_cannot_allocate_gigabytes(tmp_path):
    # 8 bytes: an empty list stored at memo index 2^27. The C unpickler grew its memo table to
    # twice the index and zeroed it: 2 GB and 8 s before (2^31: 32 GB), found by
    # test_cifar_pickles. The opcodes are now checked before anything is unpickled.
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02]r" + (2**27).to_bytes(4, "little") + b".")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError, match=r"data_batch_1: not a readable CIFAR pickle.*memo index"):
        read_cifar_py(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


@pytest.mark.parametrize(
    "data,message",
    [
        # a bytes8 opcode declaring 1 TB, 10 bytes given
        (b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"x" * 10, r"1099511627776 bytes"),
        # numpy.ndarray((10**10,), "O") called by the pickle itself: 80 GB of object pointers
        (b"cnumpy\nndarray\n((L10000000000L\ntS'O'\ntR.", r"numpy.ndarray called directly"),
        # numpy's _reconstruct asked for a shape of its own instead of numpy's (0,)
        (
            b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(L10000000000L\ntS'b'\ntR.",
            r"is not how numpy pickles",
        ),
        # codecs other than latin1 do work of their own (punycode is quadratic)
        (b"c_codecs\nencode\n(Vabc\nVpunycode\ntR.", r"'punycode' is not how Python pickles"),
    ],
)
def test_pickles_that_would_allocate_or_compute_are_refused(tmp_path, data, message):
    (tmp_path / "b").write_bytes(data)
    with pytest.raises(DataError, match=r"b: not a readable CIFAR pickle.*" + message):
        load_pickle(tmp_path / "b")


def test_too_many_opcodes(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_PICKLE_OPS", 10)
    (tmp_path / "b").write_bytes(pickle.dumps(list(range(20)), protocol=2))
    with pytest.raises(DataError, match=r"more than 10 pickle opcodes"):
        load_pickle(tmp_path / "b")


@pytest.mark.parametrize(
    "content,message",
    [
        # each raised something other than DataError before
        ({b"\xff": 1}, r"key b'\\xff' is not UTF-8 text"),  # UnicodeDecodeError
        ({1: 2, "a": 3}, r"no 'data' entry \(found: 1, a\)"),  # TypeError sorting the keys
        (  # ValueError: a ragged list of labels
            {b"data": np.zeros((2, 3072), np.uint8), b"labels": [[1], [1, 2]]},
            r"expected 2 integer labels \(setting an array element",
        ),
    ],
)
def test_odd_batch_contents(tmp_path, content, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=message):
        read_cifar_py(path)


@pytest.mark.parametrize(
    "content,message",
    [
        ({b"label_names": 5}, r"expected label_names as a list of strings, found int"),
        (
            {b"label_names": [b"cat", 3]},
            r"expected label_names as a list of strings, found int values among them",
        ),
        ({b"label_names": [b"\xff"]}, r"label name b'\\xff' is not UTF-8 text"),
    ],
)
def test_odd_meta_names(tmp_path, content, message):
    path = tmp_path / "batches.meta"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match=r"batches.meta: " + message):
        meta_names_py(path)


def test_binary_meta_that_is_not_text(tmp_path):
    # found by test_read_cifar_bin: b"\x80" raised UnicodeDecodeError
    (tmp_path / "batches.meta.txt").write_bytes(b"\x80")
    with pytest.raises(DataError, match=r"batches.meta.txt: content b'\\x80' is not UTF-8"):
        meta_names_bin(tmp_path / "batches.meta.txt")


def tar_bytes(*members: tarfile.TarInfo, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size))
    return buf.getvalue()


def longname_chain(n: int) -> bytes:
    link = tarfile.TarInfo("././@LongLink")
    link.type, link.size = tarfile.GNUTYPE_LONGNAME, 2
    block = link.tobuf(tarfile.USTAR_FORMAT) + b"a\0".ljust(512, b"\0")
    return block * n + tarfile.TarInfo("a").tobuf(tarfile.USTAR_FORMAT) + bytes(1024)


def member(name: str, size: int = 1, **pax) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.pax_headers = size, pax
    return info


@pytest.mark.parametrize(
    "data,message",
    [
        # found by test_safe_extract: a pax path with a NUL byte; ValueError before
        (tar_bytes(member("a", path="a\x00b")), r"refusing member 'a\\x00b': a NUL byte"),
        # a file that would replace the folder itself
        (tar_bytes(member(".")), r"refusing member '.': a file named as the folder"),
        (tar_bytes(member("a/..")), r"refusing member 'a/..': a file named as the folder"),
        # 3,000 GNU long-name headers in a row: tarfile recursed once per header
        (longname_chain(3000), r"cannot unpack into .*RecursionError"),
    ],
)
def test_odd_archives(tmp_path, data, message):
    (tmp_path / "a.tar").write_bytes(data)
    with pytest.raises(DataError, match=r"a.tar: " + message):
        safe_extract(tmp_path / "a.tar", tmp_path / "dest")
    assert list((tmp_path / "dest").rglob("*")) == []


def test_archive_size_limits(tmp_path):
    (tmp_path / "a.tar").write_bytes(tar_bytes(member("a", 600), member("b", 600)))
    with pytest.raises(DataError, match=r"a.tar: refusing to unpack more than .* 1,000 bytes"):
        safe_extract(tmp_path / "a.tar", tmp_path / "dest", max_bytes=1000)
    with pytest.raises(DataError, match=r"a.tar: refusing to unpack more than 1 members"):
        safe_extract(tmp_path / "a.tar", tmp_path / "dest", max_members=1)
    assert list((tmp_path / "dest").rglob("*")) == []
    assert len(safe_extract(tmp_path / "a.tar", tmp_path / "dest", max_bytes=1200)) == 2
