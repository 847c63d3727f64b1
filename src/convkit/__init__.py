"""convkit: train, understand and use image classifiers, from the lecture's MNIST MLP to ResNet.

From Python, one import (the names are convkit.api's):

    import convkit as ck
    ck.summary("mnist-mlp")
    run = ck.train("mnist-mlp", epochs=3, seed=1)
    run.evaluate()

The names load on first use (PEP 562), so `import convkit`, and with it the command line,
imports none of torch, numpy, matplotlib or IPython.
"""

import sys as _sys

__version__ = "0.1.0"

_API = (
    "Dataset",
    "Run",
    "compare",
    "datasets",
    "explain",
    "load",
    "load_dataset",
    "models",
    "recipes",
    "show",
    "summary",
    "train",
)
# Two of the API's names are also subpackages: convkit.train (the runner) and convkit.models
# (the registry). Importing a subpackage sets it as an attribute of this package, so
# `ck.train` is that module whatever happens here; the package therefore makes those two
# modules callable when they are set, and calling them calls convkit.api.train and
# convkit.api.models. `convkit.train.TrainConfig`, `from convkit.models import create_model`
# and every other use of the subpackages stay as they were.
_CALLABLE = ("models", "train")
_Module = type(_sys)  # types.ModuleType, without importing types


class _CallableSubpackage(_Module):
    """convkit.train and convkit.models: modules that, called, run the API function of their
    name (`ck.train("mnist-mlp")`, `ck.models("resnet*")`)."""

    def __call__(self, *args, **kwargs):
        """Calls convkit.api.train or convkit.api.models: see their help."""
        from convkit import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(_Module):
    def __setattr__(self, name, value):
        if name in _CALLABLE and type(value) is _Module:
            value.__class__ = _CallableSubpackage
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def __getattr__(name):
    if name in _CALLABLE:  # the subpackage, made callable as it is set on this package
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from convkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'convkit' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_API})


__all__ = list(_API)
