"""What each endpoint answers, computed in a worker thread: the run's files read through
convkit.runs.Run, the analyses of convkit.inspect.analyses, drawn by convkit.inspect.draw (and
convkit.inspect.plots for the curves). This module only picks inputs and turns the data into
JSON values and PNG bytes; it holds no analysis of its own.
"""

from __future__ import annotations

import base64
import io
import math
import random
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convkit.data import geometry
from convkit.errors import ConfigError, ConvkitError
from convkit.inspect import analyses as A
from convkit.inspect import draw, summarize
from convkit.inspect.arithmetic import explain
from convkit.models import create_model
from convkit.runs import WEIGHTS, Run
from convkit.serve.catalog import RunCatalog, RunEntry
from convkit.serve.errors import ApiError
from convkit.serve.models import LoadedModel, ModelCache, TestSets
from convkit.train import checkpoint
from convkit.train.config import TrainConfig

# pyplot keeps its figures in one global registry, so figures are drawn one at a time.
DRAW_LOCK = threading.RLock()
TOP_K = 5
MAP_SIDE = 64  # feature maps larger than this are subsampled to it (a 224x224 ResNet's 112x112)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _title(cfg: TrainConfig) -> str:
    return f"{cfg.recipe or cfg.model} on {cfg.dataset}"


def _figure_png(draw_figure, data: Any, title: str) -> bytes:
    """A draw.*_figure drawn into PNG bytes instead of a file."""
    buf = io.BytesIO()
    with DRAW_LOCK:
        draw_figure(data, buf, title)
    return buf.getvalue()


def _picture(loaded: LoadedModel, key: Any, draw_png) -> bytes:
    """draw_png() once for these weights: drawn under DRAW_LOCK, not the model's lock, so
    predictions go on while a figure is drawn."""
    with DRAW_LOCK:
        if key not in loaded.pictures:
            loaded.pictures[key] = draw_png()
        return loaded.pictures[key]


# ---- the run ------------------------------------------------------------------------------------


def run_detail(catalog: RunCatalog, entry: RunEntry, models: ModelCache) -> dict[str, Any]:
    """The run summary, its history, and its model's summary, conv arithmetic and layers."""
    summary = catalog.summary(entry)
    if "error" in summary:  # its folder cannot be read: nothing more to show
        raise ApiError(500, summary["error"])
    run = Run(entry.root)
    history = run.history()
    if run.has_weights:
        loaded = models.get(entry.root)
        kept = loaded.kept
        about = loaded.memo(
            "architecture", lambda: architecture(kept.model, kept.image_shape, kept.cfg.model)
        )
    elif summary["image_shape"] and summary["classes"]:  # before the first epoch is kept:
        cfg = run.config()  # the architecture alone, on the meta device (no weights)
        c, h, w = summary["image_shape"]
        with torch.device("meta"):
            model = create_model(cfg.model, len(summary["classes"]), c, (h, w))
        about = architecture(model, (c, h, w), cfg.model)
    else:
        about = {"summary": None, "explain": None, "layers": [], "first_conv": None}
    return {**summary, "history": history, **about}


def architecture(model: nn.Module, shape: tuple[int, int, int], name: str) -> dict[str, Any]:
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {
        "summary": summarize(model, shape, name).to_dict(),
        "explain": explain(model, shape, name).to_dict(),
        "layers": A.spatial_layers(model),
        "first_conv": convs[0] if convs else None,
    }


def curves_png(catalog: RunCatalog, entry: RunEntry) -> bytes:
    """The training curves, drawn again only when the run's files changed."""
    from convkit.inspect.plots import plot_training_curves

    catalog.summary(entry)  # brings entry.signature up to date
    signature = entry.signature
    cached = entry.memo.get("curves")
    if cached and cached[0] == signature:
        return cached[1]
    run = Run(entry.root)
    history = run.history()
    if not history:
        raise ApiError(404, f"run {entry.root.name} has no finished epoch yet: no curves to draw")
    cfg, result = run.config(), run.result()
    kept = result.get("best_epoch") if result else _kept_epoch(entry.root)
    with tempfile.TemporaryDirectory(prefix="convkit-serve-") as tmp, DRAW_LOCK:
        path = plot_training_curves(history, Path(tmp) / "curves.png", title=_title(cfg),
                                    best_epoch=kept or 0)  # fmt: skip
        png = path.read_bytes()
    entry.memo["curves"] = (signature, png)
    return png


