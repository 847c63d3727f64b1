"""Checkpoints as safetensors: tensors plus JSON metadata, never pickles.

* weights file (best.safetensors): the model's state dict under its own keys, so any safetensors
  reader can load it; metadata holds the run config, so the model can be rebuilt from it alone.
* training state (last.safetensors): `model/...`, `optimizer/...` and `rng/...` tensors, with
  the epoch and the optimizer's non-tensor state in metadata, to resume exactly where it stopped.

Each file carries a SHA-256 of its tensors' names, dtypes, shapes and bytes and of its metadata
(metadata key `sha256`), checked on every load: a bit flipped on disk is an error naming the
file, never a silently different model. Files written before the checksum existed still load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from convkit.errors import ConfigError
from convkit.fileio import atomic_path

if TYPE_CHECKING:  # for annotations only
    from convkit.train.optim import Optimizer


FORMAT = "convkit-checkpoint-1"


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    for key in sorted(metadata):
        h.update(f"{key}={metadata[key]}|".encode())
    return h.hexdigest()


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in meta.items()}}
    metadata["sha256"] = _digest(tensors, metadata)
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
            # Copies: safetensors maps the file, and a tensor left pointing into the map (an
            # optimizer's step count, say) would keep a replaced checkpoint's disk space in use.
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{path}: damaged or not a safetensors file ({_first_line(exc)}); {_AFTER_DAMAGE}"
        ) from None
    if raw_meta.get("format") != FORMAT:
        raise ConfigError(
            f"{path}: not a convkit checkpoint (metadata format is "
            f"{raw_meta.get('format')!r}, expected {FORMAT!r})"
        )
    stored = raw_meta.pop("sha256", None)
    if stored is not None and stored != _digest(tensors, raw_meta):
        raise ConfigError(
            f"{path}: damaged: its contents do not match the SHA-256 stored with them (a bit "
            f"changed on disk, or a copy went wrong); {_AFTER_DAMAGE}"
        )
    return tensors, _parse_metadata(path, raw_meta)


_AFTER_DAMAGE = "restore it from a backup, or train again"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a convkit checkpoint without reading its tensors (not checksum-verified:
    `load` verifies)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{path}: damaged or not a safetensors file ({_first_line(exc)}); {_AFTER_DAMAGE}"
        ) from None
    return _parse_metadata(path, raw)


def _parse_metadata(path: Path, raw: dict[str, str]) -> dict[str, Any]:
    """The JSON values of a checkpoint's metadata (every value convkit writes is JSON)."""
    try:
        return {k: json.loads(v) for k, v in raw.items() if k not in ("format", "sha256")}
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or a 5,000-digit number
        raise ConfigError(
            f"{path}: damaged metadata ({_first_line(exc)}); {_AFTER_DAMAGE}"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__


# What a training state must hold to be resumed from.
_STATE_KEYS = ("config", "epoch", "best", "since_best", "train_seconds", "optimizer_groups",
               "optimizer_scalars")  # fmt: skip


def check_state_metadata(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _STATE_KEYS if k not in meta]
    if missing or not isinstance(meta.get("epoch"), int):
        what = f"no {', '.join(missing)}" if missing else f"epoch {meta.get('epoch')!r}"
        raise ConfigError(f"{path}: not a training state convkit wrote ({what}); {_AFTER_DAMAGE}")
    return meta


def save_weights(path: Path, model: torch.nn.Module, **meta: Any) -> None:
    _save(path, dict(model.state_dict()), meta)


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: Optimizer,
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout masks on the GPU
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    for name, generator in generators.items():
        tensors[f"rng/{name}"] = generator.get_state()
    meta = {**meta, "optimizer_groups": opt["param_groups"], "optimizer_scalars": opt_scalars}
    _save(path, tensors, meta)


def restore_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: Optimizer,
    generators: dict[str, torch.Generator],
) -> dict[str, Any]:
    """Load model, optimizer and RNG states saved by `save_training_state`; returns the metadata."""
    tensors, meta = load(path)
    check_state_metadata(path, meta)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    except RuntimeError as exc:
        raise ConfigError(f"{path} does not fit the run's model: {exc}") from None
    try:
        _restore_optimizer(optimizer, tensors, meta)
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng/cuda"])
        for name, generator in generators.items():
            generator.set_state(tensors[f"rng/{name}"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"{path}: the optimizer or random state does not fit this run ({_first_line(exc)})"
        ) from None
    return meta


def _restore_optimizer(optimizer: Optimizer, tensors, meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scalars in meta.pop("optimizer_scalars").items():
        state.setdefault(int(idx), {}).update(scalars)
    # Saved tensors are contiguous; load_state_dict lays each parameter's moments out as the
    # parameter is (a channels_last one needs channels_last moments for the fused kernels).
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("optimizer_groups")})
