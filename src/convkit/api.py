"""The Python front door: `import convkit as ck`.

    ck.datasets(), ck.models("mnist-*"), ck.recipes()     listings, shown as tables
    mnist = ck.load_dataset("mnist")                      arrays, class names, mnist.show(16)
    ck.summary("mnist-mlp"), ck.explain("cifar10-cnn")    the lecture's table, the conv arithmetic
    run = ck.train("mnist-mlp", epochs=3, seed=1)         a Run (every setting is a keyword)
    run = ck.load("runs/mnist-mlp-20261125-101500")       the same object, from its folder
    run.evaluate(), run.predict(images), run.inspect("filters"), run.robustness(only="shift"),
    run.export("digits.onnx"), run.resume(epochs=20), run.history, run.result, run.model
    ck.compare([run, other])                              runs side by side

Each is a thin front over the functions the command line calls (one code path under both):
the same settings, checks and error messages, the same run folders, the same numbers. What
they return shows itself: an HTML table or picture in a notebook, the command line's text in a
terminal (convkit.display). This module imports nothing heavy until a function is called.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convkit.display import (
    Picture,
    Report,
    Table,
    figure_png,
    html_pictures,
    html_table,
    in_notebook,
    percent,
    pyplot,
)
from convkit.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from convkit.train.config import TrainConfig

from convkit import _API  # noqa: E402  (the front door's names, listed once)

__all__ = list(_API)


# ---- names ---------------------------------------------------------------------------------------


def unknown_name(kind: str, name: Any, known: Sequence[str], rest: str) -> ConfigError:
    """An error for a name that is not one of `known`, with the close matches first:
    "unknown model 'mnist-cnnn' (did you mean mnist-cnn?); known models: ..."."""
    close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.6)
    listed = ", ".join(close[:-1]) + " or " + close[-1] if len(close) > 1 else "".join(close)
    guess = f" (did you mean {listed}?)" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{guess}; {rest}")


def check_model(name: str) -> None:
    from convkit.models import list_models

    known = list_models()
    if name not in known:
        raise unknown_name(
            "model",
            name,
            known,
            f"known models: {', '.join(known)} (`convkit models` describes them)",
        )


def check_dataset(name: str) -> None:
    from convkit.data import list_datasets

    known = list_datasets()
    if name not in known:
        raise unknown_name("dataset", name, known, f"known datasets: {', '.join(known)}")


def check_settings(values: dict[str, Any], source: str) -> None:
    """Every key a training setting, or an error naming the close matches."""
    from convkit.train import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in values:
        if key not in names:
            error = unknown_name("setting", key, names, f"settings are: {', '.join(names)}")
            raise ConfigError(f"{source}: {error}") if source else error


def train_config(
    recipe: str | None = None,
    *,
    config: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    source: str = "command line",
) -> TrainConfig:
    """The settings a run trains with: defaults < `recipe` < `config` file (TOML or JSON) <
    `settings`, merged first and checked once (TrainConfig.layered). A name that is not a
    recipe, a setting or a model is refused with the close matches. `convkit train` and
    `ck.train` both resolve their settings here."""
    from convkit.train import RECIPES, TrainConfig
    from convkit.train.config import read_config_file

    if not recipe and not config:
        raise ConfigError("name a RECIPE (see `convkit recipes`) or give --config FILE")
    layers: list[tuple[str, dict[str, Any]]] = []
    if recipe:
        if recipe not in RECIPES:
            known = sorted(RECIPES)
            raise unknown_name(
                "recipe", recipe, known, f"recipes: {', '.join(known)} (`convkit recipes` "
                "describes them)"
            )  # fmt: skip
        layers.append((f"recipe {recipe}", RECIPES[recipe].settings_dict()))
    if config:
        layers.append((str(config), read_config_file(config)))
    layers.append((source, dict(settings or {})))
    for where, values in layers:
        check_settings(values, where)
    given = {k for _, values in layers[1:] for k in values}  # the file's and the user's
    if recipe:
        layers[0] = (layers[0][0], rescaled_recipe(layers[0][1], layers[1:], given))
    cfg = TrainConfig.layered(layers)
    check_model(cfg.model)
    if not cfg.data:
        check_dataset(cfg.dataset)
    elif recipe:
        cfg = folder_defaults(cfg, RECIPES[recipe].settings_dict(), given)
    return cfg


def rescaled_recipe(
    recipe: dict[str, Any], later: list[tuple[str, dict[str, Any]]], given: set[str]
) -> dict[str, Any]:
    """The recipe's settings fitted to what the user changed (`later`, whose keys are `given`),
    for the parts the user did not set:
    - another length (`--epochs N`) keeps the share of the epoch-counted parts (epoch_parts):
      cifar10-fast's 3 low-resolution and 3 whitening-bias epochs of 8 become 1 and 1.125 of
      3, and resnet20-fast's 2 warm-up epochs of 40 become 1 of 20;
    - `--low-res 0` or `--low-res-epochs 0` alone turns the low-resolution start off;
    - another optimizer, model or schedule drops the whitening-bias epochs, which need Muon,
      a per-step schedule and cifar10-fast's whitening layer."""
    from convkit.train.config import epoch_parts

    def user(key: str) -> Any:
        return next(values[key] for _, values in reversed(later) if key in values)

    out = dict(recipe)
    if recipe.get("low_res") and bool(given & {"low_res", "low_res_epochs"}):
        if "low_res_epochs" not in given and not user("low_res"):
            out["low_res_epochs"] = 0
        if "low_res" not in given and not user("low_res_epochs"):
            out["low_res"] = 0
    if recipe.get("whiten_bias_epochs") and "whiten_bias_epochs" not in given:
        changed = {k: user(k) for k in ("optimizer", "model", "schedule") if k in given}
        if any(recipe.get(k) != v for k, v in changed.items()):
            out["whiten_bias_epochs"] = 0.0
    epochs = user("epochs") if "epochs" in given else None
    if "epochs" not in recipe or not isinstance(epochs, int) or isinstance(epochs, bool):
        return out  # the recipe's length, or a bad value the config check names
    if epochs >= 1:
        out.update(epoch_parts(out, recipe["epochs"], epochs, given))
    return out