def _kept_epoch(root: Path) -> int | None:
    if not Run(root).has_weights:
        return None
    return checkpoint.read_metadata(root / WEIGHTS).get("epoch")


# ---- robustness (convkit robustness RUN) ---------------------------------------------------------


def robustness(entry: RunEntry) -> dict[str, Any]:
    """The run's saved robustness report for its kept weights (null when none is saved, or it
    was computed for weights the run has since replaced), and the command that computes it."""
    return {"report": _saved_report(entry), "command": f"convkit robustness {entry.root}"}


def _saved_report(entry: RunEntry) -> dict[str, Any] | None:
    run = Run(entry.root)
    return run.robustness() if run.has_weights else None


def _none_saved(entry: RunEntry) -> ApiError:
    return ApiError(404, f"run {entry.root.name} has no robustness results for its kept "
                         f"weights; `convkit robustness {entry.root}` computes them")  # fmt: skip


def _report(entry: RunEntry, test: str) -> dict[str, Any]:
    report = _saved_report(entry)
    if report is None:
        raise _none_saved(entry)
    if test not in report:
        raise ApiError(404, f"run {entry.root.name}'s robustness results have no {test} test; "
                            f"`convkit robustness {entry.root}` computes it")  # fmt: skip
    return report


def _report_picture(entry: RunEntry, report: dict[str, Any], name: str, draw_png) -> bytes:
    """A picture of a report, drawn again only when the report changes (new weights, a new
    `convkit robustness`)."""
    key = (report.get("weights"), report.get("created_at"))
    cached = entry.memo.get(name)
    if cached and cached[0] == key:
        return cached[1]
    png = draw_png()
    entry.memo[name] = (key, png)
    return png


def shift_png(entry: RunEntry) -> bytes:
    """The shift test's grid: test accuracy for every (dx, dy)."""
    report = _report(entry, "shift")
    title = f"{_title(Run(entry.root).config())}: test images moved"
    return _report_picture(entry, report, "shift.png",
                           lambda: _figure_png(draw.shift_heatmap_figure, report, title))  # fmt: skip


def robustness_png(entries: list[RunEntry]) -> bytes:
    """Accuracy against shift distance, rotation, scale (and corruption error) of one or more
    runs, one line each; runs without results are left out (404 when none has any)."""
    reports = []
    for entry in entries:
        try:
            report = _saved_report(entry)
        except ConvkitError:
            if len(entries) == 1:
                raise
            report = None  # a damaged report: its run's own routes say so
        if report is not None:
            cfg = Run(entry.root).config()
            reports.append((f"{cfg.model} ({entry.root.name})", report))
    if not reports and len(entries) == 1:
        raise _none_saved(entries[0])
    if not reports:
        names = ", ".join(e.root.name for e in entries)
        raise ApiError(404, f"no robustness results for {names}; `convkit robustness RUN` "
                            "computes them")  # fmt: skip
    if len(entries) == 1:
        title = f"{_title(Run(entries[0].root).config())}: robustness"
        return _report_picture(entries[0], reports[0][1], "robustness.png",
                               lambda: _figure_png(draw.robustness_curves_figure, reports, title))  # fmt: skip
    return _figure_png(draw.robustness_curves_figure, reports, "")


# ---- what the model learned ---------------------------------------------------------------------


def confusion_png(loaded: LoadedModel, tests: TestSets) -> bytes:
    """The confusion matrix on the whole test set, computed once for these weights."""

    kept = loaded.kept

    def compute() -> A.Confusion:
        split = tests.get(kept.cfg)
        images = kept.preprocess(split.images)
        proba = A.predict_proba(kept.classifier, images, autocast=kept.cpu_autocast)
        return A.confusion(split.labels.numpy(), proba.argmax(1), kept.classes)

    conf = loaded.memo("confusion", compute)
    title = f"{_title(kept.cfg)}, {int(conf.matrix.sum()):,} test images"
    return _picture(
        loaded, "confusion.png", lambda: _figure_png(draw.confusion_figure, conf, title)
    )


def filters_png(loaded: LoadedModel) -> bytes:
    kept = loaded.kept

    def compute() -> bytes:
        try:
            info = A.first_layer_weights(kept.model, kept.image_shape)
        except ConfigError as exc:
            raise ApiError(404, str(exc)) from None
        what = "First-layer filters" if info["kind"] == "conv" else "First dense layer as templates"
        return _figure_png(draw.filters_figure, info, f"{what}, {_title(kept.cfg)}")

    return _picture(loaded, "filters.png", compute)  # the weights alone: no forward pass


