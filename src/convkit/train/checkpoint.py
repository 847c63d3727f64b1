"""Checkpoints as safetensors: tensors plus JSON metadata, never pickles.

* weights file (best.safetensors): the model's state dict under its own keys, so any safetensors
  reader can load it; metadata holds the run config, so the model can be rebuilt from it alone.
* training state (last.safetensors): `model/...`, `optimizer/...` and `rng/...` tensors, with
  the epoch and the optimizer's non-tensor state in metadata, to resume exactly where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from convkit.errors import ConfigError
from convkit.fileio import atomic_path

FORMAT = "convkit-checkpoint-1"


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a convkit checkpoint, with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from None
    if raw_meta.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: not a convkit checkpoint (metadata format is "
            f"{raw_meta.get('format')!r}, expected {FORMAT!r})"
        )
    meta = {k: json.loads(v) for k, v in raw_meta.items() if k != "format"}
    return tensors, meta


def save_weights(path: Path, model: torch.nn.Module, **meta: Any) -> None:
    _save(path, dict(model.state_dict()), meta)


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    **meta: Any,
) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{idx}/{name}"] = value
            else:
                opt_scalars.setdefault(str(idx), {})[name] = value
    tensors["rng/torch"] = torch.get_rng_state()
    for name, generator in generators.items():
        tensors[f"rng/{name}"] = generator.get_state()
    meta = {**meta, "optimizer_groups": opt["param_groups"], "optimizer_scalars": opt_scalars}
    _save(path, tensors, meta)


def restore_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
) -> dict[str, Any]:
    """Load model, optimizer and RNG states saved by `save_training_state`; returns the metadata."""
    tensors, meta = load(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta.pop("optimizer_scalars").items():
        state.setdefault(int(idx), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("optimizer_groups")})
    # Saved tensors are contiguous; a channels_last parameter needs its moment buffers laid out
    # as it is, or fused optimizers pair the wrong elements (they walk memory, not indices).
    for param, param_state in optimizer.state.items():
        for name, value in param_state.items():
            if torch.is_tensor(value) and value.shape == param.shape:
                param_state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)
    torch.set_rng_state(tensors["rng/torch"])
    for name, generator in generators.items():
        generator.set_state(tensors[f"rng/{name}"])
    return meta
