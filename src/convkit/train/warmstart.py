"""Starting a run from trained weights (fine-tuning): `--init FILE_OR_RUN [--freeze]`.

The weights come from a torchvision-layout .pth or .safetensors state dict (what `convkit
weights` checks) or from another run's kept model. Every tensor must fit the new model except
the classifier's (the last dense layer), which is replaced by a freshly initialised one when the
number of classes differs. `--freeze` then trains the classifier alone; batch-norm statistics
of the frozen layers still follow the new data, as the layers run in training mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convkit.errors import ConfigError
from convkit.models.weights import compare, read_state_dict


def read_initial_weights(source: str) -> dict[str, torch.Tensor]:
    """The state dict in `source`: a run folder's kept weights, or a weights file."""
    path = Path(source)
    if path.is_dir():
        from convkit.runs import Run

        return Run.open(path).load_weights()
    return read_state_dict(path)


def classifier_name(model: nn.Module) -> str:
    """The model's last dense layer: what turns features into class scores."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError("this model has no dense classifier layer to replace or train alone")
    return names[-1]


def apply_initial_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> str:
    """Load `state` into `model`, replacing the classifier if its class count differs; returns
    a line saying what was done. Anything else that does not fit is an error naming it."""
    head = classifier_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    report = compare(model, state)
    wrong = [k for k, *_ in report.mismatched if k not in head_keys]
    if report.missing or report.unexpected or wrong:
        lines = "; ".join(report.lines()[:6])
        raise ConfigError(f"--init {source} does not fit this model: {lines}")
    replaced = [k for k, *_ in report.mismatched]
    if replaced:
        state = {k: v for k, v in state.items() if k not in head_keys}
    model.load_state_dict(state, strict=not replaced)
    line = f"Initial weights: {len(state)} tensors from {source}"
    if replaced:
        old = next(shape for k, shape, _ in report.mismatched if k == f"{head}.weight")[0]
        new = model.get_submodule(head).out_features
        line += f"; classifier {head} ({old} classes there) replaced by a new one for {new}"
    return line


def freeze_all_but_classifier(model: nn.Module) -> str:
    head = classifier_name(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(f"{head}."))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"Frozen: only the classifier {head} trains ({trained:,} of {total:,} parameters)"
