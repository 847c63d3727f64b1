"""The tensor cache: a second load of unchanged files hashes and parses nothing and returns the
same tensors; anything changed, corrupt, truncated or unwritable falls back to the verified load."""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import fake_cifar_spec, make_fake_cifar_bin, make_fake_mnist

from convkit.data import load_dataset, sources, tensorcache
from convkit.data.formats import FORMATS
from convkit.errors import DataError


@pytest.fixture(autouse=True)
def _cache_on(monkeypatch):
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "1")  # whatever the suite's default


def fake(kind: str, root: Path):
    """A tiny dataset in the real format under `root`, and its spec."""
    if kind == "idx":
        return make_fake_mnist(root)
    return fake_cifar_spec(make_fake_cifar_bin(root), n=4)


def load(spec, root, messages=None):
    return load_dataset(spec, root, log=(messages.append if messages is not None else print))


def assert_same(a, b) -> None:
    assert a.spec is b.spec and a.files == b.files and a.val is None and b.val is None
    for x, y in ((a.train, b.train), (a.test, b.test)):
        for s, t in ((x.images, y.images), (x.labels, y.labels)):
            assert s.dtype == t.dtype and s.shape == t.shape and torch.equal(s, t)


@pytest.fixture
def counted(monkeypatch):
    """How many files were hashed and datasets parsed since the fixture was made."""
    calls = {"hash": 0, "parse": 0}
    digests = sources.file_digests

    def file_digests(path):
        calls["hash"] += 1
        return digests(path)

    monkeypatch.setattr(sources, "file_digests", file_digests)
    for name, parser in list(FORMATS.items()):

        def parse(spec, paths, parser=parser):
            calls["parse"] += 1
            return parser(spec, paths)

        monkeypatch.setitem(FORMATS, name, parse)
    return calls


@pytest.mark.parametrize("kind", ["idx", "cifar-bin"])
def test_cached_load_equals_uncached_and_skips_hash_and_parse(kind, tmp_path, monkeypatch):
    spec = fake(kind, tmp_path)
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "0")
    reference = load(spec, tmp_path)
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "1")
    first = load(spec, tmp_path)
    assert_same(first, reference)
    assert tensorcache.cache_path(spec).is_file()

    def boom(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(sources, "file_digests", boom)
    monkeypatch.setitem(FORMATS, spec.sources[0].format, boom)
    assert_same(load(spec, tmp_path), reference)


def test_header_records_files_checksums_and_arrays(tmp_path):
    spec = fake("idx", tmp_path)
    data = load(spec, tmp_path)
    with open(tensorcache.cache_path(spec), "rb") as f:
        header = tensorcache._read_header(f)
    assert header["dataset"] == "fake-mnist" and header["format"] == "idx"
    for f in spec.sources[0].files:
        entry = header["files"][f.name]
        assert (entry["path"], entry["md5"], entry["sha256"]) == (
            str(data.files[f.name]),
            f.md5,
            f.sha256,
        )
        stat = next(s for s in header["stats"] if s["path"] == entry["path"])
        st = os.stat(entry["path"])
        assert (stat["size"], stat["mtime_ns"], stat["ino"]) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
        )
    shapes = {a["name"]: (a["dtype"], a["shape"]) for a in header["arrays"]}
    assert shapes == {
        "train.images": ("uint8", [60, 1, 28, 28]),
        "train.labels": ("int64", [60]),
        "test.images": ("uint8", [20, 1, 28, 28]),
        "test.labels": ("int64", [20]),
    }


def _touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def _recopy(path: Path) -> None:  # the same bytes, a new inode
    shutil.copy2(path, path.with_name("copy"))
    os.replace(path.with_name("copy"), path)


def _add_meta(path: Path) -> None:  # a file in the folder that no checksum covers
    (path.parent / "batches.meta.txt").write_text("")


@pytest.mark.parametrize("change", [_touch, _recopy, _add_meta])
def test_changed_file_makes_a_verified_load_and_a_new_cache(change, tmp_path, counted):
    spec = fake("idx", tmp_path)
    reference = load(spec, tmp_path)
    assert counted == {"hash": 4, "parse": 1}
    time.sleep(0.05)  # past the clock tick of coarse file timestamps (kernels before 6.13)
    change(tmp_path / "fake-mnist" / "t10k-labels-idx1-ubyte.gz")
    assert_same(load(spec, tmp_path), reference)
    assert counted == {"hash": 8, "parse": 2}
    assert_same(load(spec, tmp_path), reference)  # the rewritten cache
    assert counted == {"hash": 8, "parse": 2}


def test_rewritten_file_is_refused_not_served_from_the_cache(tmp_path):
    spec = fake("idx", tmp_path)
    load(spec, tmp_path)
    f = tmp_path / "fake-mnist" / "train-labels-idx1-ubyte.gz"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[20] ^= 1
    time.sleep(0.05)  # past the clock tick of coarse file timestamps (kernels before 6.13)
    f.write_bytes(bytes(data))  # the same size, in place (same inode)...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the mtime set back: ctime tells
    with pytest.raises(DataError, match="1 of 4 files not found: train-labels"):
        load(spec, tmp_path)


