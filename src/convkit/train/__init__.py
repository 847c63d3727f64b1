"""Training: config, recipes, the loop, checkpoints and the runner.

The runner's names load on first use, so `convkit.train.config` and `convkit.train.checkpoint`
can be imported by the run-folder module (convkit.runs) without importing the runner, which
itself writes through convkit.runs.
"""

from typing import Any

from convkit.train.config import TrainConfig
from convkit.train.recipes import RECIPES, Recipe, get_recipe

_LAZY = {
    "evaluate": "convkit.train.loop",
    "train_one_epoch": "convkit.train.loop",
    "evaluate_run": "convkit.train.runner",
    "resume": "convkit.train.runner",
    "train": "convkit.train.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'convkit.train' has no attribute {name!r}")


__all__ = [
    "RECIPES",
    "Recipe",
    "TrainConfig",
    "evaluate",
    "evaluate_run",
    "get_recipe",
    "resume",
    "train",
    "train_one_epoch",
]
