"""A folder of images as a dataset (convkit.data.folders), on tiny images written here with Pillow:
PNG and JPEG, grey, RGB and RGBA, of different sizes; damaged files, bombs and killed builds."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convkit.data.folders as folders
from convkit.data.arrays import Batches, Split, channel_stats, holdout_split
from convkit.data.augment import CropFlip
from convkit.data.folders import (
    FEW_IMAGES,
    check_folder,
    class_rows,
    format_table,
    load_folder,
    scan_folder,
    write_split_as_folders,
)
from convkit.data.images import load_image
from convkit.errors import DataError

SHAPE = (3, 8, 8)
KINDS = ("png", "jpeg", "grey", "rgba")


def value_of(k: int) -> int:
    """The brightness of class k's images: every pixel of every channel, so grey, RGB and JPEG
    files all carry their class in their pixels (and none is light enough to be inverted)."""
    return 20 + 25 * k


def write_image(path: Path, value: int, kind: str, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if kind == "grey":
        Image.new("L", size, value).save(path.with_suffix(".png"))
        return path.with_suffix(".png")
    if kind == "rgba":
        Image.new("RGBA", size, (value, value, value, 255)).save(path.with_suffix(".png"))
        return path.with_suffix(".png")
    suffix = ".jpg" if kind == "jpeg" else ".png"
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path.with_suffix(suffix))
    return path.with_suffix(suffix)


def make_classes(root: Path, sizes: dict[str, int]) -> Path:
    """root/<class>/ with sizes[class] images of every kind and several sizes."""
    for k, (cls, n) in enumerate(sorted(sizes.items())):
        for i in range(n):
            write_image(root / cls / f"{i:03d}", value_of(k), KINDS[i % 4], (8 + i % 5, 6 + i % 3))
    return root


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height with one tiny row: a bomb's shape in 0.1 KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def classes_of(images: torch.Tensor) -> list[int]:
    """Each image's class, read back from its brightness."""
    means = images.float().mean(dim=(1, 2, 3))
    return [int(round((m - 20) / 25)) for m in means.tolist()]


def cache_files(report) -> list[str]:
    return sorted(p.name for p in report.cache_path.iterdir())


def one_cache(data) -> list[str]:
    """What a cache folder holds when nothing is left over: the lock, the manifest, one .npy."""
    return sorted(["lock", "manifest.json", data.dataset.files["cache"].name])


@pytest.fixture
def counting(monkeypatch):
    """Counts the files load_folder decodes."""
    calls = []

    def counted(path, *args, **kwargs):
        calls.append(Path(path).name)
        return load_image(path, *args, **kwargs)

    monkeypatch.setattr(folders, "load_image", counted)
    return calls


# ---- layouts --------------------------------------------------------------------------------------


