"""`convkit inspect RUN`: a report folder with an index.html that shows every picture with a
caption saying how to read it, and report.json with the numbers behind them.

Each section is computed by inspect/analyses.py and drawn by inspect/draw.py; this module only
chooses inputs, names files and writes the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convkit.errors import ConfigError
from convkit.fileio import write_json, write_text
from convkit.inspect import analyses as A
from convkit.inspect import draw
from convkit.inspect.run import LoadedRun, load_image

SECTIONS = ("curves", "confusion", "mistakes", "filters", "features", "patches", "attention")


def _test_tensors(lr: LoadedRun, limit: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    split = lr.test_split()
    images = split.images[:limit] if limit else split.images
    return images, split.labels[: len(images)].numpy()


def section_curves(lr: LoadedRun, out: Path, **_: Any) -> dict[str, Any]:
    from convkit.inspect.plots import plot_training_curves

    if not lr.history:
        return {"note": "this run has no per-epoch metrics (metrics.jsonl is empty)"}
    best = lr.epoch or 0
    plot_training_curves(lr.history, out / "curves.png", title=_title(lr), best_epoch=best)
    return {
        "images": ["curves.png"],
        "caption": "Loss (left) and accuracy (right) per epoch, on the training images (with "
        "dropout on) and on the held-out validation images. The dashed line marks the epoch "
        "whose weights were kept. Validation loss rising while training loss falls means the "
        "model is starting to memorise the training set.",
        "data": {"history": lr.history, "kept_epoch": best},
    }


def section_confusion(lr: LoadedRun, out: Path, state: dict, **_: Any) -> dict[str, Any]:
    images, labels = _test_tensors(lr, state.get("limit"))
    proba = A.predict_proba(lr.model, lr.preprocess(images), autocast=lr.autocast)
    state["proba"], state["labels"], state["images"] = proba, labels, images
    conf = A.confusion(labels, proba.argmax(1), lr.classes)
    draw.confusion_figure(conf, out / "confusion.png", f"{_title(lr)}, {len(labels):,} test images")
    pairs = "; ".join(
        f"{p['true']} taken for {p['predicted']} "
        f"{'once' if p['count'] == 1 else str(p['count']) + ' times'}"
        for p in conf.most_confused[:3]
    )
    return {
        "images": ["confusion.png"],
        "caption": "Each row is a true class, each column the class the model chose; the "
        "diagonal holds the right answers. Bright cells off the diagonal are the classes the "
        f"model mixes up. Accuracy on these {len(labels):,} test images: {conf.accuracy:.2%}. "
        f"Most confused: {pairs or 'none'}. "
        "Right: precision (of the images predicted as a class, the share that truly are) and "
        "recall (of a class's images, the share found).",
        "data": conf.to_dict(),
    }


def section_mistakes(lr: LoadedRun, out: Path, state: dict, **_: Any) -> dict[str, Any]:
    if "proba" not in state:
        section_confusion(lr, out, state)
    wrong = A.worst_mistakes(state["proba"], state["labels"], 32)
    if not wrong:
        return {"note": "the model got every test image right"}
    pics = state["images"][[w["index"] for w in wrong]].numpy()
    caps = [
        f"#{w['index']} true: {lr.classes[w['true']]}\n"
        f"said: {lr.classes[w['predicted']]} {w['probability']:.0%}"
        for w in wrong
    ]
    draw.gallery_figure(pics, caps, out / "mistakes.png", "Wrong, and sure of it")
    return {
        "images": ["mistakes.png"],
        "caption": "The test images the model got wrong with the highest confidence, most "
        "confident first: test-set index, true class, and the class it said with its "
        "probability. Some are the model's blind spots; some are badly labelled or ambiguous.",
        "data": wrong,
    }


def section_filters(lr: LoadedRun, out: Path, **_: Any) -> dict[str, Any]:
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
    draw.filters_figure(info, out / "filters.png", title)
    return {
        "images": ["filters.png"],
        "caption": caption,
        "data": {
            "layer": info["layer"],
            "kind": info["kind"],
            "shape": list(info["weights"].shape),
        },
    }


def _inputs(lr: LoadedRun, state: dict) -> list[dict[str, Any]]:
    """The images to look at: the user's files, test-set indices, or test image 0."""
    if "inputs" in state:
        return state["inputs"]
    digits = lr.cfg.dataset == "mnist"
    inputs = [load_image(p, lr.image_shape, digit_frame=digits) for p in state["image_files"]]
    images, labels = _test_tensors(lr)
    indices = state.get("indices") or ([] if inputs else [0])
    for i in indices:
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
    state["inputs"] = inputs
    return inputs


def section_features(lr: LoadedRun, out: Path, state: dict, **_: Any) -> dict[str, Any]:
    if not A.spatial_layers(lr.model):
        return {"note": "this model has no convolution or pooling layers, so no feature maps"}
    files, data = [], []
    for k, item in enumerate(_inputs(lr, state)):
        x = lr.preprocess(torch.from_numpy(item["converted"])[None])
        layers = A.feature_maps(lr.model, x)
        name = f"features-{k}.png"
        draw.feature_maps_figure(
            layers, item["converted"], out / name, f"Feature maps of {item['path']}"
        )
        files.append(name)
        data.append({"input": item["path"], "layers": [[la["layer"], list(la["maps"].shape)]
                                                       for la in layers]})  # fmt: skip
    return {
        "images": files,
        "caption": "The input, then every channel of every convolution and pooling layer, "
        "top to bottom in the order they run; each small picture is one filter's response "
        "map (bright = strong, each on its own scale). Early maps still look like the image "
        "(edges, colours); pooling halves them; later ones are smaller and more abstract.",
        "data": data,
    }