def folder_defaults(cfg, recipe: dict[str, Any], given: set[str]):
    """A recipe made for MNIST or CIFAR-10 trained on a folder (--data): what the user did not
    set is chosen for the folder. The length is planned in optimizer steps (the recipe's own
    count: its epochs over its dataset's training split), since epochs sized for 48,000
    images leave a folder of 1,000 undertrained; and the batches are augmented unless the
    recipe already does: shifts for grey images (digits and text, where a mirror image is
    another class), shifts and mirroring for colour ones. A low-resolution start (sized for
    the recipe's images) is off, and so are whitening-bias epochs in a planned length (counted
    in the recipe's epochs), unless the user sets them."""
    from convkit.data import get_dataset_spec

    changes: dict[str, Any] = {}
    spec = get_dataset_spec(recipe.get("dataset", cfg.dataset))
    if "epochs" not in given and "plan_steps" not in given:
        train_images = round(spec.train_size * (1 - recipe.get("val_split", cfg.val_split)))
        changes["plan_steps"] = cfg.epochs * -(-train_images // cfg.batch_size)
        if cfg.whiten_bias_epochs and "whiten_bias_epochs" not in given:
            changes["whiten_bias_epochs"] = 0.0
    if cfg.low_res and not given & {"low_res", "low_res_epochs"}:
        changes.update(low_res=0, low_res_epochs=0)
    if "augment" not in given and cfg.augment == "none":
        changes["augment"] = "translate" if spec.image_shape[0] == 1 else "crop-flip"
    return cfg.replace(**changes) if changes else cfg


# ---- listings ------------------------------------------------------------------------------------


def datasets(data_dir: str | Path | None = None) -> Table:
    """The declared datasets and where their files are (`convkit data list`)."""
    from convkit.data import get_dataset_spec, list_datasets, locate

    rows = []
    for name in list_datasets():
        spec = get_dataset_spec(name)
        res = locate(spec, data_dir)
        where = (
            str(next(iter(res.paths.values())).parent)
            if not res.missing
            else f"{len(res.missing)} of {len(res.primary.source.files)} files missing"
        )
        rows.append(
            {
                "name": name,
                "title": spec.title,
                "image_shape": list(spec.image_shape),
                "classes": len(spec.classes),
                "train": spec.train_size,
                "test": spec.test_size,
                "available": not res.missing,
                "where": where,
            }
        )

    def text(rows: list[dict[str, Any]]) -> list[str]:
        return [
            f"{r['name']:<15} {r['title']:<40} {'x'.join(map(str, r['image_shape'])):<8} "
            f"{r['train']:>6,} train {r['test']:>6,} test  {r['where']}"
            for r in rows
        ]

    columns = [("name", "dataset"), ("title", "title"), ("image_shape", "image (C, H, W)"),
               ("classes", "classes"), ("train", "train"), ("test", "test"),
               ("where", "files")]  # fmt: skip
    return Table(rows, columns, text=text)


def models(pattern: str | None = None) -> Table:
    """The registered models (names matching the shell-style `pattern`, e.g. 'resnet*'), with
    their parameter counts at their default input (`convkit models`)."""
    import torch

    from convkit.models import create_model, list_models, model_info

    rows = []
    for name in list_models(pattern):
        info = model_info(name)
        with torch.device("meta"):  # shapes and counts need no arithmetic or memory
            params = sum(p.numel() for p in create_model(name).parameters())
        rows.append(
            {
                "name": name,
                "family": info.family,
                "params": params,
                "input_shape": list(info.input_shape),
                "num_classes": info.num_classes,
                "description": info.description,
            }
        )

    def text(rows: list[dict[str, Any]]) -> list[str]:
        return [
            f"{r['name']:<14} {r['family']:<8} {r['params']:>12,}  "
            f"{'x'.join(map(str, r['input_shape'])):<9} {r['description']}"
            for r in rows
        ]

    columns = [("name", "model"), ("family", "family"), ("params", "parameters"),
               ("input_shape", "input (C, H, W)"), ("num_classes", "classes"),
               ("description", "description")]  # fmt: skip
    return Table(rows, columns, text=text)


def recipes() -> Table:
    """The training recipes, what they reach and their settings (`convkit recipes`)."""
    from convkit.train import RECIPES

    rows = [
        {
            "name": r.name,
            "description": r.description,
            "target": r.target,
            "measured": r.measured,
            "settings": r.config().to_dict(),
        }
        for r in RECIPES.values()
    ]

    def text(rows: list[dict[str, Any]]) -> list[str]:
        lines = []
        for r in rows:
            lines += [f"{r['name']}: {r['description']}", f"  target: {r['target']}"]
            if r["measured"]:
                lines.append(f"  measured: {r['measured']}")
        return lines

    columns = [("name", "recipe"), ("target", "target"), ("description", "description")]
    return Table(rows, columns, text=text)


# ---- models: summary and conv arithmetic --------------------------------------------------------


def _model_on_meta(
    model: str | nn.Module,
    input_shape: Sequence[int] | None,
    num_classes: int | None,
) -> tuple[nn.Module, tuple[int, int, int], str]:
    """(a registered model built on the meta device, or the module given; its input (C, H, W);
    its name). Shapes and counts need no arithmetic or memory."""
    import torch

    from convkit.models import create_model, model_info

    if not isinstance(model, str):
        if input_shape is None:
            raise ConfigError(f"a {type(model).__name__} has no default input: give input_shape")
        return model, _shape(input_shape), type(model).__name__
    check_model(model)
    c, h, w = _shape(input_shape) if input_shape is not None else model_info(model).input_shape
    with torch.device("meta"):
        built = create_model(model, num_classes=num_classes, in_channels=c, input_size=(h, w))
    return built, (c, h, w), model


def _shape(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, int) and d >= 1 for d in dims):
        raise ConfigError(f"expected C,H,W as three positive integers, received {shape!r}")
    return dims  # type: ignore[return-value]


