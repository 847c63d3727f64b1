"""`convkit inspect RUN`: a report folder with an index.html that shows every picture with a
caption saying how to read it, and report.json with the numbers behind them.

Each section is computed by inspect/analyses.py and drawn by inspect/draw.py; this module only
chooses inputs, names files and writes the page. The report is one table, SECTION_TABLE: each
Section has a name, a title and a builder. A builder takes the ReportContext (the run, the output
folder, what was asked for, and a cache of the test-set predictions that several sections share)
and returns a SectionResult (pictures it drew, a caption, the numbers behind them) or a Note
(why the section does not apply to this run).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convkit.data.arrays import Split
from convkit.data.images import conversion_options, load_image
from convkit.errors import ConfigError
from convkit.fileio import write_json, write_text
from convkit.inspect import analyses as A
from convkit.inspect import draw
from convkit.inspect.run import LoadedRun


@dataclass(frozen=True)
class SectionResult:
    """What a section drew (file names in the report folder), how to read it, and its numbers."""

    images: list[str]
    caption: str
    data: Any

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "caption": self.caption, "data": self.data}


@dataclass(frozen=True)
class Note:
    """A section that does not apply to this run, and why; it draws nothing."""

    note: str

    def to_json(self) -> dict[str, Any]:
        return {"note": self.note}


@dataclass(frozen=True)
class TestPredictions:
    """The model's answers on the (first `limit`) test images, computed once per report."""

    __test__ = False  # not a pytest test class, despite its name

    images: torch.Tensor  # (N, C, H, W) uint8, as stored
    labels: np.ndarray  # (N,) true class indices
    proba: np.ndarray  # (N, classes) softmax probabilities


@dataclass
class ReportContext:
    """What one report was asked for, and what its sections share: the test-set predictions and
    the images to look at, each computed on first use only."""

    lr: LoadedRun
    out: Path
    image_files: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    layer: str | None = None  # for patches; None: the last convolution
    target: str | None = None  # class for the attention maps; None: the predicted one
    limit: int | None = None  # test images used by confusion, mistakes and patches
    compute_robustness: bool = False  # the robustness section was named: compute shifts if unsaved
    _predictions: TestPredictions | None = field(default=None, init=False, repr=False)
    _inputs: list[dict[str, Any]] | None = field(default=None, init=False, repr=False)

    def test_images(self) -> tuple[torch.Tensor, np.ndarray]:
        """The first `limit` test images (all when None) and their labels."""
        split = self.lr.test_split()  # loaded once, by the LoadedRun
        images = split.images[: self.limit] if self.limit else split.images
        return images, split.labels[: len(images)].numpy()

    def predictions(self) -> TestPredictions:
        if self._predictions is None:
            images, labels = self.test_images()
            lr = self.lr
            proba = A.predict_proba(lr.classifier, lr.preprocess(images), autocast=lr.autocast)
            self._predictions = TestPredictions(images, labels, proba)
        return self._predictions

    def inputs(self) -> list[dict[str, Any]]:
        """The images to look at: the user's files, test-set indices, or test image 0."""
        if self._inputs is None:
            self._inputs = _load_inputs(self.lr, self.image_files, self.indices)
        return self._inputs


def _load_inputs(lr: LoadedRun, image_files: list[str], indices: list[int]) -> list[dict[str, Any]]:
    options = conversion_options(lr.cfg.dataset, lr.image_shape, lr.cfg.fit)  # as `predict`
    inputs = [load_image(p, lr.image_shape, **options) for p in image_files]
    split = lr.test_split()
    images, labels = split.images, split.labels.numpy()
    for i in indices or ([] if inputs else [0]):
        if not 0 <= i < len(images):
            raise ConfigError(f"--index {i} is outside the test set (0..{len(images) - 1})")
        arr = images[i].numpy()
        inputs.append(
            {
                "path": f"test image #{i} ({lr.classes[labels[i]]})",
                "original": arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0),
                "converted": arr,
                "conversion": "from the test set, as stored",
            }
        )
    return inputs


