"""A verified dataset kept as one file of uint8 tensors, so a load need not re-hash and re-parse.

Checking MNIST's or CIFAR-10's files (md5 and sha256 of every byte) and parsing them takes 0.2 to
0.8 s a load. After a verified load, `load_dataset` writes the parsed tensors to
`$XDG_CACHE_HOME/convkit/tensors/<dataset>-<key>.tensors`, the key a digest of what the catalog
declares (every file's checksums, image shape, classes, sizes) and of this format's version. The
next load stats, and never reads, every folder and copy of the dataset's files that `resolve`
would look at, in its order. When all are as recorded (path, size, mtime, ctime, inode, device),
the tensors come from the cache, checked against the sha256 it holds. Anything else (a file
touched, replaced, added or moved; another --data-dir or CONVKIT_DATA) makes a full verified load,
which rewrites the cache; a cache file that fails its checksums is logged and rebuilt. If the cache
cannot be written (read-only, disk full), training goes on without it, after one log line.

`CONVKIT_TENSOR_CACHE=0` turns the cache off: nothing is read from it or written to it.

Why stats are enough: a verified file whose stats have not changed holds the bytes that were
verified (make and git assume as much). ctime is set by the kernel on every write and, unlike
mtime, cannot be set back. The stats are taken before the verified load and again after it, and
the cache is written only if none changed, so a file written during a load (a download) is cached
on the next one. Limit: where timestamps are coarse (before Linux 6.13, or other file systems), a
same-size rewrite within the clock tick (a few ms) in which the file was last written can go
unseen. Bump VERSION when a parser's output changes: the key then names a new file.

Layout: MAGIC, the header's length (uint64, little-endian) and its sha256 (32 bytes), the header
(JSON: dataset, source format and folder, each file's path and checksums, the stats, and each
array's name, dtype, shape and offset after the header, plus the sha256 of the array bytes), then
the arrays' bytes, C order, native byte order (which the key includes). No fsync: the checksums
catch a file torn by a power cut, and atomic_path keeps a killed write from appearing at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import time
from pathlib import Path

import torch

from convkit.data.arrays import Dataset, Split
from convkit.data.catalog import DatasetSpec, Source
from convkit.data.sources import Log, cache_dir, search_roots, source_folders
from convkit.fileio import atomic_path

VERSION = 1
MAGIC = b"CKTENSR1"
_PREFIX = struct.Struct("<8sQ32s")  # magic, header length in bytes, sha256 of the header
_MAX_HEADER = 1 << 24  # bytes; a longer length is corruption, not a header
_DTYPES = {"uint8": torch.uint8, "int64": torch.int64}
_ARRAYS = ("train.images", "train.labels", "test.images", "test.labels")


class CorruptCache(ValueError):
    """The cache file is not one this module wrote whole."""


def enabled() -> bool:
    """False when CONVKIT_TENSOR_CACHE is 0 (or false, no, off)."""
    value = os.environ.get("CONVKIT_TENSOR_CACHE", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def cache_path(spec: DatasetSpec) -> Path:
    """Where `spec`'s tensors are cached: the name says which declared files they came from."""
    declared = (VERSION, sys.byteorder, spec.sources, spec.image_shape, spec.classes)
    declared += (spec.train_size, spec.test_size)
    key = hashlib.sha256(repr(declared).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
    return cache_dir().parent / "tensors" / f"{name}-{key}.tensors"


def survey(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> list[dict]:
    """The stats of every existing folder that `resolve` would look in, in its order, and of
    every file in them: the declared ones and those a parser reads without a declared checksum
    (CIFAR-10's batches.meta.txt)."""
    roots, seen = search_roots(data_dir), []
    for source in spec.sources:
        for folder, _ in source_folders(source, roots):
            try:  # every file in it, declared or not (a parser may read more than it declares)
                paths = [folder, *sorted(e.path for e in os.scandir(folder) if e.is_file())]
            except OSError:  # absent: locate skips it too
                continue
            for path in paths:
                try:
                    st = os.stat(path)
                except OSError:  # removed meanwhile: the stats then differ, as they should
                    continue
                stat = dict(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
                seen.append(dict(path=str(path), **stat, ino=st.st_ino, dev=st.st_dev))
    return seen


class TensorCache:
    """The cache of one dataset as found from one set of search roots.

    Made before the verified load: the stats it takes are what a cached copy must match, and what
    must not change before `store` writes a new one."""

    def __init__(self, spec: DatasetSpec, data_dir: str | os.PathLike | None, log: Log) -> None:
        self.spec, self.data_dir, self.log = spec, data_dir, log
        self.path = cache_path(spec)
        self.stats = survey(spec, data_dir)

    def load(self) -> Dataset | None:
        """The cached dataset, or None when there is none, it is stale, or it is corrupt (logged)."""
        try:
            # unbuffered: readinto puts the bytes straight into the tensors
            with open(self.path, "rb", buffering=0) as f:
                header = _read_header(f)
                if header["stats"] != self.stats:
                    return None  # a file changed or moved: the verified load rewrites the cache
                arrays = _read_arrays(f, header)
            files = {name: Path(entry["path"]) for name, entry in header["files"].items()}
            train = Split(arrays["train.images"], arrays["train.labels"])
            test = Split(arrays["test.images"], arrays["test.labels"])
        except (FileNotFoundError, NotADirectoryError):
            return None  # none yet
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.log(f"tensor cache {self.path} is corrupt ({exc}); rebuilding it from the files")
            return None
        return Dataset(self.spec, train, test, files)

    def store(self, data: Dataset, source: Source) -> None:
        """Write `data`, verified and parsed from `source`, unless a file changed meanwhile."""
        if survey(self.spec, self.data_dir) != self.stats:
            return  # written during this load (a download, an unpacking): cached on the next one
        tensors = [data.train.images, data.train.labels, data.test.images, data.test.labels]
        views = [memoryview(t.contiguous().numpy()).cast("B") for t in tensors]  # no copy
        arrays, offset, digest = [], 0, hashlib.sha256()
        for name, t, view in zip(_ARRAYS, tensors, views, strict=True):
            dtype = str(t.dtype).removeprefix("torch.")
            arrays.append(dict(name=name, dtype=dtype, shape=list(t.shape), offset=offset))
            offset += view.nbytes
            digest.update(view)
        files = {
            f.name: dict(path=str(data.files[f.name]), md5=f.md5, sha256=f.sha256)
            for f in source.files
        }
        header = dict(magic="convkit-tensors", version=VERSION, dataset=self.spec.name)
        header.update(format=source.format, folder=source.folder, files=files, stats=self.stats)
        header.update(arrays=arrays, sha256=digest.hexdigest())
        blob = json.dumps(header, separators=(",", ":")).encode()
        try:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
                f.write(_PREFIX.pack(MAGIC, len(blob), hashlib.sha256(blob).digest()) + blob)
                for view in views:
                    f.write(view)
            # this dataset as declared before (another key): never read again; and what a
            # write killed over an hour ago left (a younger one may be another process's)
            stem = self.path.name.rsplit("-", 1)[0]
            for old in self.path.parent.glob(f"{stem}-{'?' * 16}.tensors"):
                if old != self.path:
                    old.unlink(missing_ok=True)
            for tmp in self.path.parent.glob(f".{stem}-{'?' * 16}.tensors.*.tmp"):
                if time.time() - tmp.stat().st_mtime > 3600:
                    tmp.unlink(missing_ok=True)
        except OSError as exc:
            self.log(
                f"tensor cache not written to {self.path.parent} ({exc.strerror or exc}); "
                f"loading {self.spec.name} from its verified files each time"
            )


def _read_header(f) -> dict:
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or not prefix.startswith(MAGIC):
        raise CorruptCache(f"expected a file starting with {MAGIC!r}, found {prefix[:8]!r}")
    _, size, digest = _PREFIX.unpack(prefix)
    blob = f.read(min(size, _MAX_HEADER))
    if len(blob) != size or hashlib.sha256(blob).digest() != digest:
        raise CorruptCache(f"header of {size:,} bytes does not match its sha256")
    return json.loads(blob)


def _read_arrays(f, header: dict) -> dict[str, torch.Tensor]:
    """Each array read into a tensor of its own (no intermediate buffer), then hashed in place."""
    start, digest, arrays = f.tell(), hashlib.sha256(), {}
    for entry in header["arrays"]:
        t = torch.empty(entry["shape"], dtype=_DTYPES[entry["dtype"]])
        view = memoryview(t.numpy()).cast("B")
        f.seek(start + entry["offset"])
        done = 0
        while done < view.nbytes and (n := f.readinto(view[done:])):
            done += n
        if done < view.nbytes:
            raise CorruptCache(f"{entry['name']}: {done:,} of {view.nbytes:,} bytes (truncated)")
        digest.update(view)
        arrays[entry["name"]] = t
    if digest.hexdigest() != header["sha256"]:
        raise CorruptCache(f"array bytes have sha256 {digest.hexdigest()}, not the header's")
    return arrays
