"""How much memory is left (the machine's, a cgroup's), and when training reads by window."""

from __future__ import annotations

import pytest
import torch

from convkit.data import Batches, Split, memory
from convkit.train.runner import BLOCK_BYTES, shuffle_window


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1_headroom_counts_inactive_page_cache_as_free_and_the_tightest_parent(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "4:memory:/outer/inner\n3:cpu:/\n")
    root = tmp_path / "fs"
    inner = root / "memory/outer/inner"
    write(inner / "memory.limit_in_bytes", str(2_000_000_000))
    write(inner / "memory.usage_in_bytes", str(1_500_000_000))
    write(inner / "memory.stat", "cache 900000000\ntotal_inactive_file 700000000\n")
    assert memory.cgroup_available(proc, root) == 1_200_000_000  # 2.0 - (1.5 - 0.7) GB
    outer = root / "memory/outer"
    write(outer / "memory.limit_in_bytes", str(1_000_000_000))
    write(outer / "memory.usage_in_bytes", str(600_000_000))
    assert memory.cgroup_available(proc, root) == 400_000_000
    write(outer / "memory.limit_in_bytes", "9223372036854771712")  # no limit
    write(inner / "memory.limit_in_bytes", "9223372036854771712")
    assert memory.cgroup_available(proc, root) is None


def test_cgroup_v2_headroom(tmp_path):
    proc = tmp_path / "cgroup"
    write(proc, "0::/job\n")
    root = tmp_path / "fs"
    write(root / "cgroup.controllers", "memory\n")
    write(root / "job/memory.max", "1073741824\n")
    write(root / "job/memory.current", "536870912\n")
    write(root / "job/memory.stat", "anon 1\ninactive_file 268435456\n")
    assert memory.cgroup_available(proc, root) == 1073741824 - 268435456
    write(root / "job/memory.max", "max\n")
    assert memory.cgroup_available(proc, root) is None


def test_available_bytes_is_the_tighter_limit_and_can_be_set(monkeypatch):
    monkeypatch.delenv("CONVKIT_MEMORY", raising=False)
    monkeypatch.setattr(memory, "meminfo_available", lambda: 8_000_000_000)
    monkeypatch.setattr(memory, "cgroup_available", lambda: 3_000_000_000)
    assert memory.available_bytes() == 3_000_000_000
    monkeypatch.setenv("CONVKIT_MEMORY", "2e9")
    assert memory.available_bytes() == 2_000_000_000
    monkeypatch.setenv("CONVKIT_MEMORY", "lots")
    with pytest.raises(ValueError, match="CONVKIT_MEMORY='lots'"):
        memory.available_bytes()
    monkeypatch.undo()
    assert memory.meminfo_available() > 0


def test_windows_only_for_a_split_larger_than_half_the_memory_left():
    images = torch.zeros(10_000, 3, 64, 64, dtype=torch.uint8)  # 123 MB
    split = Split(images, torch.zeros(10_000, dtype=torch.int64))
    assert shuffle_window(split, 300_000_000) is None
    rows, block = shuffle_window(split, 200_000_000)
    assert block == BLOCK_BYTES // (3 * 64 * 64) == 85
    assert rows == 200_000_000 // 4 // (3 * 64 * 64)
    b = Batches(split, 100, shuffle=True, window=(rows, block))
    assert b.windowed()