class Summary:
    """The lecture's layer table (`convkit summary`): `.layers`, `.total_params`, ... of
    convkit.inspect.summary.Summary; shown as the table."""

    def __init__(self, data: Any):
        self.data = data

    def __getattr__(self, name: str) -> Any:
        if name == "data":
            raise AttributeError(name)
        return getattr(self.data, name)

    def to_dict(self) -> dict[str, Any]:
        return self.data.to_dict()

    def lines(self) -> list[str]:
        from convkit.inspect.summary import format_summary

        return format_summary(self.data)

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        s = self.data
        rows = [
            [f"{r.name} ({r.type})", "(None, " + ", ".join(map(str, r.output_shape)) + ")",
             f"{r.params:,}"]
            for r in s.layers
        ]  # fmt: skip
        rows += [
            ["Total params", "", f"{s.total_params:,}"],
            ["Trainable params", "", f"{s.trainable_params:,}"],
            ["Non-trainable params", "", f"{s.non_trainable_params:,}"],
        ]
        title = f"Model: {s.model}, input (C, H, W) = {tuple(s.input_shape)}"
        return html_table(["Layer (type)", "Output Shape", "Param #"], rows, title=title)


def summary(
    model: str | nn.Module,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> Summary:
    """Layer by layer output shapes and parameters, then the totals: the table Keras's
    `model.summary()` prints (`convkit summary MODEL`). `model` is a registered name (built on
    the meta device: even VGG-19 answers in seconds) or a torch module with `input_shape`."""
    from convkit.inspect import summarize

    built, shape, name = _model_on_meta(model, input_shape, num_classes)
    return Summary(summarize(built, shape, name))


class Arithmetic(Summary):
    """The conv arithmetic (`convkit explain`): `.layers` of convkit.inspect.arithmetic's
    LayerArithmetic (shapes, padding, output-size formula, receptive field, jump, MACs)."""

    def lines(self) -> list[str]:
        from convkit.inspect.arithmetic import format_arithmetic

        return format_arithmetic(self.data)

    def _repr_html_(self) -> str:
        a = self.data
        head = ["Layer (type)", "Input", "Output", "Kernel", "Stride", "Pad t,b,l,r",
                "Output size", "RF", "Jump", "Params", "MACs"]  # fmt: skip

        def pair(p: Any) -> str:
            return "-" if p is None else (str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}")

        def formula(r: Any) -> str:
            if r.formula is None:
                return "-"
            fh, fw = r.formula
            return fh if fh == fw else f"H: {fh}; W: {fw}"

        rows = [
            [f"{r.name} ({r.type})", "x".join(map(str, r.input_shape)),
             "x".join(map(str, r.output_shape)), pair(r.kernel), pair(r.stride),
             "-" if r.padding is None else ",".join(map(str, r.padding)), formula(r),
             pair(r.receptive_field), pair(r.jump), f"{r.params:,}", f"{r.macs:,}"]
            for r in a.layers
        ]  # fmt: skip
        title = (
            f"Conv arithmetic of {a.model} for input (C, H, W) = {tuple(a.input_shape)}: "
            f"{a.total_params:,} parameters, {a.total_macs:,} multiply-accumulates per image"
        )
        note = (
            "<p>RF: receptive field, the input pixels one output sees; Jump: input pixels "
            "between neighbouring outputs; padding pixels are added (top, bottom, left, "
            "right).</p>"
        )
        return html_table(head, rows, title=title) + note


def explain(
    model: str | nn.Module,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    filters: int = 16,
    kernel: int = 3,
    stride: int = 1,
    dilation: int = 1,
    padding: str | int = "valid",
) -> Arithmetic:
    """The conv arithmetic of a model, layer by layer (`convkit explain MODEL`), or of one layer:
    `explain("conv", input_shape=(3, 32, 32), filters=16, kernel=2, padding="same")` (or
    "pool", with kernel and stride) works out its output size."""
    from convkit.inspect.arithmetic import explain as arithmetic

    if model in ("conv", "pool"):
        from convkit.models.layers import Conv2D, MaxPool, keras_sequential

        if input_shape is None:
            raise ConfigError(f"`convkit explain {model}` needs --input-shape C,H,W")
        c, h, w = _shape(input_shape)
        if isinstance(padding, str) and padding.isdigit():
            padding = int(padding)
        try:
            if model == "conv":
                layer = Conv2D(c, filters, kernel, stride, padding, dilation=dilation)
            else:
                layer = MaxPool(kernel, stride, padding)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return Arithmetic(arithmetic(keras_sequential([layer]), (c, h, w), f"one {model} layer"))
    built, shape, name = _model_on_meta(model, input_shape, num_classes)
    return Arithmetic(arithmetic(built, shape, name))


# ---- datasets ------------------------------------------------------------------------------------


class Dataset:
    """A dataset in memory: `x_train`, `y_train`, `x_test`, `y_test` as numpy arrays (images
    uint8 (N, C, H, W) as stored, labels int64 (N,)), `classes`, and `.show(n)`."""

    def __init__(self, data: Any):
        self.data = data  # convkit.data.Dataset: what training takes

    @property
    def name(self) -> str:
        return self.data.spec.name

    @property
    def title(self) -> str:
        return self.data.spec.title

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.data.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.spec.image_shape)

    @property
    def x_train(self):
        return self.data.train.images.numpy()

    @property
    def y_train(self):
        return self.data.train.labels.numpy()

    @property
    def x_test(self):
        return self.data.test.images.numpy()

    @property
    def y_test(self):
        return self.data.test.labels.numpy()

    def show(self, n: int = 16, *, split: str = "train", start: int = 0) -> Picture:
        """A grid of `n` images of the split from index `start`, each titled with its class."""
        if split not in ("train", "test"):
            raise ConfigError(f"expected split 'train' or 'test', received {split!r}")
        part = self.data.train if split == "train" else self.data.test
        if not 0 <= start < len(part) or n < 1:
            raise ConfigError(
                f"expected n >= 1 and 0 <= start < {len(part):,}, received n={n}, start={start}"
            )
        images = part.images[start : start + n].numpy()
        labels = part.labels[start : start + n].tolist()
        titles = [f"#{start + i}: {self.classes[y]}" for i, y in enumerate(labels)]
        return show(images, titles, title=f"{self.name} {split} images {start}..{start + n - 1}")

    def lines(self) -> list[str]:
        c, h, w = self.image_shape
        names = ", ".join(self.classes)
        return [
            f"{self.name}: {self.title}: {len(self.data.train):,} train + "
            f"{len(self.data.test):,} test images, uint8 (N, {c}, {h}, {w}); "
            f"{len(self.classes)} classes: {names}"
        ]

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        c, h, w = self.image_shape
        rows = [
            ["dataset", f"{self.name}: {self.title}"],
            ["images", f"{len(self.data.train):,} train + {len(self.data.test):,} test"],
            ["x_train, x_test", f"uint8 (N, {c}, {h}, {w}), pixels 0..255"],
            ["y_train, y_test", "int64 (N,), class indices"],
            ["classes", ", ".join(self.classes)],
        ]
        return html_table([], rows, title=self.name) + f"<p>{self.show(8).html()}</p>"


