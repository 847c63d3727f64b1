"""Optimizers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from convkit.train.config import TrainConfig


class KerasRMSprop(torch.optim.Adam):
    """Keras's RMSprop (rho=0.9, eps=1e-7, no momentum), run by PyTorch's fused Adam kernel.

    PyTorch has no fused RMSprop, and its per-tensor RMSprop costs more per step than the
    lecture's CIFAR CNN's forward pass. Adam with beta1 = 0 keeps m = g and the same
    v = rho * v + (1 - rho) * g^2, and steps p -= lr * g / (sqrt(v) / c + eps) with
    c = sqrt(1 - rho^t). Passing lr / c and eps / c turns that into RMSprop's
    p -= lr * g / (sqrt(v) + eps) exactly. `lr` and `eps` in the param groups are RMSprop's.
    """

    def __init__(self, params, lr: float, rho: float = 0.9, eps: float = 1e-7, **kwargs) -> None:
        super().__init__(params, lr=lr, betas=(0.0, rho), eps=eps, **kwargs)

    def step(self, *args, **kwargs):
        saved = []
        for group in self.param_groups:
            state = self.state.get(group["params"][0], {})
            t = float(state.get("step", 0)) + 1
            c = math.sqrt(1.0 - group["betas"][1] ** t)
            saved.append((group["lr"], group["eps"]))
            group["lr"], group["eps"] = group["lr"] / c, group["eps"] / c
        try:
            return super().step(*args, **kwargs)
        finally:
            for group, (lr, eps) in zip(self.param_groups, saved, strict=True):
                group["lr"], group["eps"] = lr, eps


def build_optimizer(
    cfg: TrainConfig, params: Iterable[torch.nn.Parameter], device: torch.device | None = None
) -> torch.optim.Optimizer:
    """The optimizer, fused into one kernel per step where PyTorch has one for `device`."""
    params = list(params)
    device = device or torch.device("cpu")
    fast = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fast)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fast)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fast
        )
    return KerasRMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fast)


Schedule = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


def build_schedule(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> Schedule | None:
    """The learning-rate schedule, or None for a constant rate.

    cosine steps after every batch; plateau steps once per epoch on the validation loss.
    """
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "step":  # He et al. 2016: lr / 10 at 32k and 48k of 64k iterations
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[total // 2, total * 3 // 4], gamma=0.1
        )
    # cosine: from lr down to 0 over every step of the run
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )


def per_step(scheduler: Schedule | None) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler to step after every batch (None for per-epoch or no schedule)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return None
    return scheduler
