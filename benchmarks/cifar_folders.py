"""CIFAR-10 as folders of PNG files against the binary files: the same recipe and seed on both.

    python benchmarks/cifar_folders.py [--epochs N] [--work /tmp/cifar-folders]

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
    parser.add_argument("--epochs", type=int, default=0,
                        help="a fixed number of epochs (default: the recipe as it is)")  # fmt: skip
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
    common = [args.recipe, "--seed", "0"]
    if args.epochs:
        common += ["--epochs", str(args.epochs), "--patience", "0"]
    tag = f"e{args.epochs}" if args.epochs else "recipe"
    binary, t_bin = convkit("train", *common, "--out", str(work / f"run-binary-{tag}"))
    first, t_first = convkit("train", *common, "--data", str(folder), "--out",
                             str(work / f"run-folder-{tag}"))  # fmt: skip
    _, t_eval = convkit("evaluate", str(work / f"run-folder-{tag}"))
    report = first["folder"]
    for name, r, t in (("binary", binary, t_bin), ("folder", first, t_first)):
        print(f"{name}: {r['test_accuracy']:.2%} test accuracy after {r['epochs']} epochs (kept "
              f"epoch {r['best_epoch']}; {t:.0f} s)")  # fmt: skip
    print(f"folder: decoding and caching it took {report['decode_seconds']:.1f} s "
          f"(cache {report['cache']})")  # fmt: skip
    print(f"cached start-up: `convkit evaluate` of the folder run took {t_eval:.1f} s in all")
    print(f"difference: {100 * (first['test_accuracy'] - binary['test_accuracy']):+.2f} points")


if __name__ == "__main__":
    main()