def load_dataset(
    name: str, *, data_dir: str | Path | None = None, download: bool = True
) -> Dataset:
    """A registered dataset ("mnist", "fashion-mnist", "cifar10"), found or downloaded, verified
    and in memory (convkit.data.load_dataset; `convkit data list` shows them)."""
    from convkit.data import load_dataset as load

    check_dataset(name)
    return Dataset(load(name, data_dir, download=download, log=print))


def _as_dataset(data: Any, what: str = "data") -> Any:
    """A convkit.data.Dataset from what `data=` may be besides a name or a folder: a Dataset of
    this module, one of convkit.data, or arrays ((x_train, y_train), (x_test, y_test))."""
    import numpy as np
    import torch

    from convkit.data import Dataset as Data
    from convkit.data import DatasetSpec, Split

    if isinstance(data, Dataset):
        return data.data
    if isinstance(data, Data):
        return data
    expected = (
        f"{what}: expected a dataset name, an image folder, what ck.load_dataset returns, or "
        "arrays ((x_train, y_train), (x_test, y_test))"
    )
    try:
        (x_train, y_train), (x_test, y_test) = data
    except (TypeError, ValueError):
        raise ConfigError(f"{expected}; received {type(data).__name__}") from None

    def images(x: Any, name: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.uint8:
            raise ConfigError(
                f"{name}: expected uint8 pixels 0..255 (as ck.load_dataset gives them), "
                f"received dtype {x.dtype}; convert with (x * 255).round().astype('uint8') if "
                "it holds 0..1"
            )
        if x.ndim == 3:  # (N, H, W): grey
            x = x[:, None]
        elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # (N, H, W, C), as Keras keeps them
        if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
            raise ConfigError(
                f"{name}: expected images (N, H, W), (N, C, H, W) or (N, H, W, C) with 1 or 3 "
                f"channels, received shape {tuple(np.shape(x))}"
            )
        return np.ascontiguousarray(x)

    def labels(y: Any, n: int, name: str) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 2:
            raise ConfigError(
                f"{name}: expected class indices (N,), received shape {y.shape} (one-hot "
                "labels? pass y.argmax(1))"
            )
        if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
            raise ConfigError(
                f"{name}: expected {n:,} integer class indices (N,), received shape "
                f"{y.shape}, dtype {y.dtype}"
            )
        if len(y) and y.min() < 0:
            raise ConfigError(f"{name}: expected class indices >= 0, received {int(y.min())}")
        return y.astype(np.int64)

    xs = images(x_train, "x_train"), images(x_test, "x_test")
    ys = labels(y_train, len(xs[0]), "y_train"), labels(y_test, len(xs[1]), "y_test")
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise ConfigError(
            f"x_train's images are {xs[0].shape[1:]} but x_test's {xs[1].shape[1:]}: "
            "give images of one shape"
        )
    k = max(2, int(max(ys[0].max(), ys[1].max())) + 1)
    spec = DatasetSpec(
        name="arrays", title="arrays given in Python", sources=(), mirrors=(),
        classes=tuple(str(i) for i in range(k)), image_shape=tuple(xs[0].shape[1:]),
        train_size=len(xs[0]), test_size=len(xs[1]), homepage="", citation="",
    )  # fmt: skip
    split = lambda x, y: Split(torch.from_numpy(x), torch.from_numpy(y))  # noqa: E731
    return Data(spec, split(xs[0], ys[0]), split(xs[1], ys[1]), files={})


# ---- pictures ------------------------------------------------------------------------------------


def show(
    images: Any,
    titles: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    title: str = "",
) -> Picture:
    """A grid of images: arrays (H, W), (C, H, W) or (H, W, 3), or a batch (N, C, H, W) or
    (N, H, W); uint8 shown as pixels 0..255, anything else stretched from its minimum to its
    maximum (a filter's output, say). Returns the picture: a notebook shows it."""
    import numpy as np

    batch = np.asarray(images) if not isinstance(images, (list, tuple)) else None
    if batch is not None and batch.ndim == 4:
        items = list(batch)
    elif batch is not None and batch.ndim == 3 and batch.shape[-1] not in (3, 4):
        items = list(batch) if batch.shape[0] not in (1, 3) else [batch]
    elif batch is not None:
        items = [batch]
    else:
        items = [np.asarray(x) for x in images]
    if not items:
        raise ConfigError("show: no images given")
    if titles is not None and len(titles) != len(items):
        raise ConfigError(f"show: {len(items)} images but {len(titles)} titles")
    pictures = [_displayable(x, i) for i, x in enumerate(items)]
    plt = pyplot()
    n = len(pictures)
    cols = columns or min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + (0.3 if title else 0)))
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.set_axis_off()
        if k < n:
            pic = pictures[k]
            ax.imshow(pic, cmap="gray" if pic.ndim == 2 else None, vmin=0, vmax=255,
                      interpolation="nearest")  # fmt: skip
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()

    def save(buf):
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)

    return Picture(figure_png(save), title)


