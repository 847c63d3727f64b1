"""Loading weights saved elsewhere (a torchvision-style .pth, or .safetensors) into a model.

A .pth file is read with torch.load(weights_only=True): only tensors and plain containers are
unpickled, never arbitrary objects. Mismatches are reported key by key, nothing is half-loaded.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from convkit.errors import ConfigError

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # common checkpoint layouts


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or .pth/.pt file, unwrapped from the usual checkpoint dicts."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"{path}: refused: it holds Python objects other than tensors, and convkit loads "
            f".pth files with weights_only=True, never a full unpickle ({first}). Save the "
            f"model's state_dict() instead of the model."
        ) from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable PyTorch file ({exc})") from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConfigError(
            f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}"
        )
    if obj and all(k.startswith("module.") for k in obj):  # saved from DataParallel/DDP
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


@dataclass
class WeightsReport:
    """How a state dict fits a model."""

    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # file, model
    matched: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "matched": self.matched,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [
                {"key": k, "file_shape": f, "model_shape": m} for k, f, m in self.mismatched
            ],
        }

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{self.matched} tensors match"]
        for title, items in (
            ("missing from the file", self.missing),
            ("in the file but not in the model", self.unexpected),
        ):
            if items:
                out.append(
                    f"{len(items)} {title}: "
                    + ", ".join(items[:limit])
                    + (" ..." if len(items) > limit else "")
                )
        for key, f, m in self.mismatched[:limit]:
            out.append(f"shape mismatch: {key}: file {tuple(f)}, model {tuple(m)}")
        return out


def compare(model: nn.Module, state: dict[str, torch.Tensor]) -> WeightsReport:
    own = model.state_dict()
    report = WeightsReport()
    report.missing = [k for k in own if k not in state]
    report.unexpected = [k for k in state if k not in own]
    for k, v in state.items():
        if k in own:
            if tuple(v.shape) != tuple(own[k].shape):
                report.mismatched.append((k, list(v.shape), list(own[k].shape)))
            else:
                report.matched += 1
    return report


def load_weights(model: nn.Module, path: str | Path) -> WeightsReport:
    """Load `path` into `model` when every key and shape fits; otherwise raise with the report."""
    state = read_state_dict(path)
    report = compare(model, state)
    if not report.ok:
        raise ConfigError(f"{path} does not fit the model:\n  " + "\n  ".join(report.lines()))
    model.load_state_dict(state)
    return report