def patches_png(loaded: LoadedModel, tests: TestSets, layer: str | None, k: int | None) -> bytes:
    """Filter k's top test patches in `layer` (default: the last convolution) as one mosaic at
    the images' own scale; without k, every filter's (up to 64), captioned, as the report has."""
    kept = loaded.kept
    layers = A.spatial_layers(kept.model)
    convs = [n for n, m in kept.model.named_modules() if isinstance(m, nn.Conv2d)]
    layer = layer or (convs[-1] if convs else None)
    if layer not in layers:
        choose = ", ".join(layers) or "none: this model has no convolution or pooling layer"
        raise ApiError(
            400, f"layer={layer!r} is not a convolution or pooling layer; layers: {choose}"
        )
    found, images = loaded.memo(("patches", layer), lambda: _top_patches(loaded, tests, layer))
    filters = found["filters"]
    if k is not None and not 0 <= k < len(filters):
        raise ApiError(
            400, f"filter={k} is outside layer {layer}'s filters (0..{len(filters) - 1})"
        )

    def tiles(hits_per_filter: list[list[dict[str, Any]]]) -> list[list[np.ndarray]]:
        return [
            [A.crop(images[h["image"]].numpy(), h["box"]) for h in hits] for hits in hits_per_filter
        ]

    if k is not None:
        return draw.png_bytes(draw.patches_mosaic(tiles([filters[k]])[0]))
    rf = "x".join(map(str, found["receptive_field"]))
    title = f"What each filter of {layer} responds to ({rf}-pixel field)"
    return _picture(
        loaded,
        ("patches.png", layer),
        lambda: _figure_png(draw.patches_figure, tiles(filters), title),
    )


def _top_patches(loaded: LoadedModel, tests: TestSets, layer: str) -> tuple[dict[str, Any], Any]:
    kept = loaded.kept
    images = tests.get(kept.cfg).images
    try:
        return A.top_patches(kept.model, kept.preprocess(images), layer, per_filter=9), images
    except ConfigError as exc:  # a layer after flattening has no positions
        raise ApiError(400, str(exc)) from None


# ---- test images and predictions ----------------------------------------------------------------


def test_image(loaded: LoadedModel, tests: TestSets, index: int | None) -> dict[str, Any]:
    """A test image as stored (random when no index), with its label."""
    split = tests.get(loaded.kept.cfg)
    if index is None:
        index = random.randrange(len(split))
    if not 0 <= index < len(split):
        raise ApiError(400, f"index={index} is outside the test set (0..{len(split) - 1})")
    label = loaded.kept.classes[int(split.labels[index])]
    return {
        "index": index,
        "label": label,
        "png": data_url(draw.png_bytes(draw.hwc(split.images[index].numpy()))),
    }


def test_item(loaded: LoadedModel, tests: TestSets, index: int) -> dict[str, Any]:
    """A test image as a prediction's input, as `convkit inspect --index` takes it."""
    split = tests.get(loaded.kept.cfg)
    if not 0 <= index < len(split):
        raise ApiError(400, f"test_index={index} is outside the test set (0..{len(split) - 1})")
    label = loaded.kept.classes[int(split.labels[index])]
    return {
        "converted": split.images[index].numpy(),
        "conversion": f"test image #{index} ({label}), as stored",
        "label": label,
    }


def predict(
    loaded: LoadedModel, item: dict[str, Any], explained: bool, move: Move | None = None
) -> dict[str, Any]:
    """The top classes for one converted image (C, H, W) uint8, first moved and turned by
    `move`; with `explained`, Grad-CAM for the top class and every convolution and pooling
    layer's maps."""
    if move is not None and not move.still:
        return {**predict(loaded, move.apply(item), explained), "move": move.to_dict()}
    kept, image = loaded.kept, item["converted"]
    x = kept.preprocess(torch.from_numpy(np.ascontiguousarray(image))[None])
    with loaded.lock:  # the model's work; the pictures are made after, without the lock
        proba = A.predict_proba(kept.classifier, x, autocast=kept.cpu_autocast)[0]
        order = np.argsort(-proba, kind="stable")[:TOP_K]
        if explained:
            has_conv = any(isinstance(m, nn.Conv2d) for m in kept.model.modules())
            cam = A.grad_cam(kept.model, x, int(order[0]))["map"] if has_conv else None
            layers = A.feature_maps(kept.model, x)
    answer = {
        "top": [{"class": kept.classes[i], "probability": float(proba[i])} for i in order],
        "input_png": data_url(draw.png_bytes(draw.hwc(image))),
        "conversion": item["conversion"],
    }
    if "label" in item:
        answer["label"] = item["label"]
    if explained:
        overlay = None if cam is None else draw.heatmap_overlay(image, cam)
        answer["gradcam_png"] = None if overlay is None else data_url(draw.png_bytes(overlay))
        answer["features"] = [feature_png(la["layer"], la["maps"]) for la in layers]
    return answer


