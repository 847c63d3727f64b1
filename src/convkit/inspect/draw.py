"""Pictures of the analyses (matplotlib, Agg), each written atomically as PNG: a thin front end
over inspect/analyses.py. A figure function also writes into a binary file object (io.BytesIO)
given instead of a path, as the web server does. The small per-image pictures the web page asks
for on every prediction (an array, a heat map over the input, a layer's channels, a filter's
patches) are made with Pillow alone, without a figure: they take milliseconds, not a tenth of
a second."""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from convkit.fileio import atomic_path  # noqa: E402


def _save(fig, path: Path | BinaryIO) -> Path | BinaryIO:
    if hasattr(path, "write"):  # a file object (io.BytesIO): nothing to write atomically
        fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _image(ax, chw: np.ndarray, title: str = "", fontsize: int = 8) -> None:
    """Show a (C, H, W) uint8 or [0, 1] float image: grey or RGB."""
    img = chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)
    ax.imshow(
        img, cmap="gray" if chw.shape[0] == 1 else None, vmin=0, vmax=img.max() > 1 and 255 or 1
    )
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def confusion_figure(conf, path: Path | BinaryIO, title: str) -> Path | BinaryIO:
    k = len(conf.classes)
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(15, 7), gridspec_kw={"width_ratios": [1.25, 1]}, layout="constrained"
    )
    m = conf.matrix
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(k), conf.classes, rotation=45, ha="right")
    ax.set_yticks(range(k), conf.classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (counts; colour: share of the true class)\n{title}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the row")
    y = np.arange(k)
    bx.barh(y - 0.2, conf.precision, 0.4, label="precision (of predictions, right)")
    bx.barh(y + 0.2, conf.recall, 0.4, label="recall = per-class accuracy")
    bx.set_yticks(y, conf.classes)
    bx.invert_yaxis()
    lo = max(0.0, math.floor(10 * min(conf.precision.min(), conf.recall.min())) / 10 - 0.1)
    bx.set_xlim(lo, 1.0)
    bx.axvline(conf.accuracy, color="grey", linestyle="--", label=f"accuracy {conf.accuracy:.2%}")
    bx.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, fontsize=8)
    bx.set_title("Per class")
    bx.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def gallery_figure(
    images: np.ndarray, captions: list[str], path: Path, title: str, cols: int = 8
) -> Path:
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 1.6, rows * 1.9 + 0.6), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions, strict=False):
        _image(ax, img, cap, fontsize=7)
        ax.axis("on")
    fig.suptitle(title)
    return _save(fig, path)


def _tiles(weights: np.ndarray) -> tuple[list[np.ndarray], float, bool]:
    """Kernels (F, C, h, w) as pictures: RGB for 3 input channels (mid-grey is zero), otherwise
    the mean over input channels on a shared scale centred at zero."""
    scale = float(np.abs(weights).max()) or 1.0
    if weights.shape[1] == 3:
        return [(w / scale * 0.5 + 0.5).clip(0, 1) for w in weights], scale, True
    return [w.mean(0) for w in weights], float(np.abs(weights.mean(1)).max()) or 1.0, False


def filters_figure(
    info: dict[str, Any], path: Path | BinaryIO, title: str, limit: int = 64
) -> Path | BinaryIO:
    w = info["weights"][:limit]
    tiles, scale, rgb = _tiles(w)
    n = len(tiles)
    cols = min(16, n) if info["kind"] == "conv" else 8
    rows = math.ceil(n / cols)
    size = 0.9 if info["kind"] == "conv" else 1.4
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * size, rows * size + 0.6), squeeze=False, layout="constrained"
    )
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        if rgb:
            ax.imshow(tiles[i].transpose(1, 2, 0), interpolation="nearest")
        else:
            im = ax.imshow(
                tiles[i], cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest"
            )
        ax.set_title(str(i), fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.02, label="weight (red +, blue -)")
    fig.suptitle(title)
    return _save(fig, path)