def section_curves(ctx: ReportContext) -> SectionResult | Note:
    from convkit.inspect.plots import plot_training_curves

    lr = ctx.lr
    if not lr.history:
        return Note("this run has no per-epoch metrics (metrics.jsonl is empty)")
    best = lr.epoch or 0
    plot_training_curves(lr.history, ctx.out / "curves.png", title=_title(lr), best_epoch=best)
    return SectionResult(
        images=["curves.png"],
        caption="Loss (left) and accuracy (right) per epoch, on the training images (with "
        "dropout on) and on the held-out validation images. The dashed line marks the epoch "
        "whose weights were kept. Validation loss rising while training loss falls means the "
        "model is starting to memorise the training set.",
        data={"history": lr.history, "kept_epoch": best},
    )


def section_confusion(ctx: ReportContext) -> SectionResult | Note:
    lr, pred = ctx.lr, ctx.predictions()
    labels = pred.labels
    conf = A.confusion(labels, pred.proba.argmax(1), lr.classes)
    title = f"{_title(lr)}, {len(labels):,} test images"
    draw.confusion_figure(conf, ctx.out / "confusion.png", title)
    pairs = "; ".join(
        f"{p['true']} taken for {p['predicted']} "
        f"{'once' if p['count'] == 1 else str(p['count']) + ' times'}"
        for p in conf.most_confused[:3]
    )
    return SectionResult(
        images=["confusion.png"],
        caption="Each row is a true class, each column the class the model chose; the "
        "diagonal holds the right answers. Bright cells off the diagonal are the classes the "
        f"model mixes up. Accuracy on these {len(labels):,} test images: {conf.accuracy:.2%}. "
        f"Most confused: {pairs or 'none'}. "
        "Right: precision (of the images predicted as a class, the share that truly are) and "
        "recall (of a class's images, the share found).",
        data=conf.to_dict(),
    )


def section_mistakes(ctx: ReportContext) -> SectionResult | Note:
    lr, pred = ctx.lr, ctx.predictions()
    wrong = A.worst_mistakes(pred.proba, pred.labels, 32)
    if not wrong:
        return Note("the model got every test image right")
    pics = pred.images[[w["index"] for w in wrong]].numpy()
    caps = [
        f"#{w['index']} true: {lr.classes[w['true']]}\n"
        f"said: {lr.classes[w['predicted']]} {w['probability']:.0%}"
        for w in wrong
    ]
    draw.gallery_figure(pics, caps, ctx.out / "mistakes.png", "Wrong, and sure of it")
    return SectionResult(
        images=["mistakes.png"],
        caption="The test images the model got wrong with the highest confidence, most "
        "confident first: test-set index, true class, and the class it said with its "
        "probability. Some are the model's blind spots; some are badly labelled or ambiguous.",
        data=wrong,
    )


def section_filters(ctx: ReportContext) -> SectionResult | Note:
    lr = ctx.lr
    info = A.first_layer_weights(lr.model, lr.image_shape)
    n = len(info["weights"])
    if info["kind"] == "conv":
        f, c, kh, kw = info["weights"].shape
        how = (
            "in colour: each pixel's red, green and blue weights, mid-grey meaning zero, "
            "brighter positive"
            if c == 3
            else "red positive, blue negative, white zero, on one scale for all"
        )
        caption = (
            f"The {f} kernels of the first convolution ({info['layer']}, {kh}x{kw} over {c} "
            f"channel{'s' if c > 1 else ''}), drawn {how}. A kernel responds most to the patch "
            "that looks like it: a light-dark split is an edge detector, a uniform colour a "
            "colour detector."
        )
        title = f"First-layer filters, {_title(lr)}"
    else:
        caption = (
            f"The weights into the first {min(n, 64)} of {n} units of the first dense layer "
            f"({info['layer']}), each reshaped to the {lr.image_shape[1]}x{lr.image_shape[2]} "
            "input: red pixels push the unit up, blue pixels push it down, white ones do not "
            "matter. Each unit is a template matched against the whole image at once, which "
            "is why an MLP cannot reuse what it learned at one place at another. Speckle "
            "that follows no stroke is pixels that are black in (almost) every training "
            "image: they give no gradient, so their weights keep their random start."
        )
        title = f"First dense layer as input-sized templates, {_title(lr)}"
    draw.filters_figure(info, ctx.out / "filters.png", title)
    return SectionResult(
        images=["filters.png"],
        caption=caption,
        data={
            "layer": info["layer"],
            "kind": info["kind"],
            "shape": list(info["weights"].shape),
        },
    )