def feature_png(layer: str, maps: np.ndarray) -> dict[str, Any]:
    """A layer's maps (C, h, w) as one grid picture (the first 64 channels; maps larger than
    MAP_SIDE subsampled to it), with the layer's name and full shape."""
    step = max(1, math.ceil(max(maps.shape[1:]) / MAP_SIDE))
    grid = draw.maps_grid(maps[:, ::step, ::step])
    return {"layer": layer, "shape": list(maps.shape), "png": data_url(draw.png_bytes(grid))}


# ---- moving and turning the input (the page's compare mode) -------------------------------------


@dataclass(frozen=True)
class Move:
    """What the page did to its image after the conversion: turned `angle` degrees
    counterclockwise about the centre (bilinear), then moved `dx` whole pixels right and `dy`
    down (negative: left, up); pixels that come in from outside are 0, as in `convkit
    robustness`. The turn comes first, so the shift stays exact."""

    dx: int = 0
    dy: int = 0
    angle: float = 0.0

    @property
    def still(self) -> bool:
        return self.dx == 0 and self.dy == 0 and self.angle == 0

    def check(self, image_shape: tuple[int, int, int] | list[int]) -> None:
        """A shift must leave part of the image in the frame: |dx| < W, |dy| < H."""
        _, h, w = image_shape
        for name, value, side, size in (("dx", self.dx, "wide", w), ("dy", self.dy, "high", h)):
            if not -size < value < size:
                raise ApiError(400, f"expected {-(size - 1)} <= {name} <= {size - 1} for "
                                    f"{size}-pixel-{side} images (a shift of {size} pixels "
                                    f"leaves nothing in the frame), received {name}={value}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"dx": self.dx, "dy": self.dy, "angle": self.angle}

    def describe(self) -> str:
        """'turned 15° counterclockwise, moved 2 px right and 1 px up'."""
        parts = []
        if self.angle:
            way = "counterclockwise" if self.angle > 0 else "clockwise"
            parts.append(f"turned {abs(self.angle):g}° {way}")
        moves = [f"{abs(self.dx)} px {'right' if self.dx > 0 else 'left'}"] if self.dx else []
        moves += [f"{abs(self.dy)} px {'down' if self.dy > 0 else 'up'}"] if self.dy else []
        if moves:
            parts.append("moved " + " and ".join(moves))
        return ", then ".join(parts)

    def apply(self, item: dict[str, Any]) -> dict[str, Any]:
        """A prediction's input (views.test_item, uploads.convert_upload) moved and turned."""
        if self.still:
            return item
        self.check(item["converted"].shape)
        x = torch.from_numpy(np.ascontiguousarray(item["converted"]))[None]  # (1, C, H, W) uint8
        if self.angle:
            x = geometry.rotate(x, self.angle)
        x = geometry.translate(x, self.dx, self.dy)
        return {**item, "converted": x[0].numpy(),
                "conversion": f"{item['conversion']}; then {self.describe()}"}  # fmt: skip


def compare(runs: list[tuple[str, LoadedModel, dict[str, Any]]], move: Move) -> dict[str, Any]:
    """Every run's answer to its input (the same image, converted once per kind of run), moved
    and turned alike: {"move", "input_png", "conversion", "answers": [{"run", "top", ...}]}."""
    moved: dict[int, dict[str, Any]] = {}  # one move per distinct converted input
    answers = []
    for run_id, loaded, item in runs:
        if id(item) not in moved:
            moved[id(item)] = move.apply(item)
        answers.append({"run": run_id, **predict(loaded, moved[id(item)], explained=False)})
    first = answers[0]
    return {"move": move.to_dict(), "input_png": first["input_png"],
            "conversion": first["conversion"], "answers": answers}  # fmt: skip
