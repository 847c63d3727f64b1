"""A folder of N small PNG files loaded as a dataset: the first load (decoding into the cache)
and the second (the cache mapped), each in a fresh process, with its time and peak RSS.

    python benchmarks/folder_cache.py [--n 100000] [--size 32] [--workdir DIR]

The images are random RGB noise (the slowest kind of PNG to decode), written into 10 class
folders by `write_split_as_folders`. "Decoded originals" is what holding every decoded image at
once would take (N x size x size x 3 bytes): the figure the loader must stay well below.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convkit.train.provenance import cpu_name


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> float:
    """N noise PNGs in root/class0..class9; returns the seconds it took."""
    from convkit.data.arrays import Split
    from convkit.data.folders import write_split_as_folders

    started = time.perf_counter()
    images = np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    split = Split(torch.from_numpy(images), torch.arange(n) % 10)
    classes = tuple(f"class{k}" for k in range(10))
    for start in range(0, n, 10_000):  # in parts, as a converter of a large split would
        write_split_as_folders(split, classes, root, start, 10_000)
    return time.perf_counter() - started


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM on Linux (ru_maxrss would include the parent's, since it
    survives exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def load_once(root: str, cache: str, size: int) -> dict:
    """One load in this process: seconds, images, and RSS before and at its peak (MiB)."""
    from convkit.data.folders import load_folder

    before = peak_rss_mb()
    started = time.perf_counter()
    data = load_folder(root, (3, size, size), cache_dir=cache, log=lambda _: None)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    return {
        "seconds": round(seconds, 3),
        "images": len(data.dataset.train) + len(data.dataset.test),
        "cache": data.report.cache,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(peak, 1),
    }


def measure(root: Path, cache: Path, size: int) -> dict:
    """load_once in a fresh process, so that its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(root), "--cache", str(cache), "--size", str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="number of PNG files (default 100,000)")
    p.add_argument("--size", type=int, default=32, help="side of each image (default 32)")
    p.add_argument("--workdir", help="where to write the files (default: a temporary folder)")
    p.add_argument("--load", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load:
        print(json.dumps(load_once(args.load, args.cache, args.size)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root, cache = Path(tmp) / "images", Path(tmp) / "cache"
        written = make_folder(root, args.n, args.size)
        first = measure(root, cache, args.size)
        second = measure(root, cache, args.size)
    originals = args.n * args.size * args.size * 3 / 2**20
    print(f"{cpu_name()}, {torch.get_num_threads()} threads; {args.n:,} PNG files of "
          f"{args.size}x{args.size} RGB noise, written in {written:.1f} s")  # fmt: skip
    print(f"decoded originals, all at once: {originals:,.0f} MiB")
    for name, r in (("first load (decode)", first), ("second load (cache)", second)):
        print(
            f"{name:<20} {r['seconds']:8.2f} s  {r['images']:,} images  peak RSS "
            f"{r['rss_peak_mb']:,.0f} MiB ({r['rss_before_mb']:,.0f} after imports)  [{r['cache']}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
