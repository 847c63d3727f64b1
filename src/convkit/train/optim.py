"""Optimizers and learning-rate schedules built from a TrainConfig."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from convkit.train.config import TrainConfig


def build_optimizer(
    cfg: TrainConfig, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=False
        )
    # Keras's RMSprop: rho=0.9 (PyTorch's alpha defaults to 0.99), eps=1e-7, no momentum.
    return torch.optim.RMSprop(
        params, lr=cfg.lr, alpha=0.9, eps=1e-7, weight_decay=cfg.weight_decay
    )


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
