"""Progress output: a redrawn bar on a terminal, one plain line per epoch everywhere else."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import torch


class Progress:
    """Shows training progress on `stream`; redraws the bar only when the stream is a terminal."""

    def __init__(
        self, stream: TextIO | None = None, *, interval: float = 0.1, enabled: bool = True
    ):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.live = enabled and self.stream.isatty()
        self.interval = interval  # seconds between redraws
        self._last = 0.0

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self._t0 = self._last = time.perf_counter()

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """Called every step; reads the running sums (a sync) only when it redraws."""
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last < self.interval and done < self.steps:
            return
        self._last = now
        width = 24
        filled = int(width * done / self.steps)
        bar = "=" * filled + (">" if filled < width else "") + "." * (width - filled - 1)
        rate = seen / max(now - self._t0, 1e-9)
        text = (
            f"\rEpoch {self.epoch}/{self.epochs} [{bar[:width]}] {done}/{self.steps} "
            f"- loss: {loss_sum.item() / seen:.4f} - accuracy: {correct.item() / seen:.4f} "
            f"- {rate:,.0f} img/s"
        )
        self.stream.write(text)
        self.stream.flush()

    def end_epoch(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")  # clear the bar before the epoch's line
        self.message(line)
