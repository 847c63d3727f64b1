"""Regenerate torchvision_state_dicts.json (not run by the tests; needs a torchvision wheel).

    pip download --no-deps -d /tmp/tv torchvision
    mkdir /tmp/tvx && python -m zipfile -e /tmp/tv/torchvision-*.whl /tmp/tvx
    PYTHONPATH=/tmp/tvx python tests/data/torchvision_keys.py > tests/data/torchvision_state_dicts.json

Only torchvision's pure-Python model files are loaded: its package __init__ and compiled ops are
skipped (they must match the exact torch build, which a CPU-only torch here does not).
"""

import importlib
import importlib.util
import json
import sys
import types
import warnings
from pathlib import Path

import torch

MODELS = {
    "alexnet": ["alexnet"],
    "vgg": ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"],
    "resnet": ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"],
}


def main() -> None:
    warnings.simplefilter("ignore")
    spec = importlib.util.find_spec("torchvision")
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("torchvision", root), ("torchvision.models", root / "models")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    out = {}
    for module, names in MODELS.items():
        definitions = importlib.import_module(f"torchvision.models.{module}")
        for n in names:
            with torch.device("meta"):
                model = getattr(definitions, n)()
            out[n] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    about = (
        "State-dict keys and tensor shapes of torchvision's ImageNet models, in order, "
        "generated outside the tests by tests/data/torchvision_keys.py."
    )
    json.dump({"about": about, "models": out}, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
