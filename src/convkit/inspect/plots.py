"""Pictures drawn with matplotlib (Agg, no screen needed), written atomically as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from convkit.fileio import atomic_path  # noqa: E402


def plot_training_curves(
    history: list[dict[str, Any]], path: str | Path, *, title: str = "", best_epoch: int = 0
) -> Path:
    """Loss and accuracy per epoch, training and validation, with the kept epoch marked."""
    epochs = [m["epoch"] for m in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [m[key] for m in history], "o-", label=f"train {label}")
        val = [m.get(f"val_{key}") for m in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, "s-", label=f"validation {label}")
        if best_epoch:
            ax.axvline(
                best_epoch,
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"kept weights (epoch {best_epoch})",
            )
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, max(epochs, default=1) + 0.5)  # whole epochs, even for a one-epoch run
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    low, high = axes[1].get_ylim()
    axes[1].set_ylim(low, min(high, 1.0))  # no accuracy above 100%
    axes[0].set_title("Loss (categorical cross-entropy)")
    axes[1].set_title("Accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