def feature_maps_figure(
    layers: list[dict[str, Any]], image: np.ndarray, path: Path, title: str, limit: int = 64
) -> Path:
    """The input, then per layer a grid of its channels (each on its own scale, bright = strong)."""
    blocks = [(min(len(la["maps"]), limit), la) for la in layers]
    cols = 16
    heights = [2.2] + [math.ceil(n / cols) * 0.85 + 0.35 for n, _ in blocks]
    fig = plt.figure(figsize=(cols * 0.8, sum(heights) + 0.6), layout="constrained")
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights)
    ax = fig.add_subplot(grid[0])
    _image(ax, image, "input")
    for b, (n, la) in enumerate(blocks, start=1):
        sub = grid[b].subgridspec(math.ceil(n / cols), cols, wspace=0.05, hspace=0.05)
        maps = la["maps"]
        for c in range(n):
            a = fig.add_subplot(sub[c // cols, c % cols])
            a.imshow(maps[c], cmap="viridis", interpolation="nearest")
            a.set_xticks([]), a.set_yticks([])
            if c == 0:
                shape = "x".join(map(str, maps.shape))
                a.set_title(f"{la['layer']}  ({shape})", fontsize=9, loc="left", x=0)
    fig.suptitle(title)
    return _save(fig, path)


def patches_figure(
    tiles: list[list[np.ndarray]], path: Path | BinaryIO, title: str, limit: int = 64
) -> Path | BinaryIO:
    """Per filter a mosaic of its top patches (each patch scaled up, nearest neighbour)."""
    tiles = tiles[:limit]
    n = len(tiles)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(cols * 1.9, rows * 2.1 + 0.5), squeeze=False, layout="constrained"
    )
    for f, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if f >= n:
            ax.axis("off")
            continue
        ax.imshow(_mosaic(tiles[f]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"filter {f}", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def _mosaic(patches: list[np.ndarray], gap: int = 1) -> np.ndarray:
    """Patches (C, h, w) uint8 of possibly different sizes (clipped at borders), in a square
    grid, each pasted top-left into an h x w cell, cells separated by white lines."""
    k = math.ceil(math.sqrt(len(patches)))
    c = patches[0].shape[0]
    h = max(p.shape[1] for p in patches)
    w = max(p.shape[2] for p in patches)
    out = np.full((c, k * (h + gap) - gap, k * (w + gap) - gap), 255, dtype=np.uint8)
    for i, p in enumerate(patches):
        r, q = divmod(i, k)
        out[
            :,
            r * (h + gap) : r * (h + gap) + p.shape[1],
            q * (w + gap) : q * (w + gap) + p.shape[2],
        ] = p
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def attention_figure(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Per image: the original, the converted input, Grad-CAM and saliency overlays."""
    cols = 4
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 2.8, len(rows) * 3.0 + 0.5),
                             squeeze=False, layout="constrained")  # fmt: skip
    for r, row in enumerate(rows):
        a = axes[r]
        a[0].imshow(row["original"], cmap="gray" if row["original"].ndim == 2 else None)
        a[0].set_title(f"{row['label']}\n{row['conversion']}", fontsize=7)
        _image(a[1], row["converted"], f"model input\npredicted: {row['predicted']}", fontsize=7)
        base = row["converted"].mean(0)
        for ax, key, name in ((a[2], "gradcam", "Grad-CAM"), (a[3], "saliency", "saliency")):
            ax.imshow(base, cmap="gray")
            if row.get(key) is not None:
                im = ax.imshow(row[key], cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.set_title(f"{name} for '{row['target']}'", fontsize=7)
            else:
                ax.clear()
                ax.axis("off")
                ax.text(0.5, 0.5, f"{name}:\n{row.get(key + '_note', 'n/a')}", ha="center",
                        va="center", fontsize=9, transform=ax.transAxes)  # fmt: skip
        for ax in a:
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title)
    if any(row.get("gradcam") is not None or row.get("saliency") is not None for row in rows):
        fig.colorbar(im, ax=axes, fraction=0.02, label="importance (0 to 1, red = most)")
    return _save(fig, path)


# ---- small pictures as PNG bytes, without a figure (the web page's per-request images) --------


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 image, (H, W) grey or (H, W, 3) RGB, as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def hwc(chw: np.ndarray) -> np.ndarray:
    """A (C, H, W) image with 1 or 3 channels as (H, W) or (H, W, 3), for png_bytes."""
    return chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)


@functools.lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    """A matplotlib colour map as a (256, 3) uint8 table (colormaps[...] makes a copy a call)."""
    return matplotlib.colormaps[cmap](np.linspace(0, 1, 256), bytes=True)[:, :3]


def _colours(values: np.ndarray, cmap: str) -> np.ndarray:
    """Floats in [0, 1] (any shape) -> uint8 RGB through a colour map, shape (..., 3)."""
    return _lut(cmap)[(np.clip(values, 0, 1) * 255).round().astype(np.uint8)]


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A heat map (H, W) in [0, 1] over the (C, H, W) uint8 input shown in grey, in jet colours
    (red = most), as attention_figure draws it: (H, W, 3) uint8."""
    grey = np.asarray(image, dtype=np.float64).mean(0)  # (H, W) on 0..255
    base = np.repeat(grey[..., None], 3, axis=2)
    mixed = (1 - alpha) * base + alpha * _colours(heat, "jet").astype(np.float64)
    return mixed.round().clip(0, 255).astype(np.uint8)


def maps_grid(maps: np.ndarray, cols: int = 8, limit: int = 64, gap: int = 1) -> np.ndarray:
    """A layer's channels (C, h, w), the first `limit`, in a grid `cols` wide separated by
    white lines; each channel on its own scale in viridis (bright = strong), as
    feature_maps_figure draws them: (rows * (h + gap) - gap, cols * (w + gap) - gap, 3) uint8."""
    maps = np.asarray(maps, dtype=np.float64)[:limit]
    n, h, w = maps.shape
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    scaled = np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1), 0.0)
    tiles = np.full((rows * cols, h + gap, w + gap, 3), 255, dtype=np.uint8)
    tiles[:n, :h, :w] = _colours(scaled, "viridis")  # (n, h, w, 3)
    grid = tiles.reshape(rows, cols, h + gap, w + gap, 3).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (h + gap), cols * (w + gap), 3)
    return grid[: grid.shape[0] - gap, : grid.shape[1] - gap]  # no line after the last row


def patches_mosaic(patches: list[np.ndarray]) -> np.ndarray:
    """One filter's top patches (C, h, w) uint8 in a square grid, as patches_figure draws each
    filter: (H, W) or (H, W, 3) uint8."""
    return _mosaic(patches)


# ---- robustness (convkit robustness, compare) ------------------------------------------------------


def shift_heatmap_figure(
    report: dict[str, Any], path: Path | BinaryIO, title: str
) -> Path | BinaryIO:
    """The shift grid: accuracy for each (dx, dy), the centre cell being the clean test set."""
    s = report["shift"]
    grid = np.asarray(s["grid"]) * 100
    offsets = s["offsets"]
    n = len(offsets)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(n), [str(v) for v in offsets])
    ax.set_yticks(range(n), [str(v) for v in offsets])
    ax.set_xlabel("dx (pixels right)")
    ax.set_ylabel("dy (pixels down)")
    if n <= 13:  # the figures themselves, where they fit
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 60 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, label="test accuracy (%)", shrink=0.8)
    ax.set_title(f"{title}\nmean {s['mean']:.1%}, consistency {s['consistency']:.1%}", fontsize=9)
    return _save(fig, path)


