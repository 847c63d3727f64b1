"""Models: one file per family, each registering its builders by name."""

from convkit.models import alexnet, cnn, fast, lenet, mlp, resnet, vgg  # noqa: F401  (each registers its models)
from convkit.models.registry import ModelInfo, create_model, list_models, model_info, register

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register"]