def test_one_folder_per_class(tmp_path):
    root = make_classes(tmp_path / "pets", {"dog": 20, "cat": 12, "bird": 15})
    data = load_folder(root, SHAPE, log=lambda _: None)
    ds, report = data.dataset, data.report
    assert ds.classes == ("bird", "cat", "dog") and ds.spec.name == "pets"
    assert ds.spec.image_shape == SHAPE and ds.spec.sources == () and ds.spec.mirrors == ()
    assert (ds.spec.train_size, ds.spec.test_size) == (len(ds.train), len(ds.test)) == (38, 9)
    assert data.val is None and report.layout == "classes" and report.cache == "built"
    for split in (ds.train, ds.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == SHAPE
        assert classes_of(split.images) == split.labels.tolist()  # every label on its image
    assert report.counts == {
        "train": {"bird": 12, "cat": 10, "dog": 16},
        "test": {"bird": 3, "cat": 2, "dog": 4},
    }
    rows = {r["class"]: r for r in class_rows(report)}
    assert rows["cat"] == {"class": "cat", "train": 8, "val": 2, "test": 2, "total": 12, "note": ""}
    assert sum(r["val"] for r in rows.values()) == round(38 * 0.2)
    assert json.loads(json.dumps(report.to_dict()))["rows"][1]["class"] == "cat"
    table = format_table(report)
    assert "class" in table and "total" in table and "20% of each class" in table
    assert [line.split()[:5] for line in table.splitlines() if line.startswith("cat ")] == [
        ["cat", "8", "2", "2", "12"]
    ]


def test_train_test_val_folders(tmp_path):
    root = tmp_path / "imagenet-like"
    make_classes(root / "train", {"ant": 10, "bee": 11, "cow": 12})
    make_classes(root / "test", {"ant": 3, "bee": 4})  # no cow in test: fine
    for i in range(2):  # val: classes written by hand, with the training classes' brightness
        write_image(root / "val" / "bee" / f"v{i}", value_of(1), "png")
        write_image(root / "val" / "cow" / f"v{i}", value_of(2), "jpeg")
    data = load_folder(root, SHAPE, log=lambda _: None)
    assert data.report.layout == "splits" and data.dataset.classes == ("ant", "bee", "cow")
    assert len(data.dataset.train) == 33 and len(data.dataset.test) == 7 and len(data.val) == 4
    assert classes_of(data.dataset.test.images) == data.dataset.test.labels.tolist()
    assert data.val.labels.tolist() == [1, 1, 2, 2]
    assert classes_of(data.val.images) == [1, 1, 2, 2]
    assert data.report.split["test"] == "folder" and data.report.split["val"] == "folder"
    assert data.report.holdout == {}  # the val/ folder validates; nothing is held out of train
    assert "the test/ folder; validation: the val/ folder" in format_table(data.report)
    # the test images are exactly load_image's conversion of the files, in class and path order
    files = sorted((root / "test").rglob("*.*"))
    expected = [load_image(f, SHAPE, invert_light=False)["converted"] for f in files]
    assert np.array_equal(data.dataset.test.images.numpy(), np.stack(expected))


def test_a_class_folder_named_train_is_still_a_class(tmp_path):
    root = make_classes(tmp_path / "vehicles", {"bus": 3, "car": 3, "train": 3})
    scan = scan_folder(root)
    assert scan.layout == "classes" and scan.classes == ("bus", "car", "train")


def test_files_are_found_recursively_and_hidden_ones_skipped(tmp_path):
    root = make_classes(tmp_path / "f", {"a": 3, "b": 3})
    write_image(root / "a" / "deeper" / "more" / "x", value_of(0), "png")
    write_image(root / "a" / ".hidden", value_of(0), "png")
    write_image(root / "b" / ".cache" / "y", value_of(1), "png")
    (root / "notes.txt").write_text("not in a class folder")
    scan = scan_folder(root)
    assert [f.path for f in scan.splits["train"]["a"]] == [
        "a/000.png", "a/001.jpg", "a/002.png", "a/deeper/more/x.png"
    ]  # fmt: skip
    assert len(scan.splits["train"]["b"]) == 3 and scan.ignored == ("notes.txt",)
    assert all(f.size > 0 and f.mtime_ns > 0 for _, _, f in scan.files())


def test_grey_models_get_grey_images_with_light_backgrounds_inverted(tmp_path):
    root = tmp_path / "ink"
    for i in range(5):
        write_image(root / "light" / f"{i}", 230, KINDS[i % 4])  # dark on light paper
        write_image(root / "dark" / f"{i}", 10, KINDS[i % 4])
    data = load_folder(root, (1, 6, 6), log=lambda _: None)
    images = torch.cat([data.dataset.train.images, data.dataset.test.images])
    labels = torch.cat([data.dataset.train.labels, data.dataset.test.labels])
    assert images.shape[1:] == (1, 6, 6)
    light, dark = (images[labels == data.dataset.classes.index(c)] for c in ("light", "dark"))
    assert light.float().mean() == pytest.approx(25, abs=3)  # 255 - 230: inverted
    assert dark.float().mean() == pytest.approx(10, abs=3)


# ---- the split ------------------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions_and_is_seeded(tmp_path):
    sizes = {"a": 23, "b": 41, "c": 10, "d": 57}
    root = make_classes(tmp_path / "s", sizes)
    data = load_folder(root, SHAPE, seed=3, cache_dir=tmp_path / "c1", log=lambda _: None)
    counts = data.report.counts
    for cls, n in sorted(sizes.items()):
        assert abs(counts["test"][cls] - n * 0.2) <= 1  # within one image per class
        assert counts["train"][cls] + counts["test"][cls] == n
        # the holdout the runner takes (the last 20% of train) has every class in proportion
        assert abs(data.report.holdout[cls] - counts["train"][cls] * 0.2) <= 1
    train, val = holdout_split(data.dataset.train, 0.2)
    held = torch.bincount(val.labels, minlength=4).tolist()
    assert held == [data.report.holdout[c] for c in data.dataset.classes]
    assert len(set(train.labels[:20].tolist())) > 1  # the training order is shuffled
    again = load_folder(root, SHAPE, seed=3, cache_dir=tmp_path / "c2", log=lambda _: None)
    assert torch.equal(again.dataset.train.labels, data.dataset.train.labels)
    assert torch.equal(again.dataset.test.images, data.dataset.test.images)
    other = load_folder(root, SHAPE, seed=4, cache_dir=tmp_path / "c1", log=lambda _: None)
    assert not torch.equal(other.dataset.train.labels, data.dataset.train.labels)
    assert other.report.cache == "rebuilt: the split changed"


def test_adding_a_file_moves_at_most_one_file_across_the_split(tmp_path):
    root = make_classes(tmp_path / "s", {"a": 30, "b": 30})

    def test_files() -> set[str]:
        report = load_folder(root, SHAPE, log=lambda _: None).report
        manifest = json.loads((report.cache_path / "manifest.json").read_text())
        return {e["path"] for e in manifest["files"] if e["split"] == "test"}

    before = test_files()
    write_image(root / "a" / "new", value_of(0), "png")
    after = test_files()
    assert len(before - after) <= 1 and len(after - before) <= 1


# ---- the cache ------------------------------------------------------------------------------------


def test_second_load_uses_the_cache_and_decodes_nothing(tmp_path, monkeypatch):
    root = make_classes(tmp_path / "c", {"x": 12, "y": 9})
    first = load_folder(root, SHAPE, log=lambda _: None)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folders, "load_image", no_decoding)
    lines = []
    second = load_folder(root, SHAPE, log=lines.append)
    assert second.report.cache == "used" and second.report.decode_seconds == 0
    assert "from the cache, nothing decoded" in lines[-1]
    pairs = ((first.dataset.train, second.dataset.train), (first.dataset.test, second.dataset.test))
    for a, b in pairs:
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert check_folder(root, SHAPE).cache == "used"  # a check reads the cache too
    assert cache_files(second.report) == one_cache(first)


