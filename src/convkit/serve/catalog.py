"""The runs a server shows: run folders found under the paths it was given, each under an id
(`r1`, `r2`, ... in the order found) that stays the same for the server's life, with a summary
read through convkit.runs.Run.

Every listing scans again, so a run started after the server shows up. A scan costs a stat per
folder and per file of each run folder; a run's summary is read again only when its files
changed (their newest modification time or their number)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convkit.data.catalog import get_dataset_spec
from convkit.errors import ConvkitError
from convkit.runs import WEIGHTS, Run
from convkit.train import checkpoint

# A run folder with no result.json whose files changed this recently is taken as still training
# (an epoch of the bigger CIFAR recipes on a laptop CPU takes minutes).
TRAINING_WINDOW_S = 600
# Folders searched for run folders below each path given (runs/<name>/ is depth 1).
MAX_DEPTH = 4


@dataclass
class RunEntry:
    id: str
    root: Path
    signature: tuple[int, int] = (0, 0)  # (newest file mtime in ns, number of files)
    info: dict[str, Any] = field(default_factory=dict)  # the summary's fields that files hold
    memo: dict[str, Any] = field(default_factory=dict)  # pictures drawn, with their signature


class RunCatalog:
    """Run folders under `paths` (each a run folder, or a folder searched for run folders)."""

    def __init__(self, paths: list[Path]):
        self.paths = [Path(p) for p in paths]
        self._by_root: dict[Path, RunEntry] = {}
        self._by_id: dict[str, RunEntry] = {}
        self._lock = threading.Lock()  # scans run in worker threads

    def scan(self) -> list[dict[str, Any]]:
        """Find the run folders again and return their summaries, newest first."""
        found = [root for path in self.paths for root in find_run_folders(path)]
        listed = []
        with self._lock:
            for root in dict.fromkeys(found):
                entry = self._by_root.get(root)
                if entry is None:
                    entry = RunEntry(f"r{len(self._by_root) + 1}", root)
                    self._by_root[root] = entry
                    self._by_id[entry.id] = entry
                listed.append((self._refresh(entry), entry.signature[0]))
        return [summary for summary, _ in sorted(listed, key=lambda s: s[1], reverse=True)]

    def get(self, run_id: str) -> RunEntry | None:
        """The run of an id, or None when the id is unknown or its folder is gone."""
        with self._lock:
            entry = self._by_id.get(run_id)
        if entry is None or not Run(entry.root).resumable:  # its folder was removed
            return None
        return entry

    def summary(self, entry: RunEntry) -> dict[str, Any]:
        with self._lock:
            return self._refresh(entry)

    def _refresh(self, entry: RunEntry) -> dict[str, Any]:
        signature = folder_signature(entry.root)
        if signature != entry.signature or not entry.info:
            entry.info = read_summary(entry.root)
            entry.signature = signature
        updated = signature[0] / 1e9
        training = "error" not in entry.info and not entry.info["finished"]
        return {
            "id": entry.id,
            **{k: v for k, v in entry.info.items() if k != "finished"},
            "training": training and time.time() - updated < TRAINING_WINDOW_S,
            "updated": datetime.fromtimestamp(updated, timezone.utc).isoformat(),
        }


def find_run_folders(path: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """`path` itself when it is a run folder (it holds config.json), else the run folders below
    it, sorted, at most `depth` levels down; hidden folders (a run being created) are skipped."""
    if Run(path).resumable:  # it holds config.json
        return [path.resolve()]
    if depth == 0 or not path.is_dir():
        return []
    try:
        children = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # unreadable, or removed while we look
        return []
    return [root for child in children for root in find_run_folders(child, depth - 1)]


def folder_signature(root: Path) -> tuple[int, int]:
    """(newest modification time of the folder's files in ns, how many there are)."""
    newest, count = 0, 0
    try:
        with os.scandir(root) as it:
            for item in it:
                if item.is_file():
                    newest = max(newest, item.stat().st_mtime_ns)
                    count += 1
    except OSError:
        pass
    return newest, count


def read_summary(root: Path) -> dict[str, Any]:
    """What a run folder says of itself; a folder that cannot be read gives its error instead
    (and null fields), so one damaged run does not hide the others."""
    base: dict[str, Any] = {"name": root.name, "finished": False}
    try:
        run = Run.open(root)
        cfg = run.config()
        history = run.history()
        result = run.result()
        classes, shape = classes_and_shape(root, cfg.dataset)
    except ConvkitError as exc:
        empty = dict.fromkeys(("model", "dataset", "test_accuracy", "planned_epochs"))
        return {**base, **empty, "classes": [], "image_shape": None, "drawable": False,
                "epochs": 0, "error": str(exc)}  # fmt: skip
    return {
        **base,
        "model": cfg.model,
        "dataset": f"folder:{Path(cfg.data).name}" if cfg.data else cfg.dataset,
        "classes": list(classes),
        "image_shape": list(shape) if shape else None,
        "drawable": shape is not None and tuple(shape) == (1, 28, 28),
        "test_accuracy": result.get("test_accuracy") if result else None,
        "epochs": len(history),
        "planned_epochs": cfg.epochs,
        "finished": result is not None,
    }


def classes_and_shape(root: Path, dataset: str) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    """The classes and image shape the kept weights record (read from the checkpoint's header,
    no tensor loaded); before the first epoch is kept, the dataset's own, when registered."""
    if Run(root).has_weights:
        meta = checkpoint.read_metadata(root / WEIGHTS)
        if "classes" in meta:
            return tuple(meta["classes"]), tuple(meta["image_shape"])
    try:
        spec = get_dataset_spec(dataset)
    except ConvkitError:  # an image folder, or a dataset not registered here
        return (), None
    return tuple(spec.classes), tuple(spec.image_shape)
