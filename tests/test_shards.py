"""`convkit data pack FOLDER OUT`: WebDataset-style tar shards that train as the folder does, and
under torchrun give each process its own shards and nothing else."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_folder_training import colour_folder

from convkit.cli import main
from convkit.data import shards
from convkit.data.folders import load_folder
from convkit.errors import ConfigError, DataError
from convkit.runs import Run

TRAIN = ["cifar10-cnn", "--precision", "fp32", "--schedule", "constant", "--batch-size", "16",
         "--patience", "0", "--quiet"]  # fmt: skip


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    folder = colour_folder(base / "colours", n_per_class=60)
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse isolation
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        code = main(["data", "pack", str(folder), str(base / "packed"), "--shard-images", "30"])
    assert code == 0
    return folder, base / "packed"


def test_pack_writes_webdataset_tar_shards_and_an_index(packed):
    folder, out = packed
    index = json.loads((out / "shards.json").read_text())
    assert index["kind"] == "convkit-shards" and index["classes"] == ["blue", "green", "red"]
    assert index["image_shape"] == [3, 32, 32] and index["fit"] == "auto" and index["val"] == 0.1
    # 180 images: 36 test (20% of each class), 144 left of which 14 val (cifar10-cnn's 0.1)
    counts = {k: sum(s["nsamples"] for s in v) for k, v in index["splits"].items()}
    assert counts == {"train": 130, "val": 14, "test": 36}
    assert [s["url"] for s in index["splits"]["train"]] == [f"train-{i:06d}.tar" for i in range(5)]
    cache = load_folder(folder, (3, 32, 32), val_split=0.1)
    first = out / "train-000000.tar"
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert names[:4] == ["000000000.npy", "000000000.cls", "000000001.npy", "000000001.cls"]
        image = np.load(io.BytesIO(tar.extractfile(names[0]).read()))
        label = int(tar.extractfile(names[1]).read())
    assert image.dtype == np.uint8 and image.shape == (3, 32, 32)
    assert np.array_equal(image, cache.dataset.train.images[0].numpy())
    assert label == int(cache.dataset.train.labels[0])
    entry = index["splits"]["train"][0]
    assert entry["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert entry["bytes"] == first.stat().st_size


def test_shards_read_back_the_folder_split_for_split(packed):
    folder, out = packed
    cache = load_folder(folder, (3, 32, 32), val_split=0.1)
    got = shards.load_shards(out)
    train = cache.dataset.train
    assert torch.equal(got.dataset.train.images, train.images[:130])
    assert torch.equal(got.dataset.train.labels, train.labels[:130])
    assert torch.equal(got.val.images, train.images[130:])
    assert torch.equal(got.dataset.test.images, cache.dataset.test.images)
    assert not got.val.images.is_contiguous()  # one shard: a strided view of the mapped tar
    assert got.read["train"] == [f"train-{i:06d}.tar" for i in range(5)]


def test_shards_larger_than_memory_are_joined_in_a_mapped_file_that_is_not_left(packed, tmp_path):
    _, out = packed
    entries = _index(out)["splits"]["train"]
    pieces = [shards._read_shard(out, e, (3, 32, 32), 3) for e in entries]
    small = shards._join(pieces, (3, 32, 32), 10_000_000)  # 130 images of 3 KB: 400 kB
    assert _mapping(small.images) is None  # in memory
    joined = shards._join(pieces, (3, 32, 32), 1_000_000)
    assert torch.equal(joined.images, small.images)
    where = _mapping(joined.images)
    assert where is not None and where.endswith("(deleted)"), where  # a file with no name
    assert list((Path(os.environ["XDG_CACHE_HOME"]) / "convkit" / "shards").iterdir()) == []


def _mapping(t: torch.Tensor) -> str | None:
    """The file a tensor's memory is mapped from (from /proc/self/maps), or None."""
    address = t.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in span.split("-"))
        if lo <= address < hi:
            return rest[4] if len(rest) > 4 and rest[4].startswith("/") else None
    return None


def _index(out: Path) -> dict:
    return json.loads((out / "shards.json").read_text())


def test_each_process_opens_only_its_shards_and_trains_on_as_many_images(packed):
    _, out = packed
    parts = [shards.load_shards(out, rank=r, world=2) for r in range(2)]
    assert parts[0].read["train"] == ["train-000000.tar", "train-000002.tar", "train-000004.tar"]
    assert parts[1].read["train"] == ["train-000001.tar", "train-000003.tar"]
    assert parts[1].read["test"] == ["test-000001.tar"]
    # 30 + 30 + 10 against 30 + 30 images: both train on 60, 10 left out
    assert [len(p.dataset.train) for p in parts] == [60, 60] and parts[0].dropped == 10
    assert all(p.dataset.local for p in parts)
    with pytest.raises(ConfigError, match="5 training shards for 6 processes"):
        shards.load_shards(out, rank=0, world=6)


