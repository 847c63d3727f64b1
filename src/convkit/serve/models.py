"""The runs' models, loaded once and kept, and the test sets the analyses look at.

A model is loaded on its run's first request and kept in a small LRU; when the run's kept weights
change (a run still training keeps a better epoch), the next request loads them again. What is
computed from the weights (the confusion matrix, the filters, the top patches, the summary) is
kept with them and goes when they go.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convkit.data.arrays import Dataset, Split
from convkit.runs import WEIGHTS, KeptModel, Run, load_data
from convkit.serve.errors import ApiError
from convkit.train.config import TrainConfig

# Runs whose models stay loaded (the lecture's models are 0.1 to 2.6 MB; a ResNet-50 is 100 MB).
MODELS_KEPT = 4
# Test sets kept in memory (MNIST's is 8 MB, CIFAR-10's 31 MB as uint8).
TEST_SETS_KEPT = 2


@dataclass
class LoadedModel:
    """A run's kept model (CPU, fp32, eval mode, parameters frozen: explanations take gradients
    with respect to the input only) and what has been computed from it."""

    kept: KeptModel
    signature: tuple[int, int, int]  # (mtime in ns, size, inode) of the weights file read
    # The analyses hook into the model's layers, and hooks are per model, not per call: one
    # analysis at a time on a model (reentrant, so a cached value may compute another).
    lock: threading.RLock = field(default_factory=threading.RLock)
    _memo: dict[Any, Any] = field(default_factory=dict)
    pictures: dict[Any, bytes] = field(default_factory=dict)  # PNGs drawn from it (views.py)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """compute() once for these weights; later calls return the same value."""
        with self.lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]


def weights_signature(root: Path) -> tuple[int, int, int]:
    try:
        st = (root / WEIGHTS).stat()
    except FileNotFoundError:
        raise ApiError(
            409, f"run {root.name} has no kept weights yet: its first epoch is still training"
        ) from None
    return st.st_mtime_ns, st.st_size, st.st_ino


class ModelCache:
    """The models of the last `size` runs used, each loaded once per version of its weights."""

    def __init__(self, size: int = MODELS_KEPT):
        self.size = size
        self._entries: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._loading: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()

    def _current(self, root: Path, signature: tuple[int, int, int]) -> LoadedModel | None:
        with self._lock:
            entry = self._entries.get(root)
            if entry is None or entry.signature != signature:
                return None
            self._entries.move_to_end(root)
            return entry

    def get(self, root: Path) -> LoadedModel:
        """The run's model, loaded now if its weights are new to the cache."""
        signature = weights_signature(root)
        entry = self._current(root, signature)
        if entry is not None:
            return entry
        with self._lock:
            loading = self._loading.setdefault(root, threading.Lock())
        with loading:  # one load per run at a time; others wait for it, then share it
            entry = self._current(root, signature)
            if entry is None:
                entry = LoadedModel(_load(root), signature)
                with self._lock:
                    self._entries[root] = entry
                    self._entries.move_to_end(root)
                    while len(self._entries) > self.size:
                        self._entries.popitem(last=False)
        return entry


def _load(root: Path) -> KeptModel:
    kept = Run(root).kept_model()
    kept.model.eval()
    for p in kept.model.parameters():
        p.requires_grad_(False)
    return kept


class TestSets:
    """The test split of each run's dataset, loaded on first use and kept. `datasets` gives
    datasets by name that are used instead of loading (data made in memory, as tests make)."""

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        datasets: Mapping[str, Dataset] | None = None,
        data_dir: str | Path | None = None,
        download: bool = False,
        size: int = TEST_SETS_KEPT,
    ):
        self.datasets = dict(datasets or {})
        self.data_dir, self.download, self.size = data_dir, download, size
        self._splits: OrderedDict[tuple[str, str, int], Split] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cfg: TrainConfig) -> Split:
        if not cfg.data and cfg.dataset in self.datasets:
            return self.datasets[cfg.dataset].test
        key = (cfg.dataset, cfg.data, cfg.image_size)
        with self._lock:  # loading is rare and slow: one at a time
            if key not in self._splits:
                log = lambda m: print(m, file=sys.stderr)  # noqa: E731
                data, _ = load_data(cfg, data_dir=self.data_dir, download=self.download, log=log)
                self._splits[key] = data.test
                while len(self._splits) > self.size:
                    self._splits.popitem(last=False)
            self._splits.move_to_end(key)
            return self._splits[key]