def test_a_file_no_checksum_covers_edited_in_place_is_noticed(tmp_path, counted):
    spec = fake("idx", tmp_path)
    meta = tmp_path / "fake-mnist" / "batches.meta.txt"  # read by CIFAR's parser, undeclared
    meta.write_text("airplane\n")
    load(spec, tmp_path)
    load(spec, tmp_path)
    assert counted["parse"] == 1  # the second load came from the cache
    time.sleep(0.05)
    with open(meta, "r+") as fh:  # the same size, in place: the folder's mtime stays
        fh.write("airplanf\n")
    load(spec, tmp_path)
    assert counted["parse"] == 2


def test_another_data_dir_gets_its_own_paths(tmp_path, counted):
    spec = fake("idx", tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    load(spec, tmp_path / "a")
    data = load(spec, tmp_path / "b")
    assert counted["parse"] == 2
    assert all(p.parent == tmp_path / "b" / "fake-mnist" for p in data.files.values())


def _flip_array_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # the last test label
    path.write_bytes(bytes(data))


def _flip_header_byte(path: Path) -> None:  # the JSON still parses: the header's sha256 tells
    data = path.read_bytes()
    path.write_bytes(data.replace(b"batches-bin", b"batches-biN", 1))


def _halve(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _cut_prefix(path: Path) -> None:
    os.truncate(path, 10)


@pytest.mark.parametrize("damage", [_flip_array_byte, _flip_header_byte, _halve, _cut_prefix])
def test_corrupt_cache_is_logged_and_rebuilt(damage, tmp_path, counted):
    spec = fake("cifar-bin", tmp_path)
    reference = load(spec, tmp_path)
    path = tensorcache.cache_path(spec)
    damage(path)
    messages: list[str] = []
    assert_same(load(spec, tmp_path, messages), reference)
    assert counted["parse"] == 2
    assert len(messages) == 1 and str(path) in messages[0] and "rebuilding" in messages[0]
    messages.clear()
    assert_same(load(spec, tmp_path, messages), reference)
    assert counted["parse"] == 2 and messages == []


@contextmanager
def _disk_full(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    yield  # pragma: no cover


@pytest.mark.parametrize("how", ["disk full", "not a folder"])
def test_unwritable_cache_still_loads_and_logs_once(how, tmp_path, monkeypatch):
    spec = fake("idx", tmp_path)
    if how == "disk full":
        monkeypatch.setattr(tensorcache, "atomic_path", _disk_full)
    else:
        tensors = tensorcache.cache_path(spec).parent
        tensors.parent.mkdir(parents=True)
        tensors.write_text("")  # a file where the folder goes (as root, chmod would not stop us)
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "0")
    reference = load(spec, tmp_path)
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "1")
    messages: list[str] = []
    assert_same(load(spec, tmp_path, messages), reference)
    assert len(messages) == 1 and messages[0].startswith("tensor cache not written")
    assert not tensorcache.cache_path(spec).exists()


def test_switched_off_reads_and_writes_nothing(tmp_path, monkeypatch, counted):
    spec = fake("idx", tmp_path)
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "0")
    load(spec, tmp_path)
    assert not (sources.cache_dir().parent / "tensors").exists()
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "1")
    load(spec, tmp_path)  # writes it
    written = tensorcache.cache_path(spec).stat()
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "0")
    load(spec, tmp_path)
    assert counted == {"hash": 12, "parse": 3}
    now = tensorcache.cache_path(spec).stat()
    assert (now.st_ino, now.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_new_declaration_replaces_only_its_own_old_cache(tmp_path):
    old = fake("idx", tmp_path)
    other = dataclasses.replace(old, name="fake-mnist-2")
    load(old, tmp_path)
    load(other, tmp_path)
    new = dataclasses.replace(old, classes=old.classes[:9] + ("nine",))  # another key
    load(new, tmp_path)
    names = sorted(p.name for p in tensorcache.cache_path(old).parent.iterdir())
    assert names == sorted([tensorcache.cache_path(new).name, tensorcache.cache_path(other).name])


def test_file_changed_during_the_load_is_not_cached(tmp_path, counted, monkeypatch):
    spec = fake("idx", tmp_path)
    parse = FORMATS["idx"]

    def parse_then_touch(spec, paths):
        _touch(paths["train-images-idx3-ubyte.gz"])
        return parse(spec, paths)

    monkeypatch.setitem(FORMATS, "idx", parse_then_touch)
    load(spec, tmp_path)
    assert not tensorcache.cache_path(spec).exists()


def test_killed_write_leaves_no_cache(tmp_path):
    spec = fake("idx", tmp_path)
    (tmp_path / "spec.pickle").write_bytes(pickle.dumps(spec))
    code = (
        "import pickle, sys; from convkit.data import load_dataset; "
        "load_dataset(pickle.loads(open(sys.argv[1], 'rb').read()), sys.argv[2])"
    )
    env = {**os.environ, "CONVKIT_KILL_WRITING": f"{tensorcache.cache_path(spec).name}:1"}
    args = [sys.executable, "-c", code, str(tmp_path / "spec.pickle"), str(tmp_path)]
    proc = subprocess.run(args, env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr
    assert not tensorcache.cache_path(spec).exists()
    [left] = tensorcache.cache_path(spec).parent.iterdir()
    assert left.suffix == ".tmp"
    load(spec, tmp_path)
    assert tensorcache.cache_path(spec).is_file()
    assert left.exists()  # younger than an hour: perhaps another process's write in progress
    os.utime(left, (time.time() - 7200, time.time() - 7200))
    tensorcache.cache_path(spec).unlink()
    load(spec, tmp_path)  # writes the cache again, and clears what the killed write left
    assert not left.exists() and tensorcache.cache_path(spec).is_file()
