"""Progress output: a redrawn bar on a terminal, one line per epoch that updates in place in a
Jupyter notebook, one plain line per epoch everywhere else."""

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
        self.stream.write("\r" + self._bar(done, seen, loss_sum, correct, now))
        self.stream.flush()

    def _bar(
        self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor, now: float
    ) -> str:
        width = 24
        filled = int(width * done / self.steps)
        bar = "=" * filled + (">" if filled < width else "") + "." * (width - filled - 1)
        rate = seen / max(now - self._t0, 1e-9)
        return (
            f"Epoch {self.epoch}/{self.epochs} [{bar[:width]}] {done}/{self.steps} "
            f"- loss: {loss_sum.item() / seen:.4f} - accuracy: {correct.item() / seen:.4f} "
            f"- {rate:,.0f} img/s"
        )

    def end_epoch(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K")  # clear the bar before the epoch's line
        self.message(line)


class NotebookProgress(Progress):
    """Progress in a Jupyter notebook: each epoch is one output line, drawn when the epoch
    starts, redrawn in place (an IPython display that is updated, not carriage returns) at most
    every `interval` seconds while it runs, and replaced by the epoch's summary at its end.
    Messages are printed as usual."""

    def __init__(self, *, interval: float = 0.5, enabled: bool = True):
        super().__init__(sys.stdout, interval=interval, enabled=enabled)
        self.live = enabled
        self._handle = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        super().start_epoch(epoch, epochs, steps)
        if self.enabled:
            from IPython.display import display

            sys.stdout.flush()  # the lines printed so far come before this one
            self._handle = display(self._line(f"Epoch {epoch}/{epochs} ..."), display_id=True)

    def step(self, done: int, seen: int, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        if self._handle is None:
            return
        now = time.perf_counter()
        if now - self._last < self.interval or done >= self.steps:
            return  # the last step is shown by end_epoch's line
        self._last = now
        self._handle.update(self._line(self._bar(done, seen, loss_sum, correct, now)))

    def end_epoch(self, line: str) -> None:
        if self._handle is None:
            self.message(line)
            return
        self._handle.update(self._line(line))
        self._handle = None

    @staticmethod
    def _line(text: str):
        from IPython.display import Pretty

        return Pretty(text)


def progress_for(stream: TextIO | None = None, *, enabled: bool = True) -> Progress:
    """The progress display for where this process runs: a notebook's updating lines inside a
    Jupyter kernel, else the terminal's (a redrawn bar when `stream` is a terminal)."""
    from convkit.display import in_notebook

    if in_notebook() and stream in (None, sys.stdout):
        return NotebookProgress(enabled=enabled)
    return Progress(stream, enabled=enabled)