def test_a_changed_folder_is_noticed_and_only_changed_files_decoded(tmp_path, counting):
    root = make_classes(tmp_path / "c", {"x": 12, "y": 9})
    load_folder(root, SHAPE, log=lambda _: None)
    assert len(counting) == 21
    counting.clear()
    write_image(root / "x" / "new", value_of(0), "png")  # added
    lines = []
    data = load_folder(root, SHAPE, log=lines.append)
    assert counting == ["new.png"] and "the folder changed: 1 added" in data.report.cache
    assert "the folder changed: 1 added; rebuilding the image cache (22 files, 1 to" in lines[0]
    assert len(data.dataset.train) + len(data.dataset.test) == 22
    counting.clear()
    write_image(root / "y" / "000", value_of(0), "png", (30, 30))  # modified: now looks like x
    data = load_folder(root, SHAPE, log=lambda _: None)
    assert counting == ["000.png"] and "1 modified" in data.report.cache
    images = torch.cat([data.dataset.train.images, data.dataset.test.images])
    labels = torch.cat([data.dataset.train.labels, data.dataset.test.labels])
    assert sum(a != b for a, b in zip(classes_of(images), labels.tolist(), strict=True)) == 1
    counting.clear()
    (root / "x" / "001.jpg").unlink()  # removed
    data = load_folder(root, SHAPE, log=lambda _: None)
    assert counting == [] and "1 removed" in data.report.cache
    assert len(data.dataset.train) + len(data.dataset.test) == 21
    assert len([n for n in cache_files(data.report) if n.endswith(".npy")]) == 1  # old removed


