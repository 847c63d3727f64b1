"""How much memory this process may still use: the machine's, or its cgroup's when that is less.

Training on an image folder maps its decoded cache from disk. When the training images fit in
memory they are shuffled row by row (each batch reads rows from all over the file, and the page
cache keeps the whole file after the first epoch). When they do not, reading scattered rows
makes every batch wait for the disk, so the batches shuffle whole blocks of rows instead (see
`arrays.Batches`' window). This module gives the number that decides between the two.
"""

from __future__ import annotations

import os
from pathlib import Path

_UNLIMITED = 1 << 60  # cgroup v1 writes 2^63 rounded down to a page for "no limit"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":  # cgroup v2's "no limit"
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


def _stat_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def _stat(path: Path) -> dict[str, int]:
    out = {}
    for line in _stat_lines(path):
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's MemAvailable in bytes (free memory plus what it can reclaim), or None."""
    for line in _stat_lines(meminfo):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def cgroup_available(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its parents
    (v1 or v2), counting reclaimable file pages (the page cache a mapped file fills) as free;
    None when no limit applies."""
    best = None
    for line in _stat_lines(proc_cgroup):
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":  # v2: the unified hierarchy
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
            names = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base = root / "memory"
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        rel = path.lstrip("/")
        group = base / rel
        while True:  # a parent's limit binds its children too
            left = _left(group, *names)
            if left is not None:
                best = left if best is None else min(best, left)
            if group == base or base not in group.parents:
                break
            group = group.parent
    return best


def _left(group: Path, limit_name: str, usage_name: str, inactive_name: str) -> int | None:
    limit = _read_int(group / limit_name)
    if limit is None:
        return None
    usage = _read_int(group / usage_name) or 0
    reclaimable = _stat(group / "memory.stat").get(inactive_name, 0)
    return max(0, limit - max(0, usage - reclaimable))


def available_bytes() -> int:
    """Bytes this process can still use: the less of MemAvailable and its cgroup's headroom
    (`CONVKIT_MEMORY`, in bytes, overrides both)."""
    override = os.environ.get("CONVKIT_MEMORY")
    if override:
        try:
            return int(float(override))
        except (ValueError, OverflowError):
            raise ValueError(
                f"CONVKIT_MEMORY={override!r}: expected a finite number of bytes, such as 2e9"
            ) from None
    values = [v for v in (meminfo_available(), cgroup_available()) if v is not None]
    return min(values) if values else _UNLIMITED
