"""Models: one file per family, each registering its builders by name."""

from convkit.models import mlp  # noqa: F401  (registers mnist-mlp)
from convkit.models.registry import ModelInfo, create_model, list_models, model_info, register

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register"]