def _displayable(x: Any, i: int):
    """(H, W) or (H, W, 3) uint8 for imshow: channels last, other dtypes stretched to 0..255."""
    import numpy as np

    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = x.transpose(1, 2, 0)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[:, :, 0]
    if x.ndim == 3 and x.shape[-1] == 4:
        x = x[:, :, :3]
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] != 3):
        raise ConfigError(
            f"show: image {i} has shape {x.shape}; expected (H, W), (C, H, W) or (H, W, C)"
        )
    if x.dtype != np.uint8:
        x = x.astype(np.float64)
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        x = ((x - lo) * (255 / (hi - lo) if hi > lo else 0)).round().astype(np.uint8)
    return x


# ---- training ------------------------------------------------------------------------------------


def train(
    recipe: str | None = None,
    *,
    data: Any = None,
    config: str | Path | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    quiet: bool = False,
    **settings: Any,
) -> Run:
    """Train `recipe` into a new run folder (`out`, or runs/<recipe>-<time>) and return the Run.

    Every training setting is a keyword with the command line's name and checks (`epochs=3`,
    `seed=1`, `lr=2e-3`; `ck.recipes()` and `convkit train RECIPE --help` list them); a setting
    left out, or given as None, keeps the recipe's value. Settings layer as on the command line:
    defaults < recipe < `config` file < keywords. `data` is a dataset name ("fashion-mnist"), an
    image folder (class folders, as `--data`), what `ck.load_dataset` returns, or arrays
    ((x_train, y_train), (x_test, y_test)). In a notebook each epoch is one line updating in
    place, and the curves are shown at the end."""
    from convkit.train.progress import progress_for
    from convkit.train.runner import train as run_training

    started = time.perf_counter()
    settings = {k: v for k, v in settings.items() if v is not None}
    dataset = None
    if isinstance(data, (str, Path)):
        from convkit.data import list_datasets

        if str(data) in list_datasets():
            settings["dataset"] = str(data)
        elif Path(data).expanduser().is_dir():
            settings["data"] = str(data)
        else:
            raise unknown_name(
                "dataset", str(data), list_datasets(),
                f"data={str(data)!r} is neither a registered dataset nor a folder of images; "
                f"known datasets: {', '.join(list_datasets())}",
            )  # fmt: skip
    elif data is not None:
        dataset = _as_dataset(data)
    cfg = train_config(recipe, config=config, settings=settings, source="train()")
    progress = progress_for(enabled=not quiet)
    result = run_training(
        cfg, data=dataset, out=out, data_dir=data_dir, download=download,
        progress=progress, started=started,
    )  # fmt: skip
    if result is None:  # under torchrun, the processes other than rank 0
        return None  # type: ignore[return-value]
    run = Run(result["run_dir"], data=dataset, data_dir=data_dir, download=download)
    run._finished(result, progress)
    return run


def draw_curves(result: dict[str, Any]) -> Path | None:
    """curves.png in the run folder, after training (the front end's job, not training's: the
    command line draws it after printing the result, matplotlib taking a second to load)."""
    from convkit.runs import Run as Folder

    pyplot()
    from convkit.inspect.plots import plot_training_curves

    run = Folder(result["run_dir"])
    title = f"{result['recipe'] or result['model']} on {result['dataset']}"
    try:
        plot_training_curves(
            run.history(), run.curves, title=title, best_epoch=result["best_epoch"]
        )
    except OSError as exc:  # the run itself is complete; the picture can be drawn again
        print(f"convkit: could not draw {run.curves} ({exc.strerror})", file=sys.stderr)
        return None
    return run.curves


def load(
    path: str | Path | Run, *, data_dir: str | Path | None = None, download: bool = True
) -> Run:
    """The run in folder `path` (what `ck.train` returned, or `convkit train` wrote)."""
    if isinstance(path, Run):
        return path
    return Run(path, data_dir=data_dir, download=download)


def compare(runs: Sequence[str | Path | Run]) -> Table:
    """Runs side by side (`convkit compare`): model, parameters, accuracy, training time and,
    where `run.robustness()` has been run, shift mean, consistency and corruption errors;
    in a notebook also accuracy against shift distance, one line per run, and each run's
    shift grid."""
    from convkit.inspect.compare import compare_runs, format_table

    paths = [r.path if isinstance(r, Run) else Path(r) for r in runs]
    if not paths:
        raise ConfigError("compare: give at least one run")
    rows = compare_runs(paths)
    pictures = []
    reports = [(r["label"], r["robustness"]) for r in rows if r["robustness"]]
    if reports:
        pyplot()
        from convkit.inspect import draw

        pictures.append(
            Picture(figure_png(lambda f: draw.robustness_curves_figure(reports, f)), "compare")
        )
        for label, report in reports:
            if "shift" in report:
                draw_grid = lambda f, r=report, t=label: draw.shift_heatmap_figure(r, f, t)  # noqa: E731
                pictures.append(Picture(figure_png(draw_grid), f"{label}: shift grid"))
    columns = [("label", "run"), ("model", "model"), ("params", "parameters"),
               ("dataset", "dataset"), ("test_accuracy", "test accuracy", percent),
               ("train_seconds", "train s", lambda v: "-" if v is None else f"{v:.1f}"),
               ("shift_mean", "shift mean", percent), ("consistency", "consistency", percent),
               ("mean_corruption_error", "corruption error", percent),
               ("mce", "mCE", percent)]  # fmt: skip
    shown = [{k: v for k, v in r.items() if k != "robustness"} for r in rows]
    return Table(shown, columns, text=lambda _: format_table(rows).splitlines(), pictures=pictures)


# ---- a run ---------------------------------------------------------------------------------------


