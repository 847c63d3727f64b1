"""A folder of images is a dataset: one sub-folder per class, or ImageNet's train/ and test/.

Layouts. `PATH/<class>/...` (one folder per class), or `PATH/train/<class>/...` with
`PATH/test/<class>/...` and optionally `PATH/val/<class>/...`. The split layout is recognised when
every sub-folder of PATH is train, test or val and train is one of them (a class layout whose
classes happen to include "train", such as bus/car/train, stays a class layout). Class names are
the folder names of the training images, sorted; a test or val class with images must be one of
them. Files are found recursively in each class folder (symbolic links followed, each folder
once); names starting with "." are skipped; every other file is a candidate, and one that does not
decode is listed with load_image's reason, never skipped silently. Files outside class folders
are listed as ignored.

Conversion. Every image goes through `convkit.data.images.load_image`, the one conversion that
predict, inspect and the web page use: grey or RGB, light backgrounds inverted for grey models,
and fitted to the model's (H, W) as the run's `fit` says (images.FITS: crop, pad, stretch, or
auto), which the run records so that prediction converts exactly as training did.

Split. Without a test/ folder, each class is split on its own (stratified): its files are
ordered by a seeded hash of their paths (a seeded shuffle that stays put when a file is added:
at most one file changes side), and the first round(n x test_fraction) are the test set, at
least one file staying in training. The training split is in a seeded random order, and the
runner's `holdout_split(train, val_split)` (the last val_split of it) gets every class in
proportion: its share of each class is placed last. With a val/ folder, FolderData.val holds it.

Empty classes. A class folder with no file, or none that decodes, is left out with a note: a
model given a class it never saw would keep an output it can never learn. Fewer than two classes
left is an error. A class with fewer than FEW_IMAGES training images gets a warning.

Cache. The converted images (uint8 (N, C, H, W)) go into a .npy file in
`<cache_dir or $XDG_CACHE_HOME/convkit/folders>/<name>-<hash of the folder's absolute path and
image shape>/`, written row by row while decoding (neither the originals nor the whole array are
ever in memory), with `manifest.json`: every file's path, size, mtime_ns, class, split and row
(or why it failed), the image shape, the conversion and the split settings. The manifest is
written last, atomically: it is the commit point, so a killed build leaves the previous cache
(or none) and never half of one. A load whose folder is unchanged (same files, sizes and mtimes;
same conversion, including the source of images.py and Pillow's version) maps the .npy and
decodes nothing; otherwise the cache is rebuilt, decoding only the files added or changed and
copying the other rows. Training reads the memory-mapped rows (copy-on-write): row by row while
they fit in half the memory left, else window by window (arrays.Batches, data/memory.py).
`convkit data pack` writes the same rows as tar shards for several machines (data/shards.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from convkit.data.arrays import Dataset, Split, holdout_split
from convkit.data.catalog import DatasetSpec
from convkit.data.images import MAX_PIXELS, check_fit, load_image
from convkit.data.sources import Log, _stderr
from convkit.data.sources import cache_dir as _datasets_cache
from convkit.errors import ConfigError, ConvkitError, DataError
from convkit.fileio import atomic_path, write_text

try:  # POSIX: one process builds a cache while the others (torchrun's ranks) wait for it
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None

# A class with fewer training images gets a warning. With the default 20% validation holdout,
# fewer than 10 leaves it 1 or 2 validation images (its measured accuracy moves in 50-100 point
# steps) and under 8 to learn from; a floor below which its numbers are noise, not a target.
FEW_IMAGES = 10
# Training images of the largest class over the smallest's beyond which the report warns: a
# model can score well by rarely answering the small class, and accuracy hides it.
IMBALANCE = 10
TEST_FRACTION = 0.2  # share of each class held out as the test set when there is no test/
CONVERSION_VERSION = 1  # raise when this module converts or orders images differently
SPLITS = ("train", "test", "val")
_FORMAT = 1  # manifest layout
_CHUNK = 256  # files handed to the decoders at once: bounds the decoded images alive
# Decoding in processes pays for starting them (a forkserver that imports this module, about a
# second) from about this many files; fewer are decoded by threads, which start at once.
PROCESS_MIN_FILES = 2_000
# At most this many decoding processes: each may hold a decoded 50 MP photo (150 MB) at once.
MAX_DECODE_PROCESSES = 8
_PROGRESS_SECONDS = 10.0


class FileEntry(NamedTuple):  # a tuple: 100,000 of them are made on every load
    path: str  # relative to the folder, "/"-separated (e.g. "train/cat/001.jpg")
    size: int  # bytes
    mtime_ns: int


@dataclass(frozen=True)
class FolderScan:
    """What a folder holds, found without decoding anything."""

    root: Path  # absolute
    layout: str  # "classes" (PATH/<class>/) or "splits" (PATH/train/<class>/, PATH/test/...)
    splits: dict[str, dict[str, tuple[FileEntry, ...]]]  # split -> class -> files, by path
    empty: tuple[str, ...]  # training class folders without a file
    ignored: tuple[str, ...]  # files outside any class folder
    problems: tuple[tuple[str, str], ...]  # (path, why): files or folders that cannot be read

    @property
    def classes(self) -> tuple[str, ...]:
        """Training class folders holding at least one file, sorted."""
        return tuple(sorted(self.splits["train"]))

    def files(self) -> Iterator[tuple[str, str, FileEntry]]:
        """(split, class, file) for every candidate file."""
        for split, classes in self.splits.items():
            for cls, entries in classes.items():
                for entry in entries:
                    yield split, cls, entry


@dataclass
class FolderReport:
    """What a folder gave: counts per class and split, what was left out and why."""

    path: Path
    layout: str
    image_shape: tuple[int, int, int]
    classes: tuple[str, ...]  # the classes used, sorted: label k is classes[k]
    counts: dict[str, dict[str, int]]  # split ("train", "test", "val") -> class -> images
    holdout: dict[str, int]  # of train's images, those the runner's holdout_split takes
    unreadable: list[tuple[str, str]]  # (path relative to the folder, why), by path
    left_out: list[tuple[str, str]]  # (class, why)
    ignored: list[str]  # files outside any class folder
    split: dict[str, Any]  # how the test (and validation) images were chosen
    decode_seconds: float  # decoding in this call (0 when the cache served)
    cache: str  # "used", "built", "rebuilt: <why>", or "not written (check)"
    cache_path: Path | None
    errors: list[str] = field(default_factory=list)  # what stops training
    fingerprint: str = ""  # of the files' paths, sizes and times the cache was built from

    @property
    def few(self) -> list[tuple[str, int]]:
        """(class, training images) for classes with fewer than FEW_IMAGES."""
        train = self.counts.get("train", {})
        return [(c, train.get(c, 0)) for c in self.classes if train.get(c, 0) < FEW_IMAGES]

    def warnings(self) -> list[str]:
        found = [
            f"class {c!r} has only {n} training image{'s' * (n != 1)} (fewer than {FEW_IMAGES}: "
            "its validation and test accuracy rest on one or two images, and it is too few to "
            "learn a class from scratch)"
            for c, n in self.few
        ]
        train = self.counts.get("train", {})
        sizes = {c: train.get(c, 0) for c in self.classes}
        if sizes and min(sizes.values()) > 0:
            big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
            if sizes[big] > IMBALANCE * sizes[small]:
                share = sizes[small] / sum(sizes.values())
                found.append(
                    f"the classes are imbalanced: {big!r} has {sizes[big]:,} training images, "
                    f"{small!r} {sizes[small]:,} ({sizes[big] / sizes[small]:,.0f} times fewer; "
                    f"{share:.2%} of the images): overall accuracy can be high while {small!r} "
                    "is rarely recognised, so read the per-class results (`convkit inspect RUN "
                    "confusion`), and add images of the small classes if you can"
                )
        return found

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["cache_path"] = str(self.path), self.cache_path and str(self.cache_path)
        d["warnings"], d["rows"] = self.warnings(), class_rows(self)
        return d


@dataclass(frozen=True)
class FolderData:
    dataset: Dataset  # train and test, uint8 (N, C, H, W) mapped from the cache
    val: Split | None  # the val/ folder's images, when there is one
    report: FolderReport


# ---- finding the files --------------------------------------------------------------------------


def scan_folder(path: str | os.PathLike) -> FolderScan:
    """The layout, classes and files (with sizes and mtimes) of an image folder; decodes nothing."""
    root = _existing_folder(path)
    subdirs, loose = _children(root)
    layout = _layout(root, subdirs, loose)
    splits: dict[str, dict[str, tuple[FileEntry, ...]]] = {}
    empty: tuple[str, ...] = ()
    ignored = list(loose) if layout == "splits" else []  # a class layout lists them below
    problems: list[tuple[str, str]] = []
    for split in SPLITS if layout == "splits" else ("train",):
        if layout == "splits" and split not in subdirs:
            continue
        folder = root / split if layout == "splits" else root
        classes, loose_here = _class_files(root, folder, problems)
        ignored += loose_here
        splits[split] = {c: files for c, files in classes.items() if files}
        if split == "train":
            empty = tuple(sorted(c for c, files in classes.items() if not files))
    scan = FolderScan(root, layout, splits, empty, tuple(sorted(ignored)), tuple(problems))
    _check_scan(scan)
    return scan


def _existing_folder(path: str | os.PathLike) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"{root} does not exist: give a folder with one sub-folder of images per class "
            f"({root}/cat/, {root}/dog/, ...), or train/ and test/ folders of class folders"
        )
    if not root.is_dir():
        raise DataError(
            f"{root} is a file, not a folder: give the folder that holds one sub-folder per class"
        )
    return root.resolve()


def _children(root: Path) -> tuple[list[str], list[str]]:
    """Visible sub-folders (names) and visible files of `root`."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read the folder {root}: {exc.strerror}") from None
    visible = [e for e in entries if not e.name.startswith(".")]
    return [e.name for e in visible if e.is_dir()], [e.name for e in visible if not e.is_dir()]