def test_the_training_data_is_mapped_copy_on_write(tmp_path):
    root = make_classes(tmp_path / "c", {"x": 12, "y": 9})
    data = load_folder(root, SHAPE, log=lambda _: None)
    original = data.dataset.train.images[0].clone()
    data.dataset.train.images[0] = 255  # an in-place change stays in this process
    again = load_folder(root, SHAPE, log=lambda _: None)
    assert torch.equal(again.dataset.train.images[0], original)


def test_training_runs_on_the_mapped_split(tmp_path):
    root = make_classes(tmp_path / "c", {"x": 30, "y": 30})
    data = load_folder(root, SHAPE, log=lambda _: None)
    train, val = holdout_split(data.dataset.train, 0.2)
    mean, std = channel_stats(train)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    augment = CropFlip(2, g)
    batches = Batches(train, 8, shuffle=True, generator=g, augment=augment, mean=mean, std=std)
    seen = 0
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    assert seen == len(train) and torch.isfinite(loss)
    assert sum(len(y) for _, y in Batches(val, 5)) == len(val) == round(48 * 0.2)  # 60 - 12 test


def run_python(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True
    )


def test_a_killed_build_leaves_no_loadable_cache(tmp_path, counting):
    root = make_classes(tmp_path / "k", {"x": 30, "y": 30})
    cache = tmp_path / "cache"
    killed = run_python(
        f"""
        import os, signal
        import convkit.data.folders as folders
        real, calls = folders.load_image, []
        def dying(*args, **kwargs):
            calls.append(1)
            if len(calls) == 25:  # in the middle of writing the images
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        folders.load_image = dying
        folders.load_folder({str(root)!r}, {SHAPE}, cache_dir={str(cache)!r})
        """
    )
    assert killed.returncode == -9, killed.stderr
    (folder,) = cache.iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert "manifest.json" not in names and any(n.endswith(".tmp") for n in names)
    data = load_folder(root, SHAPE, cache_dir=cache, log=lambda _: None)
    assert len(counting) == 60 and data.report.cache == "built"  # everything decoded again
    assert classes_of(data.dataset.train.images) == data.dataset.train.labels.tolist()
    assert cache_files(data.report) == one_cache(data)


def test_a_build_killed_at_its_commit_keeps_the_previous_cache(tmp_path, counting):
    root = make_classes(tmp_path / "k", {"x": 10, "y": 10})
    cache = tmp_path / "cache"
    first = load_folder(root, SHAPE, cache_dir=cache, log=lambda _: None)
    write_image(root / "y" / "new", value_of(1), "png")
    killed = run_python(
        f"""
        import convkit.data.folders as folders
        folders.load_folder({str(root)!r}, {SHAPE}, cache_dir={str(cache)!r})
        """,
        {"CONVKIT_KILL_WRITING": "manifest.json:1"},  # half the manifest written, then SIGKILL
    )
    assert killed.returncode == -9, killed.stderr
    manifest = json.loads((first.report.cache_path / "manifest.json").read_text())
    assert manifest["images"] == first.dataset.files["cache"].name  # the old cache, whole
    assert len(manifest["files"]) == 20
    counting.clear()
    data = load_folder(root, SHAPE, cache_dir=cache, log=lambda _: None)
    assert counting == ["new.png"] and len(data.dataset.train) + len(data.dataset.test) == 21
    assert cache_files(data.report) == one_cache(data)


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_files_are_reported_and_the_rest_loads(tmp_path):
    root = make_classes(tmp_path / "bad", {"cat": 12, "dog": 12})
    (root / "cat" / "notes.txt").write_text("not an image")
    write_image(root / "dog" / "whole", 90, "jpeg", (40, 40))
    data = (root / "dog" / "whole.jpg").read_bytes()
    (root / "dog" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "dog" / "whole.jpg").unlink()
    (root / "dog" / "huge.png").write_bytes(png_declaring(30_000, 30_000))  # 900 MP declared
    (root / "bird").mkdir()  # an empty class
    for i in range(4):
        (root / "cat" / f"empty{i}.png").write_bytes(b"")
    lines = []
    loaded = load_folder(root, SHAPE, log=lines.append)
    report = loaded.report
    assert loaded.dataset.classes == ("cat", "dog")
    assert len(loaded.dataset.train) + len(loaded.dataset.test) == 24
    reasons = dict(report.unreadable)
    assert list(reasons) == sorted(reasons) and len(reasons) == 7
    assert "is not an image convkit reads" in reasons["cat/notes.txt"]
    assert "is a damaged image file" in reasons["dog/cut.jpg"]
    assert "900,000,000 pixels, over the limit" in reasons["dog/huge.png"]
    assert "is empty (0 bytes)" in reasons["cat/empty0.png"]
    assert str(root) not in reasons["dog/huge.png"]  # named relative to the folder
    assert report.left_out == [("bird", "empty folder bird/")]
    table = format_table(report)
    assert "Unreadable files, left out (7):" in table and "  and 2 more" in table
    assert "cat/empty0.png is empty (0 bytes)" in table
    assert "bird: empty folder bird/" in table
    assert "7 unreadable files left out" in lines[-1]
    assert cache_files(report) == one_cache(loaded)


