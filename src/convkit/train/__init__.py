"""Training: config, recipes, the loop, checkpoints and run folders."""

from convkit.train.config import TrainConfig
from convkit.train.loop import evaluate, train_one_epoch
from convkit.train.recipes import RECIPES, Recipe, get_recipe
from convkit.train.runner import RunDir, evaluate_run, resume, train

__all__ = [
    "RECIPES",
    "Recipe",
    "RunDir",
    "TrainConfig",
    "evaluate",
    "evaluate_run",
    "get_recipe",
    "resume",
    "train",
    "train_one_epoch",
]