def robustness_curves_figure(
    reports: list[tuple[str, dict[str, Any]]], path: Path | BinaryIO, title: str = ""
) -> Path | BinaryIO:
    """Accuracy against shift distance, rotation and scale, and corruption error against
    severity: one line per (label, report); panels a report lacks are left out."""
    panels = [
        ("shift", "shift distance max(|dx|, |dy|) (pixels)", "accuracy (%)"),
        ("rotate", "rotation (degrees)", "accuracy (%)"),
        ("scale", "scale", "accuracy (%)"),
        ("corruptions", "severity", "mean corruption error (%)"),
    ]
    panels = [p for p in panels if any(p[0] in r for _, r in reports)]
    if not panels:
        raise ValueError("no robustness results to draw")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, xlabel, ylabel) in zip(axes[0], panels, strict=True):
        for label, r in reports:
            if key not in r:
                continue
            if key == "shift":
                xs = [d["distance"] for d in r["shift"]["by_distance"]]
                ys = [100 * d["accuracy"] for d in r["shift"]["by_distance"]]
            elif key == "corruptions":
                items = r["corruptions"]["items"]
                xs = [0, 1, 2, 3, 4, 5]
                ys = [100 * r["corruptions"]["clean_error"]] + [
                    100 * float(np.mean([i["errors"][s] for i in items])) for s in range(5)
                ]
            else:
                unit = "angle" if key == "rotate" else "scale"
                xs = [p[unit] for p in r[key]]
                ys = [100 * p["accuracy"] for p in r[key]]
            ax.plot(xs, ys, "o-", markersize=3, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def examples_figure(
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path | BinaryIO, title: str = ""
) -> Path | BinaryIO:
    """A strip of images per row (label, [(caption, (C, H, W) uint8)]): what was tested."""
    cols = max(len(items) for _, items in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.1 * cols + 1.6, 1.15 * len(rows)), squeeze=False
    )
    for r, (label, items) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            if c < len(items):
                _image(ax, items[c][1], items[c][0], fontsize=7)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    if title:
        fig.subplots_adjust(top=1 - 0.45 / fig.get_figheight())  # room for the title
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