def _layout(root: Path, subdirs: list[str], loose: list[str]) -> str:
    if not subdirs:
        held = f"holds {len(loose):,} files but" if loose else "is empty:"
        raise DataError(
            f"{root} {held} no class folders: put each class's images in a sub-folder named "
            f"after the class ({root}/cat/, {root}/dog/, ...)"
        )
    names = set(subdirs)
    if names <= set(SPLITS):
        if "train" not in names:
            raise DataError(
                f"{root} has {' and '.join(f'{s}/' for s in subdirs)} but no train/ folder: add "
                f"train/<class>/ folders of training images"
            )
        return "splits"
    return "classes"


def _class_files(
    root: Path, folder: Path, problems: list[tuple[str, str]]
) -> tuple[dict[str, tuple[FileEntry, ...]], list[str]]:
    """class -> its files (recursively, by path), and the files lying directly in `folder`."""
    subdirs, loose = _children(folder)
    prefix = _rel(root, str(folder))
    loose = [f"{prefix}/{name}" if prefix else name for name in loose]
    return {c: _files_under(root, folder / c, problems) for c in subdirs}, loose


def _rel(root: Path, path: str) -> str:
    base = str(root)
    rel = path[len(base) + 1 :] if path.startswith(base + os.sep) else ""
    return rel.replace(os.sep, "/") if path != base else ""


