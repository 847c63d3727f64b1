"""The training loop: one epoch of training, and evaluation. Explicit objects in, numbers out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from convkit.train.optim import BatchSchedule, Optimizer

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (x (N, C, H, W) float, y (N,) int64)
StepHook = Callable[[int, int, torch.Tensor, torch.Tensor], None]  # (step, seen, loss_sum, correct)
Autocast = Callable[[], contextlib.AbstractContextManager]


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: Optimizer,
    loss_fn: nn.Module,
    scheduler: BatchSchedule | None = None,
    on_step: StepHook | None = None,
    autocast: Autocast = contextlib.nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass of gradient steps; returns the sums (loss_sum, correct, seen) over the samples.

    Running sums stay tensors on the model's device, so no step waits for the device; the
    loss is computed in fp32 from the (possibly bf16) logits.
    """
    model.train()
    loss_sum = correct = None
    seen = 0
    for step, (x, y) in enumerate(batches, start=1):
        with autocast():
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if scheduler is not None:
            scheduler.step()
        batch_loss = loss.detach().double() * len(y)
        batch_correct = (logits.detach().argmax(1) == y).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        seen += len(y)
        if on_step is not None:
            on_step(step, seen, loss_sum, correct)
    return {
        "loss_sum": 0.0 if loss_sum is None else loss_sum.item(),
        "correct": 0 if correct is None else int(correct.item()),
        "seen": seen,
    }


@torch.inference_mode()
def predict_sums(
    model: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    autocast: Autocast = contextlib.nullcontext,
) -> dict[str, float]:
    """Sums (loss_sum, correct, seen) of `model` in eval mode (dropout off) over `batches`."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in batches:
        with autocast():
            logits = model(x)
        loss_sum += loss_fn(logits.float(), y).item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return {"loss_sum": loss_sum, "correct": correct, "seen": seen}


def means(sums: dict[str, float]) -> dict[str, float]:
    seen = max(sums["seen"], 1)
    return {"loss": sums["loss_sum"] / seen, "accuracy": sums["correct"] / seen}


def evaluate(
    model: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    autocast: Autocast = contextlib.nullcontext,
) -> dict[str, float]:
    """Mean loss and accuracy of `model` in eval mode (dropout off) over `batches`."""
    return means(predict_sums(model, batches, loss_fn, autocast))
