"""Packed shards: an image folder's decoded images as WebDataset-style tar files, for torchrun.

`convkit data pack FOLDER OUT` converts FOLDER once (the folder cache's conversion, for one
model input shape and fit) and writes OUT/:

- `train-000000.tar`, `train-000001.tar`, ..., `val-*.tar`, `test-*.tar`: plain POSIX tar
  files in WebDataset's layout. Each sample is two members sharing a key: `<key>.npy`, the
  image as a (C, H, W) uint8 NumPy array, and `<key>.cls`, its class index as decimal text.
  `tar -x` unpacks them, and `webdataset.WebDataset(url).decode()` reads them as they are.
  Val is the training images' holdout (the last val_split of them, every class in proportion,
  as training on the folder holds out), or the folder's own val/.
- `shards.json`, written last (the commit point: a killed pack leaves no OUT): the classes,
  the image shape, the fit, the training images' per-channel mean and std, and for each split
  its shards with their sample counts, sizes and SHA-256 (as webdataset's `wids` shard
  indexes list `url` and `nsamples`).

Why tar: it is the format torchrun users already stream (WebDataset, and the tools built on
it), any machine can read it with `tar`, a shard is one long sequential read, and a shard can
be copied to one machine alone. Under torchrun, `--data OUT` gives process r of w the shards
r, r + w, r + 2w, ... of each split, and nothing else is opened: each machine needs only its
shards and the index, and no shared file system but the run folder. Every process trains on
the same number of images (the fewest any process has: equal shards lose at most the last
shard's remainder), at batch_size / w each, so a step still sees batch_size images.

Reading maps each shard: convkit writes every sample in the same number of bytes, so a
shard's images are one strided view of the file (nothing is copied until a batch reads it).
A tar written otherwise (by another tool) is read member by member.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convkit.data.arrays import Dataset, Split, channel_stats, holdout_split
from convkit.data.catalog import DatasetSpec
from convkit.data.memory import available_bytes
from convkit.data.sources import Log, _stderr, cache_dir, file_digests
from convkit.errors import ConfigError, DataError
from convkit.fileio import write_json

INDEX = "shards.json"
KIND = "convkit-shards"
VERSION = 1
SHARD_BYTES = 256 << 20  # a shard of about 256 MiB by default: WebDataset advises 100 MB to 1 GB
_NAME = re.compile(r"^(train|val|test)-\d{6}\.tar$")


def is_shards(path: str | os.PathLike) -> bool:
    """True for a folder written by `pack` (it holds shards.json)."""
    return (Path(path) / INDEX).is_file()


# ---- writing ------------------------------------------------------------------------------------


def pack(
    folder,
    out: str | os.PathLike,
    *,
    fit: str,
    val_split: float = 0.2,
    shard_images: int = 0,
    log: Log = _stderr,
) -> dict[str, Any]:
    """Write `folder` (a folders.FolderData converted with `fit`) as shards in `out`, which
    must not exist or be empty; returns the index. `shard_images`: images per shard (0: about
    SHARD_BYTES)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file: pack into a new folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty: pack into a new folder")
    data: Dataset = folder.dataset
    if folder.val is not None:
        train, val = data.train, folder.val
    else:
        train, val = holdout_split(data.train, val_split)
    image_bytes = int(np.prod(data.spec.image_shape))
    if shard_images < 0:
        raise ConfigError(
            f"expected shard_images >= 1 (or 0: about {SHARD_BYTES >> 20} MiB a shard), "
            f"received shard_images={shard_images}"
        )
    per = shard_images or max(1, SHARD_BYTES // image_bytes)
    mean, std = channel_stats(train)
    _remove_abandoned(out)
    work = out.with_name(f".{out.name}.packing-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        splits = {}
        for name, split in (("train", train), ("val", val), ("test", data.test)):
            splits[name] = [
                _write_shard(work / f"{name}-{i // per:06d}.tar", split[i : i + per], i)
                for i in range(0, len(split), per)
            ]
            n = len(splits[name])
            log(f"{name}: {len(split):,} images in {n} shard{'s' * (n != 1)}")
        index = {
            "kind": KIND,
            "version": VERSION,
            "name": data.spec.name,
            "source": str(data.spec.homepage),
            "classes": list(data.classes),
            "image_shape": list(data.spec.image_shape),
            "fit": fit,
            "val": "folder" if folder.val is not None else val_split,  # or the holdout's share
            "mean": mean.tolist(),
            "std": std.tolist(),
            "splits": splits,
        }
        write_json(work / INDEX, index)
        if out.exists():
            out.rmdir()
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return index


def _write_shard(path: Path, split: Split, first: int) -> dict[str, Any]:
    images, labels = split.images.numpy(), split.labels.numpy()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(len(labels)):
            key = f"{first + i:09d}"
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(images[i]), allow_pickle=False)
            _add(tar, f"{key}.npy", buf.getvalue())
            _add(tar, f"{key}.cls", str(int(labels[i])).encode())
    return {
        "url": path.name,
        "nsamples": len(labels),
        "bytes": path.stat().st_size,
        "sha256": file_digests(path)[1],
    }


def _remove_abandoned(out: Path) -> None:
    """The work folders of packs into `out` that were killed (their process is gone)."""
    for work in out.parent.glob(f".{out.name}.packing-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(work, ignore_errors=True)


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(payload), 0o644, 0  # the same bytes on every pack
    tar.addfile(info, io.BytesIO(payload))


# ---- reading ------------------------------------------------------------------------------------


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    root = Path(path)
    try:
        index = json.loads((root / INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{root / INDEX}: cannot be read ({exc}); pack the folder again") from None
    if not isinstance(index, dict) or index.get("kind") != KIND or index.get("version") != VERSION:
        index = index if isinstance(index, dict) else {}
        raise DataError(
            f"{root / INDEX}: expected kind {KIND!r} version {VERSION}, found "
            f"{index.get('kind')!r} version {index.get('version')}; pack the folder again "
            f"with this convkit"
        )
    missing = [
        k
        for k in ("classes", "image_shape", "fit", "val", "mean", "std", "splits")
        if k not in index
    ]
    missing += [f"splits.{k}" for k in ("train", "val", "test") if k not in index.get("splits", {})]
    if missing:
        raise DataError(f"{root / INDEX}: lacks {', '.join(missing)}; pack the folder again")
    return index


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Every shard of a packed folder checked against its index (size, then SHA-256): the
    index's summary with, per split, how many shards are intact, and the problems found."""
    root = Path(path)
    index = read_index(root)
    problems, splits = [], {}
    for name, entries in index["splits"].items():
        ok = 0
        for e in entries:
            shard = root / e["url"]
            if not shard.is_file():
                problems.append(f"{shard}: missing")
            elif shard.stat().st_size != e["bytes"]:
                problems.append(f"{shard}: {shard.stat().st_size:,} bytes, expected {e['bytes']:,}")
            elif file_digests(shard)[1] != e["sha256"]:
                problems.append(f"{shard}: SHA-256 differs from {INDEX}'s (damaged in a copy?)")
            else:
                ok += 1
        images = sum(e["nsamples"] for e in entries)
        splits[name] = {"images": images, "shards": len(entries), "ok": ok}
    keep = ("classes", "image_shape", "fit", "val")
    return {**{k: index[k] for k in keep}, "splits": splits, "problems": problems}


@dataclass(frozen=True)
class Shards:
    dataset: Dataset  # this process's part of each split (all of them in one process)
    val: Split
    index: dict[str, Any]
    read: dict[str, list[str]]  # split -> the shard files this process opened
    dropped: int  # training images left out so every process has as many


def load_shards(
    path: str | os.PathLike,
    *,
    rank: int = 0,
    world: int = 1,
    room: int | None = None,
    log: Log = _stderr,
) -> Shards:
    """Process `rank` of `world`'s shards of each split of a packed folder (every shard in one
    process), its training images cut to the fewest any process has. `room`: the bytes of
    memory this process may fill (default: the memory left, shared by the processes that
    torchrun started on this machine)."""
    root = Path(path)
    if room is None:
        room = available_bytes() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    index = read_index(root)
    shape = tuple(index["image_shape"])
    lists = index["splits"]
    if len(lists["train"]) < world:
        raise ConfigError(
            f"{root} has {len(lists['train'])} training shards for {world} processes: each "
            f"needs one at least; pack again with `--shard-images "
            f"{max(1, sum(s['nsamples'] for s in lists['train']) // world)}` or fewer"
        )
    counts = [sum(s["nsamples"] for s in lists["train"][r::world]) for r in range(world)]
    keep = min(counts)
    parts, read = {}, {}
    for name in ("train", "val", "test"):
        mine = lists[name][rank::world]
        read[name] = [s["url"] for s in mine]
        pieces = [_read_shard(root, s, shape, len(index["classes"])) for s in mine]
        parts[name] = _join(pieces, shape, room)
    train = parts["train"][:keep]
    total = {name: sum(s["nsamples"] for s in lists[name]) for name in lists}
    if world > 1:
        log(
            f"process {rank} of {world}: shards {', '.join(read['train'])} "
            f"({keep:,} training images)"
        )
    spec = DatasetSpec(
        name=index["name"],
        title=f"packed shards {root}",
        sources=(),
        mirrors=(),
        classes=tuple(index["classes"]),
        image_shape=shape,
        train_size=sum(counts) if world == 1 else keep * world,
        test_size=total["test"],
        homepage=root.resolve().as_uri(),
        citation="",
    )
    stats = (torch.tensor(index["mean"]), torch.tensor(index["std"]))
    dataset = Dataset(
        spec, train, parts["test"], {"shards": root}, val=parts["val"],
        local=world > 1, stats=stats,
    )  # fmt: skip
    return Shards(dataset, parts["val"], index, read, sum(counts) - keep * world)


def _join(pieces: list[Split], shape: tuple[int, ...], room: int) -> Split:
    """One split of a process's shards: in memory while it takes at most a third of the memory
    left to this process (`room`, bytes: the runner then keeps shuffling row by row), else
    copied into a file with no name (gone when the process ends, however it ends) and mapped,
    so that training reads it window by window as it reads a folder's cache."""
    if not pieces:
        return Split(torch.zeros((0, *shape), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    if len(pieces) == 1:
        return pieces[0]
    labels = torch.cat([p.labels for p in pieces])
    n = len(labels)
    if n * int(np.prod(shape)) <= room // 3:
        return Split(torch.cat([p.images for p in pieces]), labels)
    spill = cache_dir().parent / "shards"
    spill.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=spill) as f:  # unlinked from the start
        array = np.memmap(f, dtype=np.uint8, mode="w+", shape=(n, *shape))
        at = 0
        for p in pieces:  # shard by shard: one sequential read and write each
            array[at : at + len(p)] = p.images.numpy()
            at += len(p)
    return Split(torch.from_numpy(array), labels)  # the mapping keeps the file's pages


def _read_shard(root: Path, entry: dict[str, Any], shape: tuple[int, ...], n_classes: int) -> Split:
    name = entry["url"]
    if not _NAME.match(name):
        raise DataError(f"{root / INDEX}: unexpected shard name {name!r}; pack again")
    path = root / name
    try:
        size = path.stat().st_size
    except OSError:
        raise DataError(
            f"{path}: missing; copy this process's shards (and {INDEX}) to {root}, or pack again"
        ) from None
    if size != entry["bytes"]:
        raise DataError(
            f"{path}: {size:,} bytes, {INDEX} says {entry['bytes']:,} (truncated or replaced?); "
            f"copy it again or pack again"
        )
    try:
        with tarfile.open(path, "r:") as tar:  # uncompressed: the images are mapped in place
            samples: dict[str, dict[str, tarfile.TarInfo]] = {}
            for m in tar.getmembers():
                if not m.isfile():
                    continue
                folder, base = os.path.split(m.name)  # WebDataset: key = up to the first dot
                stem, _, ext = base.partition(".")
                samples.setdefault(os.path.join(folder, stem), {})[ext] = m
            keys = sorted(samples)
            labels = []
            for key in keys:
                if set(samples[key]) != {"npy", "cls"}:
                    raise DataError(
                        f"{path}: sample {key!r} has {sorted(samples[key])}, expected "
                        f"['cls', 'npy']"
                    )
                labels.append(int(tar.extractfile(samples[key]["cls"]).read()))
            images = _images(path, tar, [samples[k]["npy"] for k in keys], shape)
    except (tarfile.TarError, ValueError, OSError) as exc:
        raise DataError(
            f"{path}: not a readable shard ({exc}); copy it again or pack again"
        ) from None
    if len(keys) != entry["nsamples"]:
        raise DataError(f"{path}: {len(keys)} samples, {INDEX} says {entry['nsamples']}")
    bad = [(k, c) for k, c in zip(keys, labels, strict=True) if not 0 <= c < n_classes]
    if bad:
        raise DataError(
            f"{path}: sample {bad[0][0]!r} has class {bad[0][1]}, expected 0 to "
            f"{n_classes - 1} ({n_classes} classes in {INDEX})"
        )
    return Split(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64))


def _images(path: Path, tar: tarfile.TarFile, members: list, shape: tuple[int, ...]) -> np.ndarray:
    """(N, C, H, W) uint8 from the mapped file: a strided view when the samples are evenly
    spaced (as pack writes them), else copied one by one. Every member must be a .npy array
    of `shape` uint8 with the same header bytes."""
    if not members:
        return np.zeros((0, *shape), dtype=np.uint8)
    with tar.extractfile(members[0]) as f:
        version = np.lib.format.read_magic(f)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise DataError(f"{path}: .npy version {version}, expected 1.0 or 2.0")
        header_shape, fortran, dtype = read_header(f)
        header = f.tell()
    if tuple(header_shape) != shape or fortran or dtype != np.uint8:
        raise DataError(
            f"{path}: images of shape {tuple(header_shape)} {dtype}, expected {shape} uint8"
        )
    row = int(np.prod(shape))
    wrong = [m for m in members if m.size != header + row]
    if wrong:
        raise DataError(
            f"{path}: {wrong[0].name} holds {wrong[0].size} bytes, expected {header + row} "
            f"(a {shape} uint8 array)"
        )
    starts = np.array([m.offset_data for m in members], dtype=np.int64)
    stride = int(starts[1] - starts[0]) if len(starts) > 1 else 0
    mapped = np.memmap(path, dtype=np.uint8, mode="c")
    first_header = np.array(mapped[starts[0] : starts[0] + header])
    if any(not np.array_equal(mapped[a : a + header], first_header) for a in starts[1:]):
        raise DataError(f"{path}: its arrays are not all {shape} uint8 (their headers differ)")
    if np.all(np.diff(starts) == stride):
        first = int(starts[0]) + header
        view = np.lib.stride_tricks.as_strided(
            mapped[first:],
            shape=(len(members), row),
            strides=(stride or row, 1),
        )
        return view.reshape(len(members), *shape) if stride == row else _strided(view, shape)
    out = np.empty((len(members), row), dtype=np.uint8)  # spaced unevenly: copied one by one
    for i, a in enumerate(starts):
        out[i] = mapped[a + header : a + header + row]
    return out.reshape(len(members), *shape)


def _strided(view: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, C*H*W) rows `stride` bytes apart -> (N, C, H, W) without a copy."""
    n = view.shape[0]
    c, h, w = shape
    return np.lib.stride_tricks.as_strided(
        view, shape=(n, c, h, w), strides=(view.strides[0], h * w, w, 1)
    )
