"""Atomic writes: a file appears whole under its final name, or not at all.

For the crash tests there is one fault point: with CONVKIT_KILL_WRITING=NAME:K in the
environment, the process cuts its K-th write of a file named NAME short (half its bytes) and
kills itself with SIGKILL before the rename, as a power cut in the middle of that write would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _fault_point(path, tmp)
        # mkstemp makes 0600 (and a writer may recreate the file): give the usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


_writes: dict[str, int] = {}


def _fault_point(path: Path, tmp: Path) -> None:
    spec = os.environ.get("CONVKIT_KILL_WRITING")
    if not spec:
        return
    name, _, k = spec.rpartition(":")
    if path.name != name:
        return
    _writes[name] = _writes.get(name, 0) + 1
    if _writes[name] == int(k):
        with open(tmp, "r+b") as f:
            f.truncate(tmp.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
