"""What a trained network learned, as arrays and tables. The drawing lives in inspect/draw.py.

Every function takes a model in eval mode and float images as the model expects them
(N, C, H, W), already converted by `LoadedRun.preprocess`, and returns plain data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convkit.errors import ConfigError
from convkit.inspect.arithmetic import LayerArithmetic, explain
from convkit.models.layers import GlobalAvgPool, MaxPool

# ---- predictions and the confusion matrix -------------------------------------------------------


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 1000,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> np.ndarray:
    """Softmax probabilities (N, classes) as fp32, the forward pass under `autocast`."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        with autocast():
            logits = model(x[i : i + batch_size])
        out.append(F.softmax(logits.float(), 1))
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class Confusion:
    classes: tuple[str, ...]
    matrix: np.ndarray  # (K, K): row = true class, column = predicted class
    precision: np.ndarray  # (K,) of each predicted class, the fraction right
    recall: np.ndarray  # (K,) of each true class, the fraction found (= per-class accuracy)
    accuracy: float
    most_confused: list[dict[str, Any]]  # off-diagonal cells, largest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "matrix": self.matrix.tolist(),
            "precision": self.precision.tolist(),
            "recall": self.recall.tolist(),
            "accuracy": self.accuracy,
            "most_confused": self.most_confused,
        }


