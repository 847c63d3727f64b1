"""CIFAR-10: the binary and python versions made by the tests, every parse error, the refusing
unpickler, and archives verified before a contained extraction."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
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

from convkit.data import load_dataset
from convkit.data.archives import safe_extract
from convkit.data.catalog import CIFAR10
from convkit.data.cifar import load_pickle, read_cifar_bin, read_cifar_py
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
