"""Prediction on image files: any format Pillow reads, any size or mode, converted the way the
run's dataset stores images (convkit.data.images.load_image, the one conversion inspect and the
web page use too), in batches, with the top classes by name.

A run folder predicts with PyTorch; an exported .onnx file predicts with onnxruntime alone (this
module imports torch only for a run folder). A file that cannot be read is reported by name
and reason, and every other file is still predicted. The Python API (`Run.predict`) also gives
images in memory, PIL images and arrays: `collect_inputs` turns them into `ImageInput`s, which
`predict_files` converts by the same function from the decoded pixels on
(convkit.data.images.convert_image).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit.data.images import MAX_PIXELS, conversion_options, convert_image, load_image
from convkit.errors import ConfigError, ConvkitError

# Files a folder search picks up (named files are tried whatever their name).
IMAGE_SUFFIXES = frozenset(
    ".png .jpg .jpeg .jpe .jfif .gif .bmp .dib .tif .tiff .webp .ppm .pgm .pbm .pnm .ico "
    ".avif .jp2 .j2k .jpx".split()
)


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]]  # (class, probability), most probable first
    conversion: str  # what was done to the file to make the model's input
    image: np.ndarray | None = field(default=None, repr=False)  # that input, uint8 (C, H, W)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "top": [{"class": c, "probability": p} for c, p in self.top],
            "conversion": self.conversion,
        }


@dataclass
class Failure:
    file: str
    error: str

    @property
    def message(self) -> str:
        """One line naming the file and why (load_image's errors name it already)."""
        return self.error if self.file in self.error else f"{self.file}: {self.error}"


@dataclass
class Predictor:
    """What prediction needs from a model: its classes, the images it takes, and a function
    from a uint8 batch (N, C, H, W) to class probabilities (N, classes)."""

    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]
    dataset: str
    probabilities: Callable[[np.ndarray], np.ndarray]
    source: str = ""
    fit: str = "auto"

    @property
    def options(self) -> dict[str, Any]:
        """How user images are converted for this model."""
        return conversion_options(self.dataset, self.image_shape, self.fit)


def open_predictor(target: str | Path) -> Predictor:
    """A run folder (its kept weights, with PyTorch) or an exported .onnx file (onnxruntime)."""
    target = Path(target)
    if target.suffix == ".onnx":
        from convkit.use.onnx_model import OnnxClassifier

        onnx = OnnxClassifier(target)
        return Predictor(
            onnx.classes, onnx.image_shape, onnx.dataset, onnx.probabilities, str(target), onnx.fit
        )
    return _torch_predictor(target)


def _torch_predictor(run_dir: Path) -> Predictor:
    import torch

    from convkit.runs import Run

    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist: give a run folder or an exported .onnx file")
    kept = Run(run_dir).kept_model()
    model = kept.classifier.eval()  # behind the run's test-time augmentation, as tested

    def probabilities(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), kept.cpu_autocast():
            logits = model(kept.preprocess(torch.from_numpy(images)))
        return torch.softmax(logits.float(), dim=1).numpy()

    return Predictor(
        kept.classes, kept.image_shape, kept.cfg.dataset, probabilities, str(run_dir), kept.cfg.fit
    )


def find_images(paths: list[str]) -> tuple[list[Path], list[Failure]]:
    """The files to predict: named files as they are, folders searched recursively for image
    files, glob patterns expanded (sorted, each file once); and what names nothing."""
    files: dict[Path, None] = {}
    missing: list[Failure] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                Path(root) / name
                for root, _, names in os.walk(path)
                for name in names
                if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
            )
        elif path.exists():
            found = [path]
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        else:
            found = []
        if not found:
            what = "no image files in this folder" if path.is_dir() else "no such file"
            missing.append(Failure(text, what if not glob.has_magic(text) else "matches no file"))
        files.update(dict.fromkeys(found))
    return list(files), missing


@dataclass
class ImageInput:
    """An image given in memory: a PIL image, an image array (H, W), (H, W, 3) or (H, W, 4), or
    an array that is the model's input already (C, H, W) uint8 (`stored`), and its name."""

    name: str
    image: Any
    stored: bool = False


def collect_inputs(
    inputs: Any, image_shape: tuple[int, int, int]
) -> tuple[list[Path | ImageInput], list[Failure]]:
    """What `Run.predict` takes, as the items `predict_files` predicts, in order: paths (files,
    folders, globs; str or Path, expanded as the command line expands them), PIL images, and
    uint8 arrays: an image (H, W), (H, W, 3), (H, W, 4), the model's input (C, H, W), or a
    batch of either (N, ...); a list or tuple of any of these. A wrong-shaped array is an
    error that names its shape and what would fit."""
    items: list[Path | ImageInput] = []
    failures: list[Failure] = []
    count = [0]

    def name() -> str:
        count[0] += 1
        return f"image {count[0] - 1}"

    def add(x: Any, top: bool) -> None:
        if isinstance(x, (str, os.PathLike)):
            found, missing = find_images([str(x)])
            items.extend(found)
            failures.extend(missing)
        elif isinstance(x, np.ndarray) or type(x).__name__ == "Tensor":
            items.extend(_array_inputs(np.asarray(x), image_shape, name))
        elif isinstance(x, (list, tuple)) and top:
            for element in x:
                add(element, False)
        elif type(x).__module__.startswith("PIL."):
            items.append(ImageInput(getattr(x, "filename", "") or name(), x))
        else:
            raise ConfigError(
                f"cannot predict a {type(x).__name__}: give image paths (files, folders, globs), "
                "PIL images or uint8 image arrays, or a list of them"
            )

    add(inputs, True)
    return items, failures


