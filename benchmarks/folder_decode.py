"""The first decode of an image folder: images per second by threads and by processes.

    python benchmarks/folder_decode.py FOLDER [--shape 3 32 32] [--workers 1 2] [--repeat 2]

Decodes every image file under FOLDER with convkit's conversion (load_image, as the folder
cache does) in a pool of threads and in a pool of processes (forkserver, as
convkit.data.folders uses), for each worker count, and prints images/s. The files are read once
before timing so the page cache serves them all; each setting is timed `--repeat` times and the
best kept, alternating settings so machine noise falls on all alike.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path


def main() -> None:
    from convkit.data.folders import _decode, decode_pool
    from convkit.data.images import MAX_PIXELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.folder)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    for f in files:
        (root / f).read_bytes()  # into the page cache
    settings = {"image_shape": args.shape, "conversion": {"invert_light": args.shape[0] == 1,
                "fit": "auto", "max_pixels": MAX_PIXELS}}  # fmt: skip
    decode = functools.partial(_decode, root=root, settings=settings)
    print(f"{len(files):,} files in {root}, converted to {'x'.join(map(str, args.shape))}; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeat):
        for kind in ("threads", "processes"):
            for n in args.workers:
                if kind == "threads":
                    pool = ThreadPoolExecutor(n)
                else:
                    pool = decode_pool(n)
                with pool:
                    list(pool.map(decode, files[: 4 * n], chunksize=1))  # workers started
                    t0 = time.perf_counter()
                    chunks = 16 if isinstance(pool, ProcessPoolExecutor) else 1
                    out = list(pool.map(decode, files, chunksize=chunks))
                    took = time.perf_counter() - t0
                bad = sum(isinstance(o, str) for o in out)
                assert not bad, f"{bad} files failed to decode"
                rate = len(files) / took
                best[kind, n] = max(best.get((kind, n), 0.0), rate)
    print("| pool | workers | images/s |")
    print("|---|---:|---:|")
    for (kind, n), rate in sorted(best.items()):
        print(f"| {kind} | {n} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