class Evaluation(Report):
    """`run.evaluate()`: what `convkit evaluate --json` prints, shown as `convkit evaluate`."""

    def _views(self) -> str:
        tta = self.get("tta", "none")
        return "" if tta == "none" else f" (test-time augmentation: {tta})"

    def lines(self) -> list[str]:
        return [
            f"{self['model']} on {self['dataset']} test set{self._views()}: loss "
            f"{self['test_loss']:.4f}",
            f"Test accuracy: {100 * self['test_accuracy']:.4f}%",
        ]

    def html(self) -> str:
        rows = [
            ["model", self["model"]],
            ["dataset", self["dataset"]],
            ["test-time augmentation", self.get("tta", "none")],
            ["test loss", f"{self['test_loss']:.4f}"],
            ["test accuracy", f"{100 * self['test_accuracy']:.4f}%"],
            ["weights of epoch", str(self.get("checkpoint_epoch"))],
        ]
        return html_table([], rows, title=f"Evaluation of {self['run_dir']}")


class Robustness(Report):
    """`run.robustness()`: the report `convkit robustness --json` prints (saved as
    RUN/robustness.json), shown as its table and pictures."""

    def rows(self) -> list[tuple[str, str]]:
        from convkit.inspect.robustness import summary_rows

        return summary_rows(self)

    def lines(self) -> list[str]:
        rows = self.rows()
        width = max(len(w) for w, _ in rows)
        saved = Path(self["run"]) / "robustness.json"
        return [f"{what:<{width}}  {figure}" for what, figure in rows] + [
            f"{self['images_scored']:,} images scored in {self['seconds']:.1f} s; saved in {saved}"
        ]

    def html(self) -> str:
        import html

        title = f"Robustness of {self['run']} ({self['model']} on {self['dataset']})"
        rows = [  # indented rows (the distances under the shift mean) stay indented
            ["&emsp;" * (len(what) - len(what.lstrip())) + html.escape(what.strip()),
             html.escape(figure)]
            for what, figure in self.rows()
        ]  # fmt: skip
        pictures = [Picture.from_file(p) for p in self.get("pictures", []) if Path(p).is_file()]
        return html_table(["test", "figure"], rows, title=title, raw=True) + html_pictures(pictures)


class Inspection(Report):
    """`run.inspect()`: the report folder's report.json (sections, captions, the numbers behind
    each picture) and `page`, its index.html; shown with its pictures inline."""

    def lines(self) -> list[str]:
        lines = []
        for name, section in self["sections"].items():
            what = section.get("note") or ", ".join(section["images"])
            lines.append(f"  {name}: {what}")
        return [f"Report: {self['page']}", *lines]

    def html(self) -> str:
        import html

        from convkit.inspect.report import SECTION_TABLE

        titles = {s.name: s.title for s in SECTION_TABLE}
        folder = Path(self["page"]).parent
        parts = []
        for name, section in self["sections"].items():
            parts.append(f"<h4>{html.escape(titles.get(name, name))}</h4>")
            if "note" in section:
                parts.append(f"<p><em>{html.escape(section['note'])}</em></p>")
                continue
            parts.append(f"<p>{html.escape(section['caption'])}</p>")
            parts.append(html_pictures([Picture.from_file(folder / i) for i in section["images"]]))
        return "".join(parts) + f"<p>Report page: <code>{html.escape(self['page'])}</code></p>"


class Predictions(list):
    """`run.predict(...)`: one convkit.use.predict.Prediction per image (`.file`, `.top` as
    (class, probability) pairs, `.conversion`, `.image` the model's input), in order; shown
    as `convkit predict` prints them, or as a table with the inputs in a notebook.
    `.failures`: the inputs that could not be read, each with why."""

    def __init__(self, predictions: Sequence[Any] = (), failures: Sequence[Any] = ()):
        super().__init__(predictions)
        self.failures = list(failures)

    @property
    def classes(self) -> list[str]:
        """The most probable class of each image."""
        return [p.top[0][0] for p in self]

    def lines(self) -> list[str]:
        lines = []
        for p in self:
            top = "  ".join(f"{c} {q:.1%}" for c, q in p.top)
            lines.append(f"{p.file}\t{top}")
        return lines + [f"convkit: {f.message}" for f in self.failures]

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        import html

        pyplot()
        from convkit.inspect.draw import hwc, png_bytes

        rows = []
        for p in self:
            pic = ""
            if p.image is not None:
                pic = Picture(png_bytes(hwc(p.image)), p.file).html(width=56)
            top = ", ".join(f"{html.escape(c)} {q:.1%}" for c, q in p.top)
            rows.append([pic, html.escape(p.file), top, html.escape(p.conversion)])
        rows += [["", html.escape(f.file), "could not be read", html.escape(f.error)]
                 for f in self.failures]  # fmt: skip
        return html_table(["model input", "image", "top classes", "conversion"], rows, raw=True)