def _array_inputs(
    a: np.ndarray, image_shape: tuple[int, int, int], name: Callable[[], str]
) -> list[ImageInput]:
    c, h, w = image_shape
    shape = tuple(a.shape)
    expected = (
        f"expected uint8 pixels: an image (H, W), (H, W, 3) or (H, W, 4), the model's input "
        f"(C, H, W) = ({c}, {h}, {w}), or a batch of them (N, ...); received"
    )
    if a.dtype != np.uint8:
        raise ConfigError(
            f"{expected} dtype {a.dtype} (shape {shape}); images hold 0..255 as uint8: convert "
            "with (x * 255).round().astype('uint8') if yours hold 0..1"
        )
    if shape == (c, h, w):
        return [ImageInput(name(), a, stored=True)]
    if a.ndim in (1, 2) and shape[-1] == c * h * w and shape[0] != h:  # the MLP's input
        raise ConfigError(
            f"{expected} shape {shape}: flattened images? reshape them to (N, {c}, {h}, {w})"
        )
    if a.ndim == 2 or (a.ndim == 3 and shape[-1] in (1, 3, 4)):
        return [ImageInput(name(), a)]
    if a.ndim == 4 and shape[1:] == (c, h, w):
        return [ImageInput(name(), x, stored=True) for x in a]
    if a.ndim == 3 and c == 1 and shape[1:] == (h, w):  # (N, H, W): grey images as stored
        return [ImageInput(name(), x[None], stored=True) for x in a]
    if a.ndim == 4 and shape[-1] in (1, 3, 4):  # (N, H, W, C): images of any size
        return [ImageInput(name(), x) for x in a]
    raise ConfigError(f"{expected} shape {shape}")


def _decode_threads(files: list[Path], sample: int = 64) -> int:
    """Threads for decoding: Pillow releases the GIL while it decodes, which pays for photos;
    small files (a 28x28 PNG decodes in ~0.1 ms) are faster in one thread, where the Python
    around each decode is not fighting over the GIL (10,000 MNIST PNGs: 3,020 images/s with
    one thread, 2,300 with two or four, measured on 2 cores)."""
    sizes = [f.stat().st_size for f in files[:sample] if isinstance(f, Path) and f.is_file()]
    big = sizes and sum(sizes) / len(sizes) > 256 * 1024
    return min(4, os.cpu_count() or 1) if big else 1


def predict_files(
    predictor: Predictor,
    files: list[Path | ImageInput],
    *,
    top_k: int = 5,
    batch_size: int = 256,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Prediction | Failure]:
    """Predict `files` in batches, in order: a Prediction or a Failure for each. Files are read
    and converted by `load_image`; images given in memory (ImageInput) by `convert_image`, the
    same conversion, or taken as they are when they are the model's input already."""
    if top_k < 1:
        raise ConfigError(f"expected --top-k >= 1, received {top_k}")
    k = min(top_k, len(predictor.classes))

    def load(item: Path | ImageInput) -> dict[str, Any] | Failure:
        shape, options = predictor.image_shape, predictor.options
        try:
            if not isinstance(item, ImageInput):
                return load_image(item, shape, max_pixels=max_pixels, **options)
            if item.stored:
                what = "as given: the model's input " + "x".join(map(str, shape))
                return {"path": item.name, "converted": item.image, "conversion": what}
            return convert_image(
                item.image, shape, name=item.name, max_pixels=max_pixels, **options
            )
        except ConvkitError as exc:
            return Failure(str(item if isinstance(item, Path) else item.name), str(exc))

    if workers is None:
        workers = _decode_threads(files)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(files), batch_size):
            loaded = list(pool.map(load, files[start : start + batch_size]))
            good = [item for item in loaded if not isinstance(item, Failure)]
            proba = (
                predictor.probabilities(np.stack([item["converted"] for item in good]))
                if good
                else None
            )
            row = 0
            for item in loaded:
                if isinstance(item, Failure):
                    yield item
                    continue
                p = proba[row]
                row += 1
                order = np.argsort(-p, kind="stable")[:k]
                top = [(predictor.classes[i], float(p[i])) for i in order]
                yield Prediction(item["path"], top, item["conversion"], item["converted"])
            if progress:
                progress(len(loaded))