def section_features(ctx: ReportContext) -> SectionResult | Note:
    lr = ctx.lr
    if not A.spatial_layers(lr.model):
        return Note("this model has no convolution or pooling layers, so no feature maps")
    files, data = [], []
    for k, item in enumerate(ctx.inputs()):
        x = lr.preprocess(torch.from_numpy(item["converted"])[None])
        layers = A.feature_maps(lr.model, x)
        name = f"features-{k}.png"
        draw.feature_maps_figure(
            layers, item["converted"], ctx.out / name, f"Feature maps of {item['path']}"
        )
        files.append(name)
        data.append({"input": item["path"], "layers": [[la["layer"], list(la["maps"].shape)]
                                                       for la in layers]})  # fmt: skip
    return SectionResult(
        images=files,
        caption="The input, then every channel of every convolution and pooling layer, "
        "top to bottom in the order they run; each small picture is one filter's response "
        "map (bright = strong, each on its own scale). Early maps still look like the image "
        "(edges, colours); pooling halves them; later ones are smaller and more abstract.",
        data=data,
    )


def section_patches(ctx: ReportContext) -> SectionResult | Note:
    lr = ctx.lr
    convs = [n for n, m in lr.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        return Note("this model has no convolution layers; its first-layer templates "
                    "(above) show what each unit responds to")  # fmt: skip
    layer = ctx.layer or convs[-1]
    images, _ = ctx.test_images()  # pixels only: no need for the predictions
    found = A.top_patches(lr.model, lr.preprocess(images), layer, per_filter=9)
    tiles = [
        [A.crop(images[h["image"]].numpy(), h["box"]) for h in hits] for hits in found["filters"]
    ]
    rf = "x".join(map(str, found["receptive_field"]))
    draw.patches_figure(
        tiles,
        ctx.out / "patches.png",
        f"What each filter of {layer} responds to ({rf}-pixel field)",
    )
    return SectionResult(
        images=["patches.png"],
        caption=f"For each filter of layer {layer}: the 9 test-set patches that excite it "
        f"most (one per image, strongest top-left), cropped to the {rf} pixels the filter "
        "can see at that position (its receptive field; crops at the border are smaller). "
        "What the 9 patches share is what the filter identifies. Choose another layer with "
        "--layer.",
        data=found,
    )


def section_attention(ctx: ReportContext) -> SectionResult | Note:
    lr, target = ctx.lr, ctx.target  # target checked against the classes by write_report
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in lr.model.modules())
    rows, data = [], []
    for item in ctx.inputs():
        x = lr.preprocess(torch.from_numpy(item["converted"])[None])
        proba = A.predict_proba(lr.classifier, x, autocast=lr.autocast)[0]
        top = np.argsort(-proba)[:3]
        cls = lr.classes.index(target) if target is not None else int(top[0])
        sal = A.saliency(lr.model, x, cls)
        cam = A.grad_cam(lr.model, x, cls) if has_conv else None
        predicted = ", ".join(f"{lr.classes[i]} {proba[i]:.0%}" for i in top)
        rows.append(
            {
                "label": Path(item["path"]).name if "/" in item["path"] else item["path"],
                "original": item["original"],
                "converted": item["converted"],
                "conversion": item["conversion"],
                "predicted": predicted,
                "target": lr.classes[cls],
                "gradcam": None if cam is None else cam["map"],
                "gradcam_note": "needs a convolution layer",
                "saliency": sal["map"],
            }
        )
        data.append({"input": item["path"], "conversion": item["conversion"],
                     "top3": [[lr.classes[i], float(proba[i])] for i in top],
                     "target": lr.classes[cls],
                     "gradcam_layer": cam["layer"] if cam else None})  # fmt: skip
    draw.attention_figure(rows, ctx.out / "attention.png", f"Where {_title(lr)} looks")
    return SectionResult(
        images=["attention.png"],
        caption="For each image: the file as given and how it was converted for the model "
        "(grey or RGB, resized, inverted if light-on-dark is expected), the model's input "
        "with its top 3 classes, then two heat maps for the class named above them (red = "
        "most important). Grad-CAM weights the last convolution layer's maps by how much "
        "they raise that class's score: coarse regions. Saliency is how much each input "
        "pixel changes the score: fine, noisier detail.",
        data=data,
    )