class Run:
    """A training run: its folder (`.path`), settings (`.config`), epochs (`.history`), result
    (`.result`) and kept model (`.model`, a torch module), and what you can do with it:
    evaluate, predict, inspect, robustness, export, resume. `ck.train` returns one and
    `ck.load(path)` opens one; a folder that holds no run is refused by name."""

    def __init__(
        self,
        path: str | Path,
        *,
        data: Any = None,
        data_dir: str | Path | None = None,
        download: bool = True,
    ):
        from convkit.runs import Run as Folder

        self.folder = Folder.open(path)  # reads and writes the files (convkit.runs)
        self.path = self.folder.root
        self.data_dir = data_dir
        self.download = download
        self._data = data  # a convkit.data.Dataset the run trained on from Python, if any
        self._kept: tuple[Any, Any] | None = None  # (weights signature, KeptModel)
        self._predictor: tuple[Any, Any] | None = None

    # ---- what it is ----------------------------------------------------------------------------

    @property
    def config(self) -> TrainConfig:
        """The resolved settings (config.json)."""
        return self.folder.config()

    @property
    def result(self) -> dict[str, Any] | None:
        """result.json: test accuracy and loss, timings, provenance; None until training ends."""
        return self.folder.result()

    @property
    def history(self) -> Table:
        """One row per finished epoch: loss, accuracy, val_loss, val_accuracy, lr, seconds."""
        from convkit.train.runner import _epoch_line

        epochs = self.config.epochs
        num = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        columns = [("epoch", "epoch", str), ("loss", "loss", num), ("accuracy", "accuracy", num),
                   ("val_loss", "val_loss", num), ("val_accuracy", "val_accuracy", num),
                   ("lr", "lr", lambda v: f"{v:.3g}"),
                   ("seconds", "seconds", lambda v: f"{v:.1f}")]  # fmt: skip
        return Table(
            self.folder.history(),
            columns,
            text=lambda rows: [_epoch_line(m, epochs) for m in rows],
        )

    @property
    def model(self) -> nn.Module:
        """The kept weights as a torch module (CPU, fp32, eval mode)."""
        return self._kept_model().model

    @property
    def classes(self) -> tuple[str, ...]:
        return self._kept_model().classes

    def _kept_model(self):
        signature = self._signature()
        if self._kept is None or self._kept[0] != signature:
            kept = self.folder.kept_model()
            kept.model.eval()
            self._kept = (signature, kept)
        return self._kept[1]

    def _signature(self) -> Any:
        weights = self.path / "model.safetensors"
        st = weights.stat() if weights.exists() else None
        return None if st is None else (st.st_size, st.st_mtime_ns)

    def curves(self) -> Picture:
        """The loss and accuracy per epoch (curves.png, drawn when missing)."""
        if not self.folder.curves.is_file():
            result = self.result or {}
            draw_curves(
                {"run_dir": str(self.path), "recipe": self.config.recipe, "model":
                 self.config.model, "dataset": self.config.dataset,
                 "best_epoch": result.get("best_epoch", 0)}
            )  # fmt: skip
        return Picture.from_file(self.folder.curves, f"{self.path.name}: curves")

    def _finished(self, result: dict[str, Any] | None, progress: Any) -> None:
        """After training: the run folder line (as `convkit train`), the curves drawn, and in a
        notebook shown."""
        self._kept = self._predictor = None
        if result is None:
            return
        progress.message(
            f"Run folder: {result['run_dir']} (train {result['train_seconds']:.1f}s, "
            f"total {result['seconds']:.1f}s)"
        )
        path = draw_curves(result)
        if path is not None and progress.enabled and in_notebook():
            from IPython.display import display

            display(Picture.from_file(path, f"{self.path.name}: curves"))

    # ---- what it does --------------------------------------------------------------------------

    def evaluate(self, *, data: Any = None, tta: str | None = None) -> Evaluation:
        """Rebuild the kept model and measure it on the test set (`convkit evaluate`); `data`
        as for `ck.train` (by default the run's own dataset), `tta` one of "none", "flip",
        "flip-translate", "selective" (by default the run's own)."""
        from convkit.train.runner import evaluate_run

        dataset = self._dataset(data, "evaluate")
        result = evaluate_run(
            self.path,
            data=dataset,
            data_dir=self.data_dir,
            download=self.download,
            tta=tta,
            log=print,
        )
        return Evaluation(result)

    def predict(
        self,
        images: Any,
        *,
        top_k: int = 5,
        batch_size: int = 256,
        max_pixels: int | None = None,
    ) -> Predictions:
        """The top classes of `images` (`convkit predict`): image paths (files, folders, globs),
        PIL images, uint8 arrays (an image (H, W) or (H, W, 3), the model's input (C, H, W), or
        a batch of them), or a list of these. Each is converted as `convkit predict` converts
        files. Files that cannot be read are named on stderr and in `.failures`; when none can,
        the first one's error is raised."""
        from convkit.data.images import MAX_PIXELS
        from convkit.use.predict import (
            Failure,
            collect_inputs,
            open_predictor,
            predict_files,
        )

        if batch_size < 1:
            raise ConfigError(f"expected --batch-size >= 1, received {batch_size}")
        signature = self._signature()
        if self._predictor is None or self._predictor[0] != signature:
            self._predictor = (signature, open_predictor(self.path))
        predictor = self._predictor[1]
        items, failures = collect_inputs(images, predictor.image_shape)
        done = []
        for item in predict_files(
            predictor, items, top_k=top_k, batch_size=batch_size,
            max_pixels=MAX_PIXELS if max_pixels is None else max_pixels,
        ):  # fmt: skip
            (failures if isinstance(item, Failure) else done).append(item)
        if not done:
            if failures:
                more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
                raise ConfigError(failures[0].message + more)
            raise ConfigError("no images to predict; give files, folders, globs or arrays")
        for f in failures:
            print(f"convkit: {f.message}", file=sys.stderr)
        return Predictions(done, failures)

    def inspect(
        self,
        *sections: str,
        image: str | Path | Sequence[str | Path] | None = None,
        index: int | Sequence[int] | None = None,
        layer: str | None = None,
        target: str | None = None,
        limit: int | None = None,
        out: str | Path | None = None,
    ) -> Inspection:
        """Pictures of what the run learned (`convkit inspect`), written into `out` (default
        RUN/inspect) and shown inline: sections curves, confusion, mistakes, filters, features,
        patches, attention, robustness (default all). `image` files and test-set `index`es
        are the inputs for features and attention; `layer` the layer for patches; `target` a
        class for attention; `limit` the first N test images."""
        from convkit.inspect.report import SECTIONS, write_report
        from convkit.inspect.run import load_run

        self._needs_registered_data("inspect")
        pyplot()
        lr = load_run(self.path, data_dir=self.data_dir, download=self.download)
        folder = Path(out) if out else self.path / "inspect"
        print(f"Inspecting {self.path} ({lr.cfg.model} on {lr.cfg.dataset}) into {folder}")
        page = write_report(
            lr, folder, tuple(dict.fromkeys(sections)) or SECTIONS,
            image_files=[str(p) for p in _listed(image)], indices=list(_listed(index)),
            layer=layer, target=target, limit=limit, log=print,
        )  # fmt: skip
        import json

        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        return Inspection(sections=report["sections"], page=str(page), folder=str(folder))

    def robustness(
        self,
        *,
        only: str | Sequence[str] | None = None,
        max_shift: int | None = None,
        corruptions: str | Sequence[str] | None = None,
        angles: Sequence[float] | None = None,
        scales: Sequence[float] | None = None,
        baseline: str | Path | Run | None = None,
        images: str | Path | None = None,
        seed: int = 0,
        sample: int | str = 5_000,
        limit: int | None = None,
        out: str | Path | None = None,
        pictures: bool = True,
    ) -> Robustness:
        """The kept model on moved, turned, resized and corrupted copies of its test set
        (`convkit robustness`): `only` some of shift, rotate, scale, corrupt (a list, or
        comma-separated); copies made from `sample` test images drawn at random ("all": every
        one; the clean accuracy is always on the whole test set); saved as
        RUN/robustness.json with pictures in `out` (default RUN/robustness), and shown as its
        table and pictures."""
        from convkit.inspect.robustness import check_sample, run_robustness

        self._needs_registered_data("robustness")
        if limit is not None and limit < 1:
            raise ConfigError(f"expected --limit >= 1, received {limit}")
        if isinstance(sample, str) and sample.strip().lower() == "all":
            sample = None
        check_sample(sample)  # type: ignore[arg-type]
        pyplot()
        report = run_robustness(
            self.path, out=out, only=_names(only), max_shift=max_shift,
            corruptions=_names(corruptions), angles=angles, scales=scales,
            baseline=baseline.path if isinstance(baseline, Run) else baseline, images=images,
            seed=seed, sample=sample, limit=limit, data_dir=self.data_dir,
            download=self.download, pictures=pictures, log=print,
        )  # fmt: skip
        return Robustness(report)

    def export(
        self,
        path: str | Path | None = None,
        *,
        opset: int | None = None,
        atol: float | None = None,
    ):
        """One checked ONNX file of the kept model, preprocessing included (`convkit export`;
        default RUN/model.onnx). Returns its report (path, agreement with PyTorch, size)."""
        try:
            from convkit.use.export import ATOL, export_onnx
        except ImportError as exc:
            raise ConfigError(
                f"export needs the export extra ({exc.name} is not installed): "
                "pip install 'convkit[export]'"
            ) from None
        check = None
        if self._data is not None:
            check = self._data.test.images[:1000]
        return export_onnx(
            self.path, path, opset=opset, check_images=check, data_dir=self.data_dir,
            download=self.download, atol=ATOL if atol is None else atol, log=print,
        )  # fmt: skip

    def resume(self, epochs: int | None = None, *, quiet: bool = False, **settings: Any) -> Run:
        """Continue the run (`convkit train --resume`): more `epochs`, or another of the settings
        a resume may change (patience, eval_batch_size, tta, device, precision, channels_last,
        compile, threads; another tta is kept in the run's settings, where `evaluate(tta=...)`
        only measures with it); anything else is refused, naming it. Returns this run."""
        from convkit.train.progress import progress_for
        from convkit.train.runner import resume

        started = time.perf_counter()
        overrides = {k: v for k, v in {"epochs": epochs, **settings}.items() if v is not None}
        check_settings(overrides, "resume()")
        progress = progress_for(enabled=not quiet)
        result = resume(
            self.path, overrides, data=self._dataset(None, "resume"), data_dir=self.data_dir,
            download=self.download, progress=progress, started=started,
        )  # fmt: skip
        self._finished(result, progress)
        return self

    def _dataset(self, data: Any, what: str) -> Any:
        """The data to give the runner: `data` when given, the arrays the run trained on when it
        did from Python, else None (the runner loads what the run's config names)."""
        if data is not None:
            return data if isinstance(data, str) else _as_dataset(data)
        if self._data is not None:
            return self._data
        if self.config.dataset == "arrays":
            raise ConfigError(
                f"{self.path} trained on arrays given in Python; to {what} it, give them again: "
                f"data=((x_train, y_train), (x_test, y_test))"
            )
        return None

    def _needs_registered_data(self, what: str) -> None:
        if self.config.dataset == "arrays":
            raise ConfigError(
                f"{self.path} trained on arrays given in Python: {what} needs a registered "
                "dataset or an image folder, whose test set it can load again"
            )

    # ---- how it shows --------------------------------------------------------------------------

    def _facts(self) -> list[tuple[str, str]]:
        cfg, result = self.config, self.result
        facts = [
            ("run folder", str(self.path)),
            ("recipe", cfg.recipe or "-"),
            ("model", cfg.model),
            ("dataset", cfg.dataset + (f" ({cfg.data})" if cfg.data else "")),
        ]
        if result is None:
            done = len(self.folder.history())
            return facts + [("state", f"not finished: {done} of {cfg.epochs} epochs saved")]
        return facts + [
            ("parameters", f"{result['params']:,}"),
            ("epochs", f"{result['epochs']} (weights of epoch {result['best_epoch']} kept)"),
            ("test accuracy", f"{100 * result['test_accuracy']:.2f}%"),
            ("test loss", f"{result['test_loss']:.4f}"),
            ("training time", f"{result['train_seconds']:.1f} s"),
        ]

    def __repr__(self) -> str:
        facts = dict(self._facts())
        what = (
            f"{facts['recipe'] if facts['recipe'] != '-' else facts['model']} on {facts['dataset']}"
        )
        if "state" in facts:
            return f"Run({str(self.path)!r}): {what}, {facts['state']}"
        epochs = int(facts["epochs"].split()[0])
        return (
            f"Run({str(self.path)!r}): {what}, {epochs} epoch{'s' if epochs != 1 else ''}, "
            f"test accuracy {facts['test accuracy']}"
        )

    def _repr_html_(self) -> str:
        table = html_table([], [list(f) for f in self._facts()], title=f"Run {self.path.name}")
        curves = self.folder.curves
        return table + (f"<p>{Picture.from_file(curves).html()}</p>" if curves.is_file() else "")


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    """A list of names from a list or a comma-separated string (as the command line takes)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return list(value)