def test_few_images_warn(tmp_path):
    root = make_classes(tmp_path / "few", {"many": 30, "some": 8})
    report = check_folder(root, SHAPE, log=lambda _: None)
    assert report.few == [("some", 6)] and FEW_IMAGES == 10
    assert "class 'some' has only 6 training images (fewer than 10" in format_table(report)
    assert {r["class"]: r["note"] for r in class_rows(report)}["some"].startswith("few")


def test_a_class_with_no_readable_image_is_left_out(tmp_path):
    root = make_classes(tmp_path / "x", {"a": 5, "b": 5})
    for i in range(3):
        (root / "c" / f"{i}.png").parent.mkdir(exist_ok=True)
        (root / "c" / f"{i}.png").write_text("text")
    data = load_folder(root, SHAPE, log=lambda _: None)
    assert data.dataset.classes == ("a", "b")
    ((cls, why),) = data.report.left_out
    assert cls == "c" and why.startswith("none of its 3 training files could be read")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: None, r"does not exist: give a folder with one sub-folder of images per class"),
        (lambda r: r.write_text("x"), r"is a file, not a folder"),
        (lambda r: r.mkdir(), r"is empty: no class folders"),
        (lambda r: write_image(r / "a", 9, "png"), r"holds 1 files but no class folders"),
        (lambda r: make_classes(r, {"only": 4}), r"at least two classes.*found only 'only'"),
        (lambda r: make_classes(r / "test", {"a": 2}), r"has test/ but no train/ folder"),
    ],
)
def test_bad_folders_name_the_path_and_what_to_do(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DataError, match=message) as err:
        load_folder(root, SHAPE, log=lambda _: None)
    assert str(root) in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_an_unknown_test_class_is_an_error_naming_it(tmp_path):
    root = tmp_path / "d"
    make_classes(root / "train", {"a": 3, "b": 3})
    make_classes(root / "test", {"a": 1, "b": 1, "zebra": 1})
    with pytest.raises(DataError, match=r"test/zebra: class 'zebra' is not a training class"):
        scan_folder(root)


def test_a_folder_that_cannot_train_is_reported_by_check_and_refused_by_load(tmp_path):
    root = make_classes(tmp_path / "x", {"a": 5})
    for i in range(3):
        (root / "b" / f"{i}.png").parent.mkdir(exist_ok=True)
        (root / "b" / f"{i}.png").write_text("text")
    report = check_folder(root, SHAPE, log=lambda _: None)
    assert report.errors and "fewer than two classes" in report.errors[0]
    assert report.cache == "not written (check)" and not report.cache_path.exists()
    with pytest.raises(
        DataError, match=r"(?s)x cannot be trained on:.*Error: fewer than two classes"
    ):
        load_folder(root, SHAPE, log=lambda _: None)


def test_check_writes_no_cache_and_finds_the_same_problems(tmp_path):
    root = make_classes(tmp_path / "c", {"x": 10, "y": 10})
    (root / "x" / "bad.png").write_text("no")
    report = check_folder(root, SHAPE, log=lambda _: None)
    assert not report.cache_path.exists()
    loaded = load_folder(root, SHAPE, log=lambda _: None).report
    assert (report.counts, report.unreadable, report.holdout) == (
        loaded.counts,
        loaded.unreadable,
        loaded.holdout,
    )