def _files_under(root: Path, folder: Path, problems: list) -> tuple[FileEntry, ...]:
    """Every visible file under `folder`, recursively; links followed, each folder once."""
    found, seen, stack = [], set(), [str(folder)]
    while stack:
        here = stack.pop()
        prefix = _rel(root, here)
        try:
            st = os.stat(here)
            if (st.st_dev, st.st_ino) in seen:  # a link back to a folder already searched
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
        except OSError as exc:
            problems.append((prefix, f"cannot read this folder ({exc.strerror})"))
            continue
        for e in entries:
            try:
                if e.is_dir():
                    stack.append(e.path)
                    continue
                st = e.stat()
            except OSError as exc:  # a broken link
                problems.append((f"{prefix}/{e.name}", f"cannot read this file ({exc.strerror})"))
                continue
            found.append(FileEntry(f"{prefix}/{e.name}", st.st_size, st.st_mtime_ns))
    return tuple(sorted(found, key=lambda f: f.path))


def _check_scan(scan: FolderScan) -> None:
    train_folders = set(scan.splits["train"]) | set(scan.empty)
    where = scan.root / "train" if scan.layout == "splits" else scan.root
    if len(scan.classes) < 2:
        found = f"only {scan.classes[0]!r}" if scan.classes else "none"
        raise DataError(
            f"{where}: a classifier needs at least two classes with images; found {found}. "
            f"Put each class's images in its own sub-folder ({where}/cat/, {where}/dog/)"
        )
    for split in ("test", "val"):
        if split not in scan.splits:
            continue
        unknown = sorted(set(scan.splits[split]) - train_folders)
        if unknown:
            raise DataError(
                f"{scan.root}/{split}/{unknown[0]}: class {unknown[0]!r} is not a training "
                f"class (no folder {where}/{unknown[0]}/); {split} classes must be training "
                f"classes: add train/{unknown[0]}/ with images, or move {split}/{unknown[0]} out"
            )
        if not scan.splits[split]:
            hint = "hold out a share of each class" if split == "test" else "hold out of train"
            raise DataError(
                f"{scan.root}/{split} holds no images: put them in {split}/<class>/ folders, or "
                f"remove {split}/ to {hint}"
            )


# ---- the split ----------------------------------------------------------------------------------


def _plan(scan: FolderScan, test_fraction: float, val_split: float, seed: int) -> list[dict]:
    """Manifest entries in row order: train (seeded order, holdout share of each class last),
    then test, then val (by class and path)."""
    train: dict[str, list[FileEntry]] = {}
    test: dict[str, list[FileEntry]] = {}
    for cls, files in scan.splits["train"].items():
        ordered = sorted(files, key=functools.partial(_shuffle_key, seed))
        n_test = 0 if "test" in scan.splits else _test_count(len(ordered), test_fraction)
        test[cls], train[cls] = ordered[:n_test], ordered[n_test:]
    if "test" in scan.splits:
        test = {c: list(files) for c, files in scan.splits["test"].items()}
    head, tail = _holdout_tail(train, val_split)
    rng = np.random.default_rng(seed)
    ordered_train = [head[i] for i in rng.permutation(len(head))]
    ordered_train += [tail[i] for i in rng.permutation(len(tail))]
    entries = [_entry(f, cls, "train") for cls, f in ordered_train]
    entries += [_entry(f, c, "test") for c in sorted(test) for f in test[c]]
    for cls, files in sorted(scan.splits.get("val", {}).items()):
        entries += [_entry(f, cls, "val") for f in files]
    return entries


def _shuffle_key(seed: int, entry: FileEntry) -> bytes:
    return hashlib.blake2b(f"{seed}\0{entry.path}".encode(), digest_size=8).digest()


def _test_count(n: int, fraction: float) -> int:
    """round(n x fraction), halves up, leaving at least one file to train on."""
    return min(int(n * fraction + 0.5), n - 1)


def _holdout_tail(
    train: dict[str, list[FileEntry]], val_split: float
) -> tuple[list[tuple[str, FileEntry]], list[tuple[str, FileEntry]]]:
    """(head, tail): tail holds round(N x val_split) files, as holdout_split counts them, shared
    among the classes in proportion to their sizes (largest remainders)."""
    classes = sorted(train)
    sizes = np.array([len(train[c]) for c in classes])
    n_val = int(round(int(sizes.sum()) * val_split))  # exactly holdout_split's count
    exact = sizes * (n_val / max(1, int(sizes.sum())))
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n_val - int(quota.sum())]:
        quota[i] += 1
    head, tail = [], []
    for cls, q in zip(classes, quota, strict=True):
        files = train[cls]
        cut = len(files) - int(q)
        head += [(cls, f) for f in files[:cut]]
        tail += [(cls, f) for f in files[cut:]]
    return head, tail


def _entry(f: FileEntry, cls: str, split: str) -> dict[str, Any]:
    return {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "class": cls, "split": split}


# ---- the cache ----------------------------------------------------------------------------------