def section_patches(lr: LoadedRun, out: Path, state: dict, **_: Any) -> dict[str, Any]:
    convs = [n for n, m in lr.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        return {"note": "this model has no convolution layers; its first-layer templates "
                "(above) show what each unit responds to"}  # fmt: skip
    layer = state.get("layer") or convs[-1]
    images, _ = _test_tensors(lr, state.get("limit"))
    found = A.top_patches(lr.model, lr.preprocess(images), layer, per_filter=9)
    tiles = [
        [A.crop(images[h["image"]].numpy(), h["box"]) for h in hits] for hits in found["filters"]
    ]
    rf = "x".join(map(str, found["receptive_field"]))
    draw.patches_figure(
        tiles, out / "patches.png", f"What each filter of {layer} responds to ({rf}-pixel field)"
    )
    return {
        "images": ["patches.png"],
        "caption": f"For each filter of layer {layer}: the 9 test-set patches that excite it "
        f"most (one per image, strongest top-left), cropped to the {rf} pixels the filter "
        "can see at that position (its receptive field; crops at the border are smaller). "
        "What the 9 patches share is what the filter identifies. Choose another layer with "
        "--layer.",
        "data": found,
    }


def section_attention(lr: LoadedRun, out: Path, state: dict, **_: Any) -> dict[str, Any]:
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in lr.model.modules())
    target = state.get("target")  # checked against the classes by write_report
    rows, data = [], []
    for item in _inputs(lr, state):
        x = lr.preprocess(torch.from_numpy(item["converted"])[None])
        proba = A.predict_proba(lr.model, x, autocast=lr.autocast)[0]
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
    draw.attention_figure(rows, out / "attention.png", f"Where {_title(lr)} looks")
    return {
        "images": ["attention.png"],
        "caption": "For each image: the file as given and how it was converted for the model "
        "(grey or RGB, resized, inverted if light-on-dark is expected), the model's input "
        "with its top 3 classes, then two heat maps for the class named above them (red = "
        "most important). Grad-CAM weights the last convolution layer's maps by how much "
        "they raise that class's score: coarse regions. Saliency is how much each input "
        "pixel changes the score: fine, noisier detail.",
        "data": data,
    }


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "curves": section_curves,
    "confusion": section_confusion,
    "mistakes": section_mistakes,
    "filters": section_filters,
    "features": section_features,
    "patches": section_patches,
    "attention": section_attention,
}
TITLES = {
    "curves": "Training curves",
    "confusion": "Confusion matrix",
    "mistakes": "Mistakes",
    "filters": "Filters",
    "features": "Feature maps",
    "patches": "What each filter responds to",
    "attention": "Where the model looks",
}


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
    out = Path(out)
    state: dict[str, Any] = {"image_files": image_files or [], "indices": indices or [],
                             "layer": layer, "target": target, "limit": limit}  # fmt: skip
    unknown = [s for s in sections if s not in BUILDERS]
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    if target is not None and target not in lr.classes:
        raise ConfigError(f"--class {target!r} is not one of {', '.join(lr.classes)}")
    if layer is not None and layer not in A.spatial_layers(lr.model):
        raise ConfigError(
            f"--layer {layer!r} is not a convolution or pooling layer of {lr.cfg.model}; "
            f"choose from: {', '.join(A.spatial_layers(lr.model)) or 'none'}"
        )
    if image_files or indices:  # bad inputs fail before anything is written
        _inputs(lr, state)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in sections:
        log(f"  {TITLES[name]}...")
        results[name] = BUILDERS[name](lr, out, state=state)
    write_json(out / "report.json", _jsonable({"run": str(lr.run.root), "sections": results}))
    page = out / "index.html"
    write_text(page, _html(lr, results))
    return page


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


def _html(lr: LoadedRun, results: dict[str, dict[str, Any]]) -> str:
    esc = html.escape
    acc = ""
    result_file = lr.run.result
    if result_file.exists():
        r = json.loads(result_file.read_text())
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
        "<nav>" + "".join(f'<a href="#{n}">{TITLES[n]}</a>' for n in results) + "</nav>",
    ]
    for name, res in results.items():
        parts.append(f'<h2 id="{name}">{TITLES[name]}</h2>')
        if "note" in res:
            parts.append(f"<p class=caption><em>{esc(res['note'])}</em></p>")
            continue
        parts.append(f"<p class=caption>{esc(res['caption'])}</p>")
        for img in res["images"]:
            parts.append(f'<p><img src="{esc(img)}" alt="{esc(TITLES[name])}"></p>')
    parts.append("<p>The numbers behind every picture: <a href=\"report.json\">report.json</a>"
                 "</p></body></html>")  # fmt: skip
    return "\n".join(parts) + "\n"