def confusion(
    labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...], top: int = 10
) -> Confusion:
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    diag = np.diag(matrix).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(diag / matrix.sum(0))
        recall = np.nan_to_num(diag / matrix.sum(1))
    off = [(int(matrix[i, j]), i, j) for i in range(k) for j in range(k) if i != j and matrix[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    pairs = [
        {"true": classes[i], "predicted": classes[j], "count": n, "of_true": n / matrix[i].sum()}
        for n, i, j in off[:top]
    ]
    return Confusion(
        tuple(classes), matrix, precision, recall, float(diag.sum() / len(labels)), pairs
    )


def worst_mistakes(
    proba: np.ndarray, labels: np.ndarray, count: int = 32
) -> list[dict[str, float | int]]:
    """Wrong predictions, the most confident first: index, true, predicted, its probability."""
    predicted = proba.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    conf = proba[wrong, predicted[wrong]]
    order = wrong[np.argsort(-conf, kind="stable")][:count]
    return [
        {
            "index": int(i),
            "true": int(labels[i]),
            "predicted": int(predicted[i]),
            "probability": float(proba[i, predicted[i]]),
            "probability_of_true": float(proba[i, labels[i]]),
        }
        for i in order
    ]


# ---- weights ------------------------------------------------------------------------------------


def first_layer_weights(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The first learned layer's weights as pictures: conv kernels (F, C, kh, kw), or a first
    dense layer's rows reshaped to the input image (F, C, H, W): the MLP's 'templates'."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return {"layer": name, "kind": "conv", "weights": m.weight.detach().float().numpy()}
        if isinstance(m, nn.Linear):
            w = m.weight.detach().float()
            if w.shape[1] != int(np.prod(input_shape)):
                break
            return {"layer": name, "kind": "dense", "weights": w.view(-1, *input_shape).numpy()}
    raise ConfigError("the model has no convolution or input-sized dense layer to draw")


# ---- activations --------------------------------------------------------------------------------


def spatial_layers(model: nn.Module) -> list[str]:
    """Names of the convolution and pooling layers, in order: the ones with feature maps."""
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, MaxPool, GlobalAvgPool)
    return [n for n, m in model.named_modules() if n and isinstance(m, kinds)]


def activations(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for images `x`, in eval mode without gradients."""
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ConfigError(
            f"no layer named {', '.join(missing)}; layers with feature maps: "
            f"{', '.join(spatial_layers(model)) or 'none'}"
        )
    out: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach()))
        for n in layers
    ]
    model.eval()
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def feature_maps(model: nn.Module, image: torch.Tensor) -> list[dict[str, Any]]:
    """Every channel of every convolution and pooling layer for one image (1, C, H, W)."""
    names = spatial_layers(model)
    acts = activations(model, image, names)
    return [
        {"layer": n, "maps": acts[n][0].float().numpy()}
        for n in names
        if n in acts and acts[n].ndim == 4
    ]


# ---- what each filter responds to ---------------------------------------------------------------


def layer_arithmetic(
    model: nn.Module, input_shape: tuple[int, int, int], layer: str
) -> LayerArithmetic:
    """The conv arithmetic row of `layer` (its receptive field, jump and start)."""
    rows = {r.name: r for r in explain(model, input_shape).layers}
    if layer in rows:
        return rows[layer]
    raise ConfigError(f"no layer named {layer!r}; layers: {', '.join(spatial_layers(model))}")


def receptive_box(row: LayerArithmetic, i: int, j: int, size: tuple[int, int]) -> tuple[int, ...]:
    """(top, bottom, left, right), bottom/right exclusive, of the input pixels that output
    (i, j) of a layer sees, clipped to an image of `size` (padding lies outside it)."""
    (rh, rw), (jh, jw), (sh, sw) = row.receptive_field, row.jump, row.start
    top, left = sh + i * jh, sw + j * jw
    return (max(top, 0), min(top + rh, size[0]), max(left, 0), min(left + rw, size[1]))


def top_patches(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    per_filter: int = 9,
    batch_size: int = 500,
) -> dict[str, Any]:
    """For each filter (channel) of `layer`: the `per_filter` strongest activations over all
    images and positions, each with its image index, position, value and the receptive-field
    box in the input, the part of the image that produced it (at most one per image)."""
    shape = tuple(images.shape[1:])
    row = layer_arithmetic(model, shape, layer)
    if row.jump is None:
        raise ConfigError(f"layer {layer!r} has no spatial positions (it comes after flattening)")
    best_val = best_img = best_pos = None
    for start in range(0, len(images), batch_size):
        act = activations(model, images[start : start + batch_size], [layer])[layer].float()
        n, c, h, w = act.shape
        flat = act.permute(1, 0, 2, 3).reshape(c, n, h * w)
        per_image, pos = flat.max(2)  # (C, n): each image's strongest position per filter
        if best_val is None:
            best_val = torch.empty(c, 0)
            best_img = torch.empty(c, 0, dtype=torch.long)
            best_pos = torch.empty(c, 0, dtype=torch.long)
        idx = torch.arange(start, start + n).expand(c, n)
        vals = torch.cat([best_val, per_image], 1)
        order = vals.argsort(dim=1, descending=True, stable=True)[:, :per_filter]
        best_val = vals.gather(1, order)
        best_img = torch.cat([best_img, idx], 1).gather(1, order)
        best_pos = torch.cat([best_pos, pos], 1).gather(1, order)
    filters = []
    for f in range(best_val.shape[0]):
        hits = []
        found = zip(best_val[f].tolist(), best_img[f].tolist(), best_pos[f].tolist(), strict=True)
        for v, img, p in found:
            i, j = divmod(p, w)
            hits.append(
                {
                    "image": img,
                    "position": (i, j),
                    "activation": v,
                    "box": receptive_box(row, i, j, shape[1:]),
                }
            )
        filters.append(hits)
    return {
        "layer": layer,
        "receptive_field": row.receptive_field,
        "jump": row.jump,
        "filters": filters,
    }


def crop(image: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    top, bottom, left, right = box
    return image[..., top:bottom, left:right]


# ---- where the model looks ----------------------------------------------------------------------


def last_conv_layer(model: nn.Module) -> str:
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("Grad-CAM needs a convolution layer; this model has none")
    return convs[-1]


def grad_cam(
    model: nn.Module, image: torch.Tensor, target: int | None = None, layer: str | None = None
) -> dict[str, Any]:
    """Grad-CAM (Selvaraju et al. 2017) for one image (1, C, H, W): the layer's channels
    weighted by the mean gradient of the class score, ReLU, upsampled to the image, in [0, 1]."""
    layer = layer or last_conv_layer(model)
    module = dict(model.named_modules())[layer]
    store: dict[str, torch.Tensor] = {}

    def keep(m: nn.Module, i: Any, o: torch.Tensor) -> None:
        o.retain_grad()
        store["act"] = o

    handle = module.register_forward_hook(keep)
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(image.detach().clone().requires_grad_())
            cls = int(logits.argmax(1)) if target is None else target
            logits[0, cls].backward()
    finally:
        handle.remove()
    act, grad = store["act"], store["act"].grad
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.detach()
    peak = cam.max()
    cam = cam / peak if peak > 0 else cam
    return {"layer": layer, "class": cls, "map": cam.numpy(), "coarse": act.shape[2:]}


def saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> dict[str, Any]:
    """Input-gradient saliency (Simonyan et al. 2014): |d score / d pixel|, max over channels."""
    model.eval()
    x = image.detach().clone().requires_grad_()
    with torch.enable_grad():
        logits = model(x)
        cls = int(logits.argmax(1)) if target is None else target
        logits[0, cls].backward()
    sal = x.grad[0].abs().amax(0)
    peak = sal.max()
    return {"class": cls, "map": (sal / peak if peak > 0 else sal).numpy()}
