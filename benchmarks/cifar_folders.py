"""CIFAR-10 as folders of PNG files against the binary files: the same recipe and seed on both.

    python benchmarks/cifar_folders.py [--epochs 10] [--work /tmp/cifar-folders]

Writes the 60,000 images as train/<class>/*.png and test/<class>/*.png (once), then trains the
recipe on the binary dataset and on the folder (the first folder run decodes and caches; a
second start measures the cached start-up), and prints both test accuracies and the timings.
The folder run holds out a stratified 10% of train for validation, the binary run the last 10%
(as Keras does), so the two runs see the same images in a different split and order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def convkit(*args: str) -> tuple[dict, float]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "convkit", *args, "--json"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--recipe", default="cifar10-cnn")
    parser.add_argument("--work", default="/tmp/cifar-folders")
    args = parser.parse_args()
    work = Path(args.work)
    folder = work / "cifar10"
    if not (folder / "test").is_dir():
        from convkit.data import load_dataset
        from convkit.data.folders import write_split_as_folders

        t0 = time.perf_counter()
        data = load_dataset("cifar10")
        write_split_as_folders(data.train, data.classes, folder / "train")
        write_split_as_folders(data.test, data.classes, folder / "test")
        print(f"wrote 60,000 PNG files in {time.perf_counter() - t0:.1f} s", flush=True)
    common = [args.recipe, "--epochs", str(args.epochs), "--patience", "0", "--seed", "0"]
    binary, t_bin = convkit("train", *common, "--out", str(work / "run-binary"))
    first, t_first = convkit("train", *common, "--data", str(folder), "--out",
                             str(work / "run-folder"))  # fmt: skip
    _, t_eval = convkit("evaluate", str(work / "run-folder"))
    report = first["folder"]
    print(f"binary: {binary['test_accuracy']:.2%} test accuracy ({t_bin:.0f} s)")
    print(f"folder: {first['test_accuracy']:.2%} test accuracy ({t_first:.0f} s; decoding and "
          f"caching the folder {report['decode_seconds']:.1f} s)")  # fmt: skip
    print(f"cached start-up: `convkit evaluate` of the folder run took {t_eval:.1f} s in all")
    print(f"difference: {100 * (first['test_accuracy'] - binary['test_accuracy']):+.2f} points")


if __name__ == "__main__":
    main()