# ---- writing a split as folders ------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_write_split_as_folders_round_trips(tmp_path, channels):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 100, (40, channels, 5, 7), generator=g, dtype=torch.uint8)
    labels = torch.arange(40) % 3
    split = Split(images, labels)
    classes = ("zero", "one/uno", "two")
    assert write_split_as_folders(split, classes, tmp_path / "d" / "train", 0, 25) == 25
    assert write_split_as_folders(split, classes, tmp_path / "d" / "train", start=25) == 15
    assert write_split_as_folders(split[:12], classes, tmp_path / "d" / "test") == 12
    assert sorted(p.name for p in (tmp_path / "d" / "train").iterdir()) == sorted(
        ["zero", "one_uno", "two"]
    )
    data = load_folder(tmp_path / "d", (channels, 5, 7), log=lambda _: None)
    order = data.dataset.classes  # sorted folder names: one_uno, two, zero
    remap = torch.tensor([order.index(n) for n in ("zero", "one_uno", "two")])

    def as_set(images, labels):
        return sorted((int(y), x.numpy().tobytes()) for x, y in zip(images, labels, strict=True))

    assert as_set(data.dataset.train.images, data.dataset.train.labels) == as_set(
        images, remap[labels]
    )
    assert len(data.dataset.test) == 12


# ---- memory ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_peak_memory_stays_far_below_the_decoded_originals(tmp_path):
    """2,000 PNGs of 256x256 RGB are 393 MB decoded; decoding them one chunk at a time into
    a file, the process grows by a small fraction of that."""
    root = tmp_path / "big"
    n, side = 2000, 256
    for i in range(n):
        path = root / f"c{i % 4}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (side, side), (i % 256, 40, 90)).save(path, compress_level=1)
    # VmHWM: this process's peak RSS (ru_maxrss would carry over the parent's, pytest's)
    done = run_python(
        f"""
        import convkit.data.folders as folders

        def peak():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

        before = peak()
        data = folders.load_folder({str(root)!r}, (3, 16, 16), cache_dir={str(tmp_path / "c")!r})
        print(len(data.dataset.train) + len(data.dataset.test), peak() - before)
        """
    )
    assert done.returncode == 0, done.stderr
    count, grown = map(int, done.stdout.split())
    originals = n * side * side * 3
    assert count == n and grown < originals / 8, (grown, originals)


def test_processes_decode_what_threads_decode(tmp_path, monkeypatch):
    """A large folder is decoded by processes (every core: Pillow holds the interpreter's lock
    for part of each image); the cache holds the same bytes as the threads' decode."""
    import convkit.data.folders as folders

    if folders.decode_workers() < 2:
        pytest.skip("one core: processes are never used")
    root = tmp_path / "pics"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(40):
            size = (int(rng.integers(10, 50)), int(rng.integers(10, 50)))
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    pools = []
    real_pool = folders._pool
    monkeypatch.setattr(folders, "_pool", lambda n: pools.append(real_pool(n)) or pools[-1])
    threads = folders.load_folder(root, (3, 16, 16), cache_dir=tmp_path / "t", log=lambda m: None)
    monkeypatch.setattr(folders, "PROCESS_MIN_FILES", 1)
    monkeypatch.setenv("CONVKIT_DECODE", "processes")  # the command line's setting
    procs = folders.load_folder(root, (3, 16, 16), cache_dir=tmp_path / "p", log=lambda m: None)
    assert [type(p).__name__ for p in pools] == ["ThreadPoolExecutor", "ProcessPoolExecutor"]
    for split in ("train", "test"):
        a, b = getattr(threads.dataset, split), getattr(procs.dataset, split)
        assert (a.images == b.images).all() and (a.labels == b.labels).all()
    assert threads.report.unreadable == procs.report.unreadable != []
    # A program that has not said its entry point is guarded (an API script) keeps threads:
    # each new process re-runs the program's file, which would train again in every worker.
    monkeypatch.delenv("CONVKIT_DECODE")
    folders.load_folder(root, (3, 16, 16), cache_dir=tmp_path / "q", log=lambda m: None)
    assert type(pools[-1]).__name__ == "ThreadPoolExecutor"
