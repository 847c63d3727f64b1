"""Folders of pictures built from the data we have, trained by the default command and by hand.

    python benchmarks/default_folders.py [--work /tmp/default-folders] [--only NAME ...]
                                         [--seeds 0 1 2]

Issue 20 asks that `convkit train RECIPE --data FOLDER`, with nothing else said, comes within
1 point of the best command found by hand on folders of every size. This script writes the
folders (once) and trains each command on each, printing one table:

- digits: 144 MNIST test digits per class as dark-on-light PNGs of 28 to 64 pixels, with a
  test/ folder of 5,000 other test digits (mnist-cnn).
- colour100, colour500: 100 or 500 CIFAR-10 test images per class as JPEG photos of 32 to 96
  pixels (upscaled), with a test/ folder of 200 other test images per class (cifar10-quick).
  The transfer row starts from a cifar10-quick run on CIFAR-10's training set: same classes,
  none of these images.
- catdog: 500 cats and 50 dogs (CIFAR-10 test images, PNG), test/ 200 of each: imbalanced
  and hard (cifar10-quick; by default the loss weighs each class by its test share over its
  train share, --class-weights).
- shipplane: the same with 500 ships and 50 airplanes: imbalanced, easier.

Every command trains with seed 0; times are training seconds on this machine, all in one run
of this script, so compare them with each other only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def convkit(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "convkit", *args, "--json", "--quiet"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"convkit {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write(image: np.ndarray, path: Path, size: int, fmt: str) -> None:
    """(C, H, W) uint8 -> a file of `size` x `size` pixels."""
    im = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    im = im.resize((size, size), Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, quality=90) if fmt == "jpg" else im.save(path)


def build(name: str, folder: Path) -> None:
    from convkit.data import load_dataset

    rng = np.random.default_rng(0)
    if name == "digits":
        data, per_class, n_test, sizes, fmt = load_dataset("mnist"), 144, 5000, (28, 64), "png"
    elif name.startswith("colour"):
        data, per_class, n_test = load_dataset("cifar10"), int(name[6:]), 200
        sizes, fmt = (32, 96), "jpg"
    else:  # catdog, shipplane
        data, per_class, n_test, sizes, fmt = load_dataset("cifar10"), None, 200, (32, 32), "png"
    images, labels = data.test.images.numpy(), data.test.labels.numpy()
    classes = data.classes
    if name == "digits":
        images = 255 - images  # dark ink on paper, as people write
    wanted = {c: per_class for c in range(len(classes))}
    if name in ("catdog", "shipplane"):
        big, small = ("cat", "dog") if name == "catdog" else ("ship", "airplane")
        wanted = {classes.index(big): 500, classes.index(small): 50}
    taken: dict[int, int] = {}
    tested: dict[int, int] = {}
    test_left = n_test
    for i in rng.permutation(len(labels)):
        c = int(labels[i])
        if c not in wanted:
            continue
        size = int(rng.integers(sizes[0], sizes[1] + 1))
        if taken.get(c, 0) < wanted[c]:
            taken[c] = taken.get(c, 0) + 1
            _write(images[i], folder / "train" / classes[c] / f"{i}.{fmt}", size, fmt)
        elif name == "digits" and test_left > 0:
            test_left -= 1
            _write(images[i], folder / "test" / classes[c] / f"{i}.{fmt}", size, fmt)
        elif name != "digits" and tested.get(c, 0) < n_test:
            tested[c] = tested.get(c, 0) + 1
            _write(images[i], folder / "test" / classes[c] / f"{i}.{fmt}", size, fmt)


def commands(name: str, folder: Path, work: Path, seed: int = 0) -> list[tuple[str, list[str]]]:
    data = ["--data", str(folder), "--seed", str(seed)]
    if name == "digits":
        return [
            ("default", ["mnist-cnn", *data]),
            (
                "--epochs 100 --augment translate",
                ["mnist-cnn", *data, "--epochs", "100", "--augment", "translate"],
            ),  # fmt: skip
            (
                "--epochs 300 --augment translate",
                ["mnist-cnn", *data, "--epochs", "300", "--augment", "translate"],
            ),  # fmt: skip
        ]
    rows = [
        ("default", ["cifar10-quick", *data]),
        ("--augment none", ["cifar10-quick", *data, "--augment", "none"]),
        (
            "--augment resized-crop-flip",
            ["cifar10-quick", *data, "--augment", "resized-crop-flip"],
        ),  # fmt: skip
        ("--epochs 10", ["cifar10-quick", *data, "--epochs", "10"]),
        ("--epochs 50", ["cifar10-quick", *data, "--epochs", "50"]),
        ("--epochs 100", ["cifar10-quick", *data, "--epochs", "100"]),
    ]
    if name == "colour500":
        rows.append(("--epochs 200", ["cifar10-quick", *data, "--epochs", "200"]))
    if name in ("catdog", "shipplane"):
        rows += [
            ("--class-weights none", ["cifar10-quick", *data, "--class-weights", "none"]),
            ("--class-weights balanced", ["cifar10-quick", *data, "--class-weights", "balanced"]),
        ]
    if name.startswith("colour"):
        rows.append(("transfer: --init CIFAR-10 run", ["cifar10-quick", *data, "--init",
                                                        str(work / "source")]))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/default-folders")
    parser.add_argument("--only", nargs="*",
                        default=["digits", "colour100", "colour500", "catdog", "shipplane"])  # fmt: skip
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="train every command with each seed and print the means (the "
                             "table then has one column per seed)")  # fmt: skip
    args = parser.parse_args()
    work = Path(args.work)
    os.environ.setdefault("XDG_CACHE_HOME", str(work / "cache"))
    if any(n.startswith("colour") for n in args.only) and not (work / "source").is_dir():
        convkit("train", "cifar10-quick", "--seed", "0", "--out", str(work / "source"))
    seeds = args.seeds or [0]
    if args.seeds:
        print(f"| folder | command | mean test accuracy | {' | '.join(f'seed {s}' for s in seeds)} "
              f"| training s (mean) | epochs |")  # fmt: skip
        print("|---|---|---:|" + "---:|" * len(seeds) + "---:|---:|")
    else:
        print("| folder | command | test accuracy | training s | epochs |")
        print("|---|---|---:|---:|---:|")
    for name in args.only:
        folder = work / name
        if not (folder / "test").is_dir():
            t0 = time.perf_counter()
            build(name, folder)
            print(f"<!-- wrote {name} in {time.perf_counter() - t0:.1f} s -->", flush=True)
        for i, (label, _) in enumerate(commands(name, folder, work)):
            results = []
            for seed in seeds:
                _, cmd = commands(name, folder, work, seed)[i]
                tag = label.replace(" ", "_").replace(":", "")
                out = work / "runs" / (f"{name}-{tag}" + (f"-s{seed}" if args.seeds else ""))
                if out.exists():
                    results.append(json.loads((out / "result.json").read_text()))
                else:
                    results.append(convkit("train", *cmd, "--out", str(out)))
            accs = [r["test_accuracy"] for r in results]
            secs = sum(r["train_seconds"] for r in results) / len(results)
            if args.seeds:
                print(f"| {name} | {label} | {np.mean(accs):.2%} | "
                      + " | ".join(f"{a:.2%}" for a in accs)
                      + f" | {secs:.1f} | {results[0]['epochs']} |", flush=True)  # fmt: skip
            else:
                print(f"| {name} | {label} | {accs[0]:.2%} | {secs:.1f} | "
                      f"{results[0]['epochs']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
