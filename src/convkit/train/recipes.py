"""Recipes: named starting points (model, dataset, settings), each reproducing a known result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convkit.errors import ConfigError
from convkit.train.config import TrainConfig


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    target: str  # what it should reach, and where that figure comes from
    settings: dict[str, Any]

    def config(self) -> TrainConfig:
        return TrainConfig.from_dict({"recipe": self.name, **self.settings}, f"recipe {self.name}")


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(
            name="mnist-mlp",
            description="The lecture's 512-512-10 MLP on MNIST: Adam, categorical cross-entropy, "
            "batch 128, 10 epochs, last 20% held out, best-val-loss weights tested. One change "
            "from the lecture: Adam's rate decays to 0 on a cosine (constant 1e-3 gave "
            "97.91-98.08% over seeds 0-2; cosine 98.37-98.42%)",
            target="test accuracy >= 98.0% (the lecture: 98.21%)",
            settings=dict(
                model="mnist-mlp",
                dataset="mnist",
                optimizer="adam",
                lr=1e-3,
                schedule="cosine",
                batch_size=128,
                epochs=10,
                val_split=0.2,
                keep="best",
            ),
        ),
    ]
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown recipe {name!r}; recipes: {', '.join(sorted(RECIPES))} "
            f"(`convkit recipes` describes them)"
        ) from None