def cache_location(
    path: str | os.PathLike,
    image_shape: tuple[int, int, int],
    cache_dir: str | os.PathLike | None = None,
    fit: str = "auto",
) -> Path:
    """The cache folder of an image folder at one image shape and fit: under `cache_dir` when
    given, else $XDG_CACHE_HOME/convkit/folders (~/.cache/convkit/folders). Each fit has its
    own, so runs that fit differently do not rebuild each other's."""
    root = Path(path).expanduser().resolve()
    shape = "x".join(str(int(d)) for d in image_shape)
    shape += "" if fit == "auto" else f"-{fit}"
    key = hashlib.sha256(f"{root}\0{shape}".encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir else _datasets_cache().parent / "folders"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", root.name)[:40] or "folder"
    return base / f"{name}-{shape}-{key}"


@functools.lru_cache(maxsize=1)
def _conversion_code() -> str:
    """A digest of load_image's module: any change to the conversion rebuilds the caches."""
    import convkit.data.images as images

    return hashlib.sha256(Path(images.__file__).read_bytes()).hexdigest()[:16]


def _settings(scan, image_shape, test_fraction, val_split, seed, fit, max_pixels) -> dict:
    """Everything a cache depends on besides the files; checked before anything is decoded."""
    import PIL

    c, h, w = (int(d) for d in image_shape)
    if c not in (1, 3) or h < 1 or w < 1:
        raise ConfigError(
            f"expected image_shape (1 or 3, H >= 1, W >= 1), received {tuple(image_shape)}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"expected 0 < test_fraction < 1, received test_fraction={test_fraction}")
    if not 0.0 <= val_split < 1.0:
        raise ConfigError(f"expected 0 <= val_split < 1, received val_split={val_split}")
    check_fit(fit)
    has_test = "test" in scan.splits
    return {
        "format": _FORMAT,
        "folder": str(scan.root),
        "layout": scan.layout,
        "image_shape": [c, h, w],
        "conversion": {
            "version": CONVERSION_VERSION,
            "function": "convkit.data.images.load_image",
            "code": _conversion_code(),
            "pillow": PIL.__version__,
            "invert_light": c == 1,  # grey models: dark ink on paper becomes light on black
            "digit_frame": False,
            "fit": fit,
            "max_pixels": int(max_pixels),
        },
        "split": {
            "test": "folder" if has_test else "stratified",
            "test_fraction": None if has_test else float(test_fraction),
            "seed": int(seed),
            "val_split": float(val_split),  # the holdout whose class shares are placed last
            "val": "folder" if "val" in scan.splits else "holdout",
        },
    }


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == _FORMAT else None


def _fingerprint(scan: FolderScan) -> str:
    """A digest of every file's path, size and mtime: equal digests, unchanged folder."""
    listing = "\n".join(f"{f.path}\0{f.size}\0{f.mtime_ns}" for _, _, f in scan.files())
    return hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()


def _changes(manifest: dict, scan: FolderScan) -> str:
    """'' when the manifest lists exactly the scanned files, else what changed."""
    old = {e["path"]: (e["size"], e["mtime_ns"]) for e in manifest["files"]}
    new = {f.path: (f.size, f.mtime_ns) for _, _, f in scan.files()}
    if old == new:
        return ""
    added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    changed = sum(1 for p in new.keys() & old.keys() if new[p] != old[p])
    parts = [(added, "added"), (removed, "removed"), (changed, "modified (size or mtime)")]
    return "the folder changed: " + ", ".join(f"{n:,} {what}" for n, what in parts if n)


def _valid_cache(folder: Path, scan: FolderScan, settings: dict) -> tuple[dict | None, str, Any]:
    """(manifest, "", images) when the cache in `folder` is for these files and settings;
    else (the old manifest or None, why not, None)."""
    manifest = _read_manifest(folder)
    if manifest is None:
        return None, "no cache yet", None
    for key, value in settings.items():
        if manifest.get(key) != value:
            return manifest, f"the {key.replace('_', ' ')} changed", None
    if manifest.get("fingerprint") != _fingerprint(scan):
        return manifest, _changes(manifest, scan) or "the folder changed", None
    try:
        images = np.load(folder / manifest["images"], mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as exc:
        return manifest, f"the cache's image file cannot be read ({exc})", None
    if images.dtype != np.uint8 or images.shape != (manifest["rows"], *settings["image_shape"]):
        return manifest, "the cache's image file has the wrong shape", None
    return manifest, "", images


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The cache folder, created and held: one process builds it, the others wait and use it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / "lock", "a+b")  # held for the whole block
    except OSError as exc:
        raise DataError(
            f"cannot write the image cache in {folder} ({exc.strerror}): pass a writable "
            f"cache_dir, or set XDG_CACHE_HOME to a writable folder"
        ) from None
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


class _Rows:
    """The cache's .npy, written row by row in order: a header (numpy's open_memmap makes it and
    sizes the file), then plain file writes, so written rows never count in this process's RSS."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        offset = mm.offset
        del mm
        self.file = open(path, "r+b", buffering=1 << 20)  # closed by __exit__
        self.file.seek(offset)

    def write(self, image: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(image, dtype=np.uint8).data)

    def __enter__(self) -> _Rows:
        return self

    def __exit__(self, failed: type | None, *_: object) -> None:
        try:
            if failed is None:
                self.file.flush()
                os.fsync(self.file.fileno())  # on disk before the manifest names it
        finally:
            try:
                self.file.close()
            except OSError:
                if failed is None:
                    raise


class _Previous:
    """The rows and errors of the last cache, by path, for files whose size and mtime are
    unchanged, so that a rebuild decodes only what is new. Rows are read from the file (only when
    `pixels`), not mapped: reading them does not grow this process's RSS."""

    def __init__(self, folder: Path, manifest: dict | None, settings: dict, pixels: bool) -> None:
        self.known: dict[str, tuple] = {}
        self.file, self.offset, self.row_bytes, self.pixels = None, 0, 0, pixels
        if manifest is None or any(
            manifest.get(k) != settings[k] for k in ("folder", "image_shape", "conversion")
        ):
            return
        if pixels:
            try:
                old = np.load(folder / manifest["images"], mmap_mode="r", allow_pickle=False)
                self.offset, self.row_bytes = old.offset, int(np.prod(old.shape[1:]))
                del old
                self.file = open(folder / manifest["images"], "rb")  # close()
            except (OSError, ValueError, TypeError, KeyError):
                return
        for e in manifest["files"]:
            if e.get("row") is not None or e.get("error"):
                self.known[e["path"]] = (e["size"], e["mtime_ns"], e.get("row"), e.get("error"))

    def unchanged(self, entries: list[dict]) -> int:
        """How many of `entries` the previous cache holds, unchanged."""
        return sum(
            1
            for e in entries
            if self.known.get(e["path"], (None, None))[:2] == (e["size"], e["mtime_ns"])
        )

    def get(self, entry: dict, shape: tuple[int, ...]) -> np.ndarray | str | None:
        """The old row (C, H, W) (empty when not `pixels`), the old error, or None: decode it."""
        old = self.known.get(entry["path"])
        if old is None or old[:2] != (entry["size"], entry["mtime_ns"]):
            return None
        if old[3]:
            return old[3]
        if not self.pixels:
            return np.zeros(0, np.uint8)  # readable before, unchanged: nothing to write
        self.file.seek(self.offset + old[2] * self.row_bytes)
        data = self.file.read(self.row_bytes)
        return np.frombuffer(data, np.uint8).reshape(shape) if len(data) == self.row_bytes else None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


# ---- decoding -----------------------------------------------------------------------------------


def _decode(rel: str, root: Path, settings: dict) -> np.ndarray | str:
    """The converted image (C, H, W), or why it cannot be read (paths relative to the folder)."""
    conv = settings["conversion"]
    try:
        return load_image(
            root / rel,
            tuple(settings["image_shape"]),
            invert_light=conv["invert_light"],
            digit_frame=False,
            fit=conv["fit"],
            max_pixels=conv["max_pixels"],
        )["converted"]  # the original (maybe a 50 MP photo) is dropped here, in the thread
    except (ConvkitError, OSError) as exc:
        return str(exc).replace(f"{root}{os.sep}", "").replace(str(root), ".")


def decode_workers() -> int:
    """The cores this process may use (its CPU affinity, which a container or taskset sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def decode_pool(workers: int) -> ProcessPoolExecutor:
    """Processes that decode images: Pillow holds the interpreter's lock for part of each
    image, so threads do not use every core. Started by a forkserver, not forked from this
    process, which may hold torch's threads and other threads' locks; the server imports this
    module once and each worker is forked from it ready to decode."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["convkit.data.folders"])
    return ProcessPoolExecutor(workers, mp_context=ctx)


def _pool(n_files: int) -> Executor:
    """Processes for a large decode where the program allows them, else threads.

    A new process re-runs the file of the program that started it (multiprocessing's rule):
    a script without an `if __name__ == "__main__":` guard would train again in every worker.
    So processes are used only where the program says it is safe, with CONVKIT_DECODE=processes
    (the command line sets it; so may a guarded script), and threads elsewhere."""
    workers = decode_workers()
    if (
        workers > 1
        and n_files >= PROCESS_MIN_FILES
        and os.environ.get("CONVKIT_DECODE") == "processes"
    ):
        return decode_pool(min(workers, MAX_DECODE_PROCESSES))
    return ThreadPoolExecutor(max_workers=min(4, workers))


def _results(chunk, wanted, previous, pool, decode, shape) -> tuple[list, int]:
    """Per entry of `chunk`: the image (C, H, W), its error, or None where not `wanted`; taken
    from the previous cache when unchanged, else decoded by `pool`."""
    results = [
        previous.get(e, shape) if want else None for e, want in zip(chunk, wanted, strict=True)
    ]
    todo = [k for k, r in enumerate(results) if r is None and wanted[k]]
    chunksize = 16 if isinstance(pool, ProcessPoolExecutor) else 1  # fewer, larger messages
    try:
        decoded = list(pool.map(decode, [chunk[k]["path"] for k in todo], chunksize=chunksize))
    except BrokenProcessPool:
        raise DataError(
            "a process decoding the images died (out of memory, or a decoder crashed on a "
            "damaged file); nothing was written. Decode on fewer cores with taskset, or find "
            "the file with `convkit data check`"
        ) from None
    for k, result in zip(todo, decoded, strict=True):
        results[k] = result
    return results, len(todo)


def _fill(scan, entries, settings, rows: _Rows | None, previous: _Previous, log: Log) -> dict:
    """Give every entry, in order, its row (the image written when `rows`) or its error.
    Training files come first, so the test and val files of a class with no readable training
    image are left out (row and error None) without being decoded."""
    shape = tuple(settings["image_shape"])
    decode = functools.partial(_decode, root=scan.root, settings=settings)
    usable: set[str] = set()  # classes with a readable training image
    row, done, decoded, segments = 0, 0, 0, {}
    shown = time.perf_counter()
    with _pool(len(entries) - previous.unchanged(entries)) as pool:
        for split in SPLITS:
            part = [e for e in entries if e["split"] == split]
            start = row
            for i in range(0, len(part), _CHUNK):
                chunk = part[i : i + _CHUNK]
                wanted = [split == "train" or e["class"] in usable for e in chunk]
                results, n = _results(chunk, wanted, previous, pool, decode, shape)
                decoded += n
                for e, result in zip(chunk, results, strict=True):
                    e["row"], e["error"] = None, result if isinstance(result, str) else None
                    if isinstance(result, np.ndarray):
                        e["row"], row = row, row + 1
                        if split == "train":
                            usable.add(e["class"])
                        if rows is not None:
                            rows.write(result)
                done += len(chunk)
                if time.perf_counter() - shown > _PROGRESS_SECONDS:
                    shown = time.perf_counter()
                    log(f"  {done:,} of {len(entries):,} files")
            if part:
                segments[split] = [start, row]
    return {"segments": segments, "used_rows": row, "decoded": decoded}


def _require_space(folder: Path, nbytes: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < nbytes + (64 << 20):  # and a margin for the manifest and the rest of the disk
        raise DataError(
            f"the image cache needs {nbytes / 1e6:,.0f} MB in {folder}, and only "
            f"{free / 1e6:,.0f} MB are free: free some space, pass another cache_dir, or train "
            f"at a smaller image size"
        )


def _build(scan, settings, folder: Path, old: dict | None, why: str, log: Log) -> dict:
    """Decode the folder into a new .npy in `folder`, then commit it by writing the manifest."""
    s = settings["split"]
    entries = _plan(scan, s["test_fraction"] or TEST_FRACTION, s["val_split"], s["seed"])
    shape = (len(entries), *settings["image_shape"])
    _require_space(folder, int(np.prod(shape)))
    previous = _Previous(folder, old, settings, pixels=True)
    name = f"images-{secrets.token_hex(4)}.npy"
    verb = "rebuilding" if old is not None else "building"
    todo, size = len(entries) - previous.unchanged(entries), "x".join(map(str, shape[1:]))
    log(
        f"{scan.root.name}: {why}; {verb} the image cache ({len(entries):,} files, {todo:,} to "
        f"decode to {size}) in {folder}"
    )
    started = time.perf_counter()
    try:
        with atomic_path(folder / name) as tmp, _Rows(tmp, shape) as rows:
            stats = _fill(scan, entries, settings, rows, previous, log)
    except OSError as exc:
        raise DataError(
            f"cannot write the image cache {folder / name} ({exc.strerror or exc}): free some "
            f"space or pass another cache_dir"
        ) from None
    finally:
        previous.close()
    manifest = {**settings, "fingerprint": _fingerprint(scan), "images": name}
    manifest.update(rows=len(entries), **stats)
    manifest["decode_seconds"] = round(time.perf_counter() - started, 3)
    manifest["files"] = entries
    # The commit point: until this rename the previous manifest (and its .npy) stay the cache.
    write_text(folder / "manifest.json", json.dumps(manifest, separators=(",", ":")) + "\n")
    _remove_stale(folder, keep=name)
    return manifest


def _remove_stale(folder: Path, keep: str) -> None:
    """Older image files and the temporary files of killed builds (the lock is held: no other
    build is writing)."""
    for p in folder.iterdir():
        if p.name.endswith(".tmp") or (p.name.startswith("images-") and p.name != keep):
            p.unlink(missing_ok=True)


# ---- the public entry points --------------------------------------------------------------------


def load_folder(
    path: str | os.PathLike,
    image_shape: tuple[int, int, int],
    *,
    test_fraction: float = TEST_FRACTION,
    val_split: float = 0.2,
    seed: int = 0,
    fit: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    log: Log = _stderr,
    max_pixels: int = MAX_PIXELS,
) -> FolderData:
    """An image folder as a Dataset of uint8 (N, C, H, W) images mapped from its cache, decoded
    once (again only for files added or changed). `val_split` is the share the runner will hold
    out of train with holdout_split: each class's part of it is placed last. Raises DataError
    when the folder cannot be trained on (fewer than two classes, no test image)."""
    started = time.perf_counter()
    scan = scan_folder(path)
    settings = _settings(scan, image_shape, test_fraction, val_split, seed, fit, max_pixels)
    folder = cache_location(scan.root, image_shape, cache_dir, fit)
    with _locked(folder):
        manifest, why, images = _valid_cache(folder, scan, settings)
        status, seconds = "used", 0.0
        if why:
            status = "built" if manifest is None else f"rebuilt: {why}"
            manifest = _build(scan, settings, folder, manifest, why, log)
            seconds = manifest["decode_seconds"]
            images = np.load(folder / manifest["images"], mmap_mode="c", allow_pickle=False)
    report = _report(scan, manifest, status, seconds, folder)
    if report.errors:
        raise DataError(f"{scan.root} cannot be trained on:\n" + format_table(report))
    took = time.perf_counter() - started
    used = (
        f"decoded {_n(manifest['decoded'], 'file')}" if why else "from the cache, nothing decoded"
    )
    bad = f"; {_n(len(report.unreadable), 'unreadable file')} left out" if report.unreadable else ""
    log(f"{scan.root.name}: {manifest['used_rows']:,} images, {used} ({took:.2f} s){bad}")
    return _folder_data(scan, manifest, images, report, folder)


def check_folder(
    path: str | os.PathLike,
    image_shape: tuple[int, int, int],
    *,
    test_fraction: float = TEST_FRACTION,
    val_split: float = 0.2,
    seed: int = 0,
    fit: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    log: Log = _stderr,
    max_pixels: int = MAX_PIXELS,
) -> FolderReport:
    """The report load_folder would give, with its problems in `errors` instead of raised.
    Uses a valid cache (nothing decoded); otherwise decodes the files to find the unreadable
    ones (only those added or changed since a cache, if there is one) and writes no cache:
    a check should not leave gigabytes for an image size the training may not use."""
    scan = scan_folder(path)
    settings = _settings(scan, image_shape, test_fraction, val_split, seed, fit, max_pixels)
    folder = cache_location(scan.root, image_shape, cache_dir, fit)
    manifest, why, _ = _valid_cache(folder, scan, settings)
    if not why:
        return _report(scan, manifest, "used", 0.0, folder)
    entries = _plan(scan, test_fraction, val_split, seed)
    previous = _Previous(folder, manifest, settings, pixels=False)
    log(f"{scan.root.name}: checking {len(entries) - previous.unchanged(entries):,} files ({why})")
    started = time.perf_counter()
    stats = _fill(scan, entries, settings, None, previous, log)
    manifest = {**settings, **stats, "files": entries}
    return _report(scan, manifest, "not written (check)", time.perf_counter() - started, folder)


def _n(count: int, thing: str) -> str:
    return f"{count:,} {thing}{'s' * (count != 1)}"


def _folder_data(scan, manifest: dict, images, report: FolderReport, folder: Path) -> FolderData:
    _, labels = _labels(manifest)

    def split(name: str) -> Split:  # views of the mapped file: nothing is read yet
        a, b = manifest["segments"][name]
        return Split(torch.from_numpy(images[a:b]), torch.from_numpy(labels[a:b]))

    train, test = split("train"), split("test")
    spec = DatasetSpec(
        name=scan.root.name,
        title=f"image folder {scan.root}",
        sources=(),  # nothing to download or verify: the files are the user's
        mirrors=(),
        classes=report.classes,
        image_shape=tuple(manifest["image_shape"]),
        train_size=len(train),
        test_size=len(test),
        homepage=scan.root.as_uri(),
        citation="",
    )
    files = {"folder": scan.root, "cache": folder / manifest["images"]}
    val = split("val") if "val" in manifest["segments"] else None
    return FolderData(Dataset(spec, train, test, files), val, report)


# ---- the report ---------------------------------------------------------------------------------


def _labels(manifest: dict) -> tuple[tuple[str, ...], np.ndarray]:
    """The classes used (those with a readable training image, sorted) and the label of each
    row (int64)."""
    entries = manifest["files"]
    trained = {e["class"] for e in entries if e["split"] == "train" and e["row"] is not None}
    classes = tuple(sorted(trained))
    index = {c: k for k, c in enumerate(classes)}
    labels = np.zeros(manifest["used_rows"], dtype=np.int64)
    for e in entries:
        if e["row"] is not None:
            labels[e["row"]] = index[e["class"]]
    return classes, labels


def _report(scan, manifest: dict, status: str, seconds: float, folder: Path) -> FolderReport:
    entries, segments = manifest["files"], manifest["segments"]
    classes, labels = _labels(manifest)
    counts = {}
    for split, (a, b) in segments.items():
        counted = np.bincount(labels[a:b], minlength=len(classes)).tolist()
        counts[split] = dict(zip(classes, counted, strict=True))
    failed = [(e["path"], e["error"]) for e in entries if e["error"]]
    report = FolderReport(
        path=scan.root,
        layout=scan.layout,
        image_shape=tuple(manifest["image_shape"]),
        classes=classes,
        counts=counts,
        holdout=_holdout_counts(labels, manifest, classes),
        unreadable=sorted(list(scan.problems) + failed),
        left_out=_left_out(scan, entries, classes),
        ignored=list(scan.ignored),
        split=dict(manifest["split"]),
        decode_seconds=round(seconds, 3),
        cache=status,
        cache_path=folder,
        fingerprint=manifest.get("fingerprint", ""),
    )
    report.errors = _errors(report)
    return report


def _holdout_counts(labels: np.ndarray, manifest: dict, classes: tuple[str, ...]) -> dict:
    """Per class, the training images that holdout_split(train, val_split) will take."""
    s = manifest["split"]
    if s["val"] == "folder" or not s["val_split"] or "train" not in manifest["segments"]:
        return {}
    a, b = manifest["segments"]["train"]
    train = torch.from_numpy(labels[a:b])
    # holdout_split itself, on images of no size: exactly the runner's rows.
    _, val = holdout_split(Split(torch.empty((b - a, 0, 0, 0)), train), s["val_split"])
    counted = torch.bincount(val.labels, minlength=len(classes)).tolist()
    return dict(zip(classes, counted, strict=True))


def _left_out(scan, entries: list[dict], classes: tuple[str, ...]) -> list[tuple[str, str]]:
    where = "train/" if scan.layout == "splits" else ""
    out = [(c, f"empty folder {where}{c}/") for c in scan.empty]
    for c in sorted(set(scan.classes) - set(classes)):
        n = len(scan.splits["train"][c])
        out.append((c, f"none of its {n:,} training files could be read"))
    for c, why in list(out):
        others = sum(1 for e in entries if e["class"] == c and e["split"] != "train")
        if others:
            out[out.index((c, why))] = (c, f"{why}; its {others:,} test/val files are left out too")
    return out


def _errors(report: FolderReport) -> list[str]:
    errors = []
    if len(report.classes) < 2:
        found = ", ".join(report.classes) or "none"
        errors.append(
            f"fewer than two classes have a readable training image ({found}): a classifier "
            "needs at least two"
        )
    for split in ("test", "val"):
        # A split with no image at all has no segment, hence no counts: test is always needed.
        if (split == "test" or split in report.counts) and not sum(
            report.counts.get(split, {}).values()
        ):
            errors.append(
                "no readable test image: each class keeps at least one image to train on, so "
                "the test set needs classes of 2 or more images; add images, hold out a larger "
                "test_fraction, or give a test/ folder"
                if split == "test" and report.split["test"] == "stratified"
                else f"no readable {split} image in {report.path / split}"
            )
    return errors


def class_rows(report: FolderReport) -> list[dict[str, Any]]:
    """One row per class: images to train on, to validate on (the val/ folder, or what the
    runner holds out of train), to test on, their total, and a note."""
    rows = []
    for c in report.classes:
        train = report.counts.get("train", {}).get(c, 0)
        held = report.holdout.get(c, 0)
        val_folder = report.counts.get("val", {}).get(c, 0)
        test = report.counts.get("test", {}).get(c, 0)
        rows.append(
            {
                "class": c,
                "train": train - held,
                "val": val_folder if "val" in report.counts else held,
                "test": test,
                "total": train + val_folder + test,
                "note": f"few: under {FEW_IMAGES} training images" if train < FEW_IMAGES else "",
            }
        )
    return rows


def _first(lines: list[str], n: int = 5) -> list[str]:
    more = [f"  and {len(lines) - n:,} more"] if len(lines) > n else []
    return [f"  {line}" for line in lines[:n]] + more


def _split_line(report: FolderReport) -> str:
    s = report.split
    test = (
        "the test/ folder"
        if s["test"] == "folder"
        else f"{s['test_fraction']:.0%} of each class (seeded shuffle, seed {s['seed']})"
    )
    if s["val"] == "folder":
        val = "the val/ folder"
    elif s["val_split"]:
        val = f"the last {s['val_split']:.0%} of train, each class in proportion"
    else:
        val = "none"
    return f"test: {test}; validation: {val}"


def format_table(report: FolderReport) -> str:
    """The report as text: the classes and their counts, then what was left out and why."""
    rows = class_rows(report)
    width = max([len("class"), len("total")] + [len(r["class"]) for r in rows])
    cols = ("train", "val", "test", "total")
    line = f"{{:<{width}}}" + " {:>9}" * 4 + "  {}"
    layout = "train/test folders" if report.layout == "splits" else "one folder per class"
    out = [
        f"{report.path} ({layout}): {len(rows)} class{'es' * (len(rows) != 1)}, images as "
        f"{'x'.join(map(str, report.image_shape))}",
        _split_line(report),
        line.format("class", *cols, "").rstrip(),
    ]
    for r in rows:
        out.append(line.format(r["class"], *(f"{r[k]:,}" for k in cols), r["note"]).rstrip())
    out.append(line.format("total", *(f"{sum(r[k] for r in rows):,}" for k in cols), "").rstrip())
    if report.left_out:
        out.append("Classes left out:")
        out += [f"  {c}: {why}" for c, why in report.left_out]
    if report.unreadable:
        out.append(f"Unreadable files, left out ({len(report.unreadable):,}):")
        out += _first([why if path in why else f"{path}: {why}" for path, why in report.unreadable])
    if report.ignored:
        out.append(f"Files outside any class folder, ignored ({len(report.ignored):,}):")
        out += _first(report.ignored)
    out += [f"Warning: {w}" for w in report.warnings()]
    out += [f"Error: {e}" for e in report.errors]
    cache = f"Cache: {report.cache}"
    if report.decode_seconds:
        cache += f" (decoded in {report.decode_seconds:.1f} s)"
    out.append(f"{cache}; {report.cache_path}")
    return "\n".join(out)


# ---- writing a split as a folder ----------------------------------------------------------------


def _folder_name(cls: str) -> str:
    name = cls.replace("/", "_").replace("\\", "_")
    if not name or name.startswith(".") or "\0" in name:
        raise ConfigError(f"class name {cls!r} cannot be a folder name (hidden or empty)")
    return name


def write_split_as_folders(
    split: Split,
    classes: tuple[str, ...] | list[str],
    root: str | os.PathLike,
    start: int = 0,
    count: int | None = None,
) -> int:
    """Write images start..start+count of `split` as root/<class>/<index>.png (the index in the
    split, zero-padded, so names sort in split order), making the class folders; returns how
    many were written. A "/" in a class name becomes "_" in its folder name."""
    from PIL import Image

    stop = len(split) if count is None else min(len(split), start + count)
    if start < 0 or (count is not None and count < 0) or start > len(split):
        raise ConfigError(
            f"expected 0 <= start <= {len(split)} and count >= 0, received start={start}, "
            f"count={count}"
        )
    names = [_folder_name(c) for c in classes]
    if len(set(names)) != len(names):
        raise ConfigError(f"class names {list(classes)} give the same folder name twice")
    root = Path(root)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(len(split))))
    images = split.images[start:stop].cpu().numpy()  # (N, C, H, W)
    labels = split.labels[start:stop].tolist()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        path = root / names[label] / f"{start + i:0{digits}d}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, compress_level=1)
    return stop - start