def section_robustness(ctx: ReportContext) -> SectionResult | Note:
    from convkit.inspect import robustness as R

    lr = ctx.lr
    report = lr.run.robustness()
    if report is None and not ctx.compute_robustness:
        return Note(
            f"no robustness results saved for these weights: run `convkit robustness "
            f"{lr.run.root}` (shifts, rotations, scales, corruptions), or name this section "
            f"(`convkit inspect {lr.run.root} robustness`) to compute the shifts now"
        )
    if report is None:
        images, labels = ctx.test_images()
        test = Split(images, torch.from_numpy(labels))
        report = R.robustness(lr.kept, test, run=str(lr.run.root), tests=("shift",))
    images = []
    if "shift" in report:
        draw.shift_heatmap_figure(report, ctx.out / "robustness_shift.png", _title(lr))
        images.append("robustness_shift.png")
    if any(k in report for k in ("shift", "rotate", "scale", "corruptions")):
        draw.robustness_curves_figure([(_title(lr), report)], ctx.out / "robustness_curves.png")
        images.append("robustness_curves.png")
    lines = "; ".join(f"{what.strip()}: {figure}" for what, figure in R.summary_rows(report)[:8])
    return SectionResult(
        images=images,
        caption="The kept model on moved, turned, resized and corrupted copies of its test set "
        f"({_copies_of(report)}, seed {report['seed']}). The heat map gives the "
        "accuracy for every shift (dx, dy); its centre is the images unmoved. A model that "
        "flattens the image early (an MLP, or a CNN with a dense head) falls off quickly away "
        f"from the centre. {lines}.",
        data=report,
    )


def _copies_of(report: dict[str, Any]) -> str:
    n, sample = report["test_images"], report.get("sample") or {}
    if sample.get("images", n) < n:
        return f"copies of {sample['images']:,} of its {n:,} images, drawn at random"
    return f"{n:,} images"


@dataclass(frozen=True)
class Section:
    """One part of the report: its name on the command line, its heading, and its builder."""

    name: str
    title: str
    build: Callable[[ReportContext], SectionResult | Note]


# The report, in page order.
SECTION_TABLE: tuple[Section, ...] = (
    Section("curves", "Training curves", section_curves),
    Section("confusion", "Confusion matrix", section_confusion),
    Section("mistakes", "Mistakes", section_mistakes),
    Section("filters", "Filters", section_filters),
    Section("features", "Feature maps", section_features),
    Section("patches", "What each filter responds to", section_patches),
    Section("attention", "Where the model looks", section_attention),
    Section("robustness", "Moved, turned and corrupted: what flattening loses", section_robustness),
)
SECTIONS = tuple(s.name for s in SECTION_TABLE)
_BY_NAME = {s.name: s for s in SECTION_TABLE}


