"""The training loop: one epoch of training, and evaluation. Explicit objects in, numbers out."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (x (N, C, H, W) float, y (N,) int64)
StepHook = Callable[[int, int, torch.Tensor, torch.Tensor], None]  # (step, seen, loss_sum, correct)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_step: StepHook | None = None,
) -> dict[str, float]:
    """One pass of gradient steps; returns mean loss and accuracy over the samples seen."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64)  # running sums stay tensors: no sync per step
    correct = torch.zeros((), dtype=torch.int64)
    seen = 0
    for step, (x, y) in enumerate(batches, start=1):
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step(step, seen, loss_sum, correct)
    return {"loss": loss_sum.item() / max(seen, 1), "accuracy": correct.item() / max(seen, 1)}


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Batches, loss_fn: nn.Module) -> dict[str, float]:
    """Mean loss and accuracy of `model` in eval mode (dropout off) over `batches`."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        logits = model(x)
        loss_sum += loss_fn(logits, y).item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