def test_a_packed_folder_trains_exactly_as_the_folder(packed, tmp_path):
    folder, out = packed
    assert main(["train", *TRAIN, "--data", str(folder), "--epochs", "2", "--out", str(tmp_path / "f")]) == 0  # fmt: skip
    assert main(["train", *TRAIN, "--data", str(out), "--epochs", "2", "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    a, b = metrics(tmp_path / "f"), metrics(tmp_path / "s")
    assert [[m[k] for k in keys] for m in a] == [[m[k] for k in keys] for m in b]
    result = Run(tmp_path / "s").result()
    assert result["dataset"] == "shards:colours"
    assert result["test_accuracy"] == Run(tmp_path / "f").result()["test_accuracy"]


def test_shards_that_do_not_match_the_training_are_refused_with_what_to_do(
    packed, tmp_path, capsys
):
    _, out = packed
    cases = [
        (["--image-size", "40"], "holds 3x32x32 images .* train with --image-size 32"),
        (["--fit", "crop"], "packed with --fit auto: train with --fit auto"),
        (["--val-split", "0.2"], "holds 10% of its training images as val .* --val-split 0.1"),
    ]
    for extra, message in cases:
        assert (
            main(["train", *TRAIN, "--data", str(out), *extra, "--out", str(tmp_path / "x")]) != 0
        )
        err = capsys.readouterr().err
        assert __import__("re").search(message, err), err
        assert not (tmp_path / "x").exists()


def test_a_damaged_or_missing_shard_is_named(packed, tmp_path):
    _, out = packed
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = copy / "train-000001.tar"
    victim.write_bytes(victim.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"train-000001.tar: 5,000 bytes, shards.json says"):
        shards.load_shards(copy)
    victim.unlink()
    with pytest.raises(DataError, match=r"train-000001.tar: missing; copy this process's shards"):
        shards.load_shards(copy)
    # process 0 of 2 never opens shard 1: its absence does not matter there
    assert shards.load_shards(copy, rank=0, world=2).read["train"][1] == "train-000002.tar"
    (copy / "shards.json").write_text("{}")
    with pytest.raises(DataError, match="expected kind 'convkit-shards'"):
        shards.load_shards(copy)


def test_pack_refuses_a_used_folder_and_leaves_nothing_when_it_fails(packed, tmp_path, monkeypatch):
    folder, out = packed
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        shards.pack(load_folder(folder, (3, 32, 32)), out, fit="auto")
    calls = []

    def failing(path, split, first):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(path, split, first)

    real = shards._write_shard
    monkeypatch.setattr(shards, "_write_shard", failing)
    target = tmp_path / "new"
    with pytest.raises(OSError, match="No space"):
        shards.pack(load_folder(folder, (3, 32, 32)), target, fit="auto", shard_images=30)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_tar_written_by_another_tool_is_read_member_by_member(tmp_path):
    root = tmp_path / "other"
    root.mkdir()
    images = np.random.default_rng(0).integers(0, 255, (3, 1, 4, 4), dtype=np.uint8)
    with tarfile.open(root / "train-000000.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for i, image in enumerate(images):
            for ext, payload in (("cls", str(i % 2).encode()), ("npy", _npy(image))):
                info = tarfile.TarInfo(f"sample{i}.{ext}")
                info.size = len(payload)
                info.pax_headers = {"comment": "x" * (i * 300)}  # uneven spacing
                tar.addfile(info, io.BytesIO(payload))
    entry = {
        "url": "train-000000.tar",
        "nsamples": 3,
        "bytes": (root / "train-000000.tar").stat().st_size,
    }
    split = shards._read_shard(root, entry, (1, 4, 4), 2)
    assert np.array_equal(split.images.numpy(), images) and split.labels.tolist() == [0, 1, 0]


def test_class_weights_count_every_process_images_when_each_holds_its_own():
    from convkit.train import TrainConfig
    from convkit.train.runner import class_weights

    cfg = TrainConfig(class_weights="balanced")
    mine = torch.tensor([0, 0, 0, 1])  # this process: 3 to 1; all processes: 50 to 50
    alone = class_weights(cfg, mine, mine, 2, False)
    together = class_weights(cfg, mine, mine, 2, False, torch.tensor([50.0, 50.0]))
    assert alone[1] > 2 * alone[0]
    assert together.tolist() == [1.0, 1.0]


def _tar(path: Path, members: list[tuple[str, bytes]], directory: str | None = None) -> dict:
    with tarfile.open(path, "w") as tar:
        if directory:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return {"url": path.name, "nsamples": len(members) // 2, "bytes": path.stat().st_size}


def test_a_tar_made_by_tar_from_a_folder_is_read_and_bad_samples_are_named(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    a, b = np.zeros((1, 4, 4), np.uint8), np.full((1, 4, 4), 7, np.uint8)
    # `tar -C dir .` names members ./000.npy and adds the folder itself
    entry = _tar(root / "train-000000.tar", [("./000.npy", _npy(a)), ("./000.cls", b"1"),
                 ("./001.npy", _npy(b)), ("./001.cls", b"0")], directory=".")  # fmt: skip
    split = shards._read_shard(root, entry, (1, 4, 4), 2)
    assert split.labels.tolist() == [1, 0] and int(split.images[1].max()) == 7
    entry = _tar(root / "train-000001.tar", [("0.npy", _npy(a)), ("0.cls", b"5")])
    with pytest.raises(
        DataError, match=r"train-000001.tar: sample '0' has class 5, expected 0 to 1"
    ):
        shards._read_shard(root, entry, (1, 4, 4), 2)
    entry = _tar(root / "train-000002.tar", [("0.npy", _npy(a)), ("0.cls", b"0"),
                 ("1.npy", _npy(a.reshape(4, 1, 4))), ("1.cls", b"0")])  # fmt: skip
    with pytest.raises(DataError, match=r"train-000002.tar: its arrays are not all"):
        shards._read_shard(root, entry, (1, 4, 4), 2)
    entry = _tar(root / "train-000003.tar", [("0.npy", _npy(a)), ("0.txt", b"0")])
    with pytest.raises(DataError, match=r"sample '0' has \['npy', 'txt'\], expected"):
        shards._read_shard(root, entry, (1, 4, 4), 2)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_two_processes_read_only_their_own_shards_and_train_as_one_process(packed, tmp_path):
    """Each process is given a folder holding only its shards (as on two machines with no
    shared file system), and the run matches one process at the same global batch as closely
    as different batches allow: both learn the colours."""
    _, out = packed
    for rank in (0, 1):
        own = tmp_path / f"machine{rank}"
        own.mkdir()
        shutil.copy(out / "shards.json", own)
        for entries in json.loads((out / "shards.json").read_text())["splits"].values():
            for e in entries[rank::2]:
                shutil.copy(out / e["url"], own)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # each process says which shards it reads; balanced weights count every process's images
    loud = [a for a in TRAIN if a != "--quiet"] + ["--class-weights", "balanced"]
    train = " ".join([sys.executable, "-m", "convkit", "train", *loud, "--epochs", "6"])
    script = f"exec {train} --data {tmp_path}/machine$LOCAL_RANK --out {tmp_path}/ddp --json"
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "--no-python", "sh", "-c", script],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        "process 0 of 2: shards train-000000.tar, train-000002.tar, train-000004.tar" in done.stderr
    )
    assert "process 1 of 2: shards train-000001.tar, train-000003.tar" in done.stderr
    assert done.stderr.count("Class weights in the loss (balanced)") == 1  # said by rank 0
    ddp = Run(tmp_path / "ddp").result()
    assert ddp["engine"]["world_size"] == 2
    assert main(["train", *TRAIN, "--epochs", "6", "--class-weights", "balanced", "--data", str(out), "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    one = Run(tmp_path / "one").result()
    assert len(metrics(tmp_path / "ddp")) == len(metrics(tmp_path / "one")) == 6
    assert ddp["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=0.06)
    assert min(ddp["test_accuracy"], one["test_accuracy"]) > 0.9


def test_data_check_verifies_every_shard_against_the_index(packed, tmp_path, capsys):
    _, out = packed
    assert main(["data", "check", str(out)]) == 0
    said = capsys.readouterr().out
    assert "packed shards of blue, green, red, 3x32x32 (auto)" in said
    assert "train: 130 images in 5 shards, 5 verified" in said
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    damaged = copy / "test-000001.tar"
    data = bytearray(damaged.read_bytes())
    data[600] ^= 0xFF  # same size, one byte changed
    damaged.write_bytes(bytes(data))
    (copy / "val-000000.tar").unlink()
    assert main(["data", "check", str(copy), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["test"] == {"images": 36, "shards": 2, "ok": 1}
    assert any("test-000001.tar: SHA-256 differs" in p for p in report["problems"])
    assert any("val-000000.tar: missing" in p for p in report["problems"])
