"""Training on a folder larger than memory: reading by window against row by row, in a cgroup.

    python benchmarks/large_folder.py [--work /tmp/big] [--images 200000] [--limit-gb 1.5]
                                      [--epochs 2] [--rows-too] [--runs memory windows rows]

Issue 20 asks that a folder whose decoded images do not fit in memory trains with bounded
memory, and for its throughput against the same folder in memory. This script writes a folder
of `--images` 64x64 colour JPEGs (CIFAR-10 training images, upscaled, shifted and flipped so no
two are the same; 200,000 decode to 2.46 GB), decodes it once, then trains cifar10-quick on it
for `--epochs` epochs:

- in memory: no limit (the page cache keeps the whole file after the first epoch);
- limited: in a new cgroup v1 memory group whose limit is `--limit-gb`, where convkit sees
  less memory left than twice the images and reads them window by window;
- limited, rows (`--rows-too`): the same limit with CONVKIT_MEMORY set high, so convkit
  shuffles row by row as before windows existed (slow: every row is a read from the disk).

The page cache is dropped before each run. It prints, for each run, every epoch's training
images/s, the peak resident memory of the training process, and the cgroup's peak usage.
Needs root (cgroups, drop_caches); times compare only within one run of this script.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

GROUP = Path("/sys/fs/cgroup/memory")
PER_FILE = 2_000  # images per worker task


def _write_part(args: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    from convkit.data import load_dataset

    root, start, stop, size = args
    data = load_dataset("cifar10")  # from CONVKIT_DATA (make sets it to ../shared/data)
    train, classes = data.train, data.classes
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        k = i % len(train)
        image = train.images[k].numpy().transpose(1, 2, 0)
        im = Image.fromarray(image).resize((size + 8, size + 8), Image.Resampling.BILINEAR)
        dx, dy = (int(v) for v in rng.integers(0, 9, 2))
        im = im.crop((dx, dy, dx + size, dy + size))
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        label = classes[int(train.labels[k])]
        path = root / label / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, quality=90)


def build(root: Path, n: int, size: int) -> None:
    done = root / ".complete"
    if done.exists() and done.read_text() == f"{n} {size}":
        return
    t0 = time.perf_counter()
    parts = [(root, a, min(n, a + PER_FILE), size) for a in range(0, n, PER_FILE)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_part, parts)
    done.write_text(f"{n} {size}")
    print(f"wrote {n:,} JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def train(folder: Path, out: Path, epochs: int, limit: int | None, env: dict, *extra: str) -> dict:
    group = None
    if limit:
        group = GROUP / f"convkit-bench-{os.getpid()}"
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(str(limit))
        (group / "memory.max_usage_in_bytes").write_text("0")
    cmd = [
        sys.executable, "-m", "convkit", "train", "cifar10-quick", "--data", str(folder),
        "--image-size", "64", "--epochs", str(epochs), "--patience", "0", "--out", str(out),
        "--json", *extra,
    ]  # fmt: skip

    def join() -> None:
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    shutil.rmtree(out, ignore_errors=True)  # a run of an earlier call of this script
    drop_caches()
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    try:
        with open(log, "w") as err, open(out.with_suffix(".json"), "w") as res:
            proc = subprocess.Popen(
                cmd, env={**os.environ, **env}, stdout=res, stderr=err, preexec_fn=join
            )
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        wall = time.perf_counter() - t0
        peak_group = int((group / "memory.max_usage_in_bytes").read_text()) if group else None
        failcnt = int((group / "memory.failcnt").read_text()) if group else None
    finally:
        if group is not None:
            group.rmdir()
    stderr = log.read_text()
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status}):\n{stderr[-3000:]}")
    result = json.loads(out.with_suffix(".json").read_text().strip().splitlines()[-1])
    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln]
    history = [m for m in metrics if "images_per_second" in m]
    return {
        "wall": wall,
        "peak_rss": usage.ru_maxrss * 1024,
        "result": result,
        "rates": [h.get("images_per_second") for h in history],
        "peak_group": peak_group,
        "failcnt": failcnt,
        "stderr": stderr,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/big"))
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--limit-gb", type=float, default=1.5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rows-too", action="store_true")
    p.add_argument(
        "--runs",
        nargs="*",
        default=None,
        choices=("memory", "windows", "rows"),
        help="which runs (default: memory and windows, and rows with --rows-too)",
    )
    args = p.parse_args()
    folder = args.work / "folder"
    build(folder, args.images, args.size)
    limit = int(args.limit_gb * 2**30)
    t0 = time.perf_counter()  # decode once, outside the timed runs (1 epoch on 1,000 images)
    train(folder, args.work / "decode", 1, None, {}, "--limit", "1000")
    print(f"decoded (and trained on 1,000 images) in {time.perf_counter() - t0:.1f} s")
    every = {
        "memory": ("in memory", None, {}),
        "windows": (f"limit {args.limit_gb} GiB, windows", limit, {}),
        "rows": (f"limit {args.limit_gb} GiB, rows", limit, {"CONVKIT_MEMORY": "1e12"}),
    }
    chosen = args.runs or ["memory", "windows"] + ["rows"] * args.rows_too
    runs = [every[k] for k in chosen]
    print("| run | epoch images/s | wall | peak RSS | cgroup peak | failcnt | test acc |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, (name, lim, env) in enumerate(runs):
        r = train(folder, args.work / f"run-{chosen[i]}", args.epochs, lim, env)
        rates = ", ".join(f"{v:,.0f}" for v in r["rates"] if v)
        window = [ln for ln in r["stderr"].splitlines() if "windows of" in ln]
        group = "" if r["peak_group"] is None else f"{r['peak_group'] / 1e9:.2f} GB"
        print(
            f"| {name} | {rates} | {r['wall']:.1f} s | {r['peak_rss'] / 1e9:.2f} GB | {group} | "
            f"{r['failcnt'] or ''} | {r['result'].get('test_accuracy', '?')} |",
            flush=True,
        )
        for line in window:
            print("  " + line)


if __name__ == "__main__":
    main()
