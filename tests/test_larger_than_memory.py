"""A folder whose decoded images do not fit in the memory a training may use trains anyway, in
bounded memory: `convkit train` runs in a cgroup whose memory limit is below the size of the
folder's cache. A training that copied the images into its own memory would be killed there;
this one reads them window by window (see arrays.Batches) and finishes.

Needs root and the cgroup v1 memory controller (as on CI's machines); elsewhere it skips and
says why. Speed is measured in benchmarks/large_folder.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convkit.data.folders import load_folder

CGROUP = Path("/sys/fs/cgroup/memory")
IMAGES = 50_000  # 64x64 colour: a 614 MB cache
LIMIT = 512 << 20  # the process with torch takes about 230 MB of it


def cgroup_v1_writable() -> bool:
    return (
        os.geteuid() == 0
        and (CGROUP / "memory.limit_in_bytes").exists()
        and os.access(CGROUP, os.W_OK)
    )


def big_folder(root: Path, n: int) -> Path:
    """`n` 64x64 JPEGs in 4 classes told apart by their mean colour, with noise."""
    rng = np.random.default_rng(0)
    colours = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)])
    for c in range(len(colours)):
        (root / f"class{c}").mkdir(parents=True)
    noise = rng.integers(-60, 60, (64, 64, 64, 3))  # 64 noise fields, reused
    for i in range(n):
        c = i % len(colours)
        pixels = np.clip(colours[c] + noise[i % 64], 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class{c}" / f"{i:06d}.jpg", quality=85)
    return root


@pytest.mark.skipif(
    not cgroup_v1_writable(), reason="needs root and the cgroup v1 memory controller"
)
def test_a_folder_larger_than_the_memory_limit_trains_by_windows(tmp_path):
    folder = big_folder(tmp_path / "big", IMAGES)
    cache = tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "CONVKIT_DECODE": "threads"}
    os.environ["XDG_CACHE_HOME"] = str(cache)  # the autouse fixture restores it
    # decoded outside the limit, as cifar10-quick will ask (no validation split)
    built = load_folder(folder, (3, 64, 64), val_split=0.0, log=lambda m: None)
    cache_file = built.dataset.files["cache"]
    assert cache_file.stat().st_size > LIMIT
    del built
    # Out of the page cache: its pages would stay charged to this process's cgroup, and the
    # training's reads would then cost it nothing
    fd = os.open(cache_file, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

    group = CGROUP / f"convkit-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(LIMIT))
        run = tmp_path / "run"
        done = subprocess.run(
            [sys.executable, "-m", "convkit", "train", "cifar10-quick", "--data", str(folder),
             "--image-size", "64", "--epochs", "1", "--out", str(run), "--json"],
            env=env, capture_output=True, text=True, timeout=600,
            preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
        )  # fmt: skip
        hit = int((group / "memory.failcnt").read_text())  # times the limit stopped a charge
        oom = (group / "memory.oom_control").read_text()
    finally:
        group.rmdir()
    assert done.returncode == 0, f"{done.returncode}: {done.stderr[-3000:]}"
    assert "oom_kill 0" in oom or "oom_kill" not in oom, oom
    assert "windows of" in done.stderr, done.stderr[-2000:]
    assert hit > 0  # the limit bound: pages were reclaimed to stay under it
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 1 and result["test_accuracy"] > 0.9
