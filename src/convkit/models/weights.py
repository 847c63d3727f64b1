"""Loading weights saved elsewhere (a torchvision-style .pth, or .safetensors) into a model.

A .pth file is read with torch.load(weights_only=True): only tensors and plain containers are
unpickled, never arbitrary objects. Mismatches are reported key by key, nothing is half-loaded.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from convkit.errors import ConfigError

_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # common checkpoint layouts

# How torch.save's files start: a zip archive (the default since PyTorch 1.6), or in the legacy
# format a pickle (opcode PROTO, 0x80) whose first object is torch's magic number.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[2:-1]  # LONG1 + 10 bytes
# torch.save stores zip entries uncompressed, and float weights deflate by a few percent: an
# archive whose entries inflate to more than this many times its size is crafted (a zip bomb
# of a few MB can declare gigabytes), and is refused before torch reads it.
_MAX_INFLATION = 16


def _is_torch_save(path: Path) -> bool:
    """Whether the file starts as torch.save's files do; a zip bomb is refused here."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                inflated = sum(info.file_size for info in z.infolist())
        except Exception:  # zipfile raises many types for a damaged directory; torch names it
            return True
        if inflated > _MAX_INFLATION * path.stat().st_size + (1 << 20):
            raise ConfigError(
                f"{path}: refused: its zip entries inflate to {inflated:,} bytes from "
                f"{path.stat().st_size:,} on disk; torch.save writes them uncompressed"
            )
        return True
    legacy_pickle = head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]
    return legacy_pickle or head[257:262] == b"ustar"  # a tar: torch.save before PyTorch 0.4


def _unpickler_reason(exc: Exception) -> str:
    """The line of torch's weights_only error that says what it refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.endswith("WeightsUnpickler error:") and i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else type(exc).__name__


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
        torch_save = _is_torch_save(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not torch_save:
        with open(path, "rb") as fh:
            first = fh.read(9)
        head = " ".join(f"{b:02x}" for b in first[:4]) or "nothing"
        hint = (
            "it looks like a safetensors file: name it .safetensors"
            if first[8:9] == b"{"  # safetensors: 8-byte header length, then the JSON header
            else "is it damaged, or in another format?"
        )
        raise ConfigError(
            f"{path}: not a PyTorch checkpoint: torch.save writes a zip archive (starting "
            f"50 4b 03 04) or, in the legacy format, a pickle of torch's magic number; this "
            f"file starts with {head}: {hint}"
        )
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path}: refused: it holds Python objects other than tensors, and convkit loads "
            f".pth files with weights_only=True, never a full unpickle "
            f"({_unpickler_reason(exc)}). Save the model's state_dict() instead of the model."
        ) from None
    except Exception as exc:  # a damaged archive or pickle raises many types
        raise ConfigError(
            f"{path}: not a readable PyTorch file ({type(exc).__name__}: {exc})"
        ) from None
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
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