def _title(lr: LoadedRun) -> str:
    return f"{lr.cfg.recipe or lr.cfg.model} on {lr.cfg.dataset}"


def write_report(
    lr: LoadedRun,
    out: str | Path,
    sections: tuple[str, ...] = SECTIONS,
    *,
    image_files: list[str] | None = None,
    indices: list[int] | None = None,
    layer: str | None = None,
    target: str | None = None,
    limit: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Compute and draw `sections` into folder `out`; returns the path of its index.html."""
    ctx = ReportContext(
        lr,
        Path(out),
        image_files=list(image_files or []),
        indices=list(indices or []),
        layer=layer,
        target=target,
        limit=limit,
        compute_robustness="robustness" in sections and tuple(sections) != SECTIONS,
    )
    chosen = _check_request(ctx, sections)
    ctx.out.mkdir(parents=True, exist_ok=True)
    results: list[tuple[Section, SectionResult | Note]] = []
    for section in chosen:
        log(f"  {section.title}...")
        results.append((section, section.build(ctx)))
    report = {"run": str(lr.run.root), "sections": {s.name: r.to_json() for s, r in results}}
    write_json(ctx.out / "report.json", _jsonable(report))
    page = ctx.out / "index.html"
    write_text(page, _html(lr, results))
    return page


def _check_request(ctx: ReportContext, sections: tuple[str, ...]) -> list[Section]:
    """The sections asked for, each once; a bad request fails here, before anything is
    written."""
    lr = ctx.lr
    unknown = [s for s in sections if s not in _BY_NAME]
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    if ctx.target is not None and ctx.target not in lr.classes:
        raise ConfigError(f"--class {ctx.target!r} is not one of {', '.join(lr.classes)}")
    if ctx.layer is not None and ctx.layer not in A.spatial_layers(lr.model):
        raise ConfigError(
            f"--layer {ctx.layer!r} is not a convolution or pooling layer of {lr.cfg.model}; "
            f"choose from: {', '.join(A.spatial_layers(lr.model)) or 'none'}"
        )
    if ctx.image_files or ctx.indices:  # load (and check) the inputs now
        ctx.inputs()
    return [_BY_NAME[name] for name in dict.fromkeys(sections)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _html(lr: LoadedRun, results: list[tuple[Section, SectionResult | Note]]) -> str:
    esc = html.escape
    acc = ""
    r = lr.run.result()
    if r is not None:
        acc = f" Test accuracy {r['test_accuracy']:.2%} after {r['epochs']} epochs."
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>convkit inspect: {esc(_title(lr))}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
        "padding:0 1em;color:#222}img{max-width:100%;border:1px solid #ddd}"
        "p.caption{max-width:60em;line-height:1.45}nav a{margin-right:1em}"
        "h2{border-top:1px solid #ccc;padding-top:1em}</style></head><body>",
        f"<h1>What does it identify? {esc(_title(lr))}</h1>",
        f"<p>Run folder <code>{esc(str(lr.run.root))}</code>: model <code>{esc(lr.cfg.model)}"
        f"</code>, weights of epoch {lr.epoch}.{esc(acc)}</p>",
        "<nav>" + "".join(f'<a href="#{s.name}">{s.title}</a>' for s, _ in results) + "</nav>",
    ]
    for section, res in results:
        parts.append(f'<h2 id="{section.name}">{section.title}</h2>')
        if isinstance(res, Note):
            parts.append(f"<p class=caption><em>{esc(res.note)}</em></p>")
            continue
        parts.append(f"<p class=caption>{esc(res.caption)}</p>")
        for img in res.images:
            parts.append(f'<p><img src="{esc(img)}" alt="{esc(section.title)}"></p>')
    parts.append("<p>The numbers behind every picture: <a href=\"report.json\">report.json</a>"
                 "</p></body></html>")  # fmt: skip
    return "\n".join(parts) + "\n"
