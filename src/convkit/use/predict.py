"""Prediction on image files: any format Pillow reads, any size or mode, converted the way the
run's dataset stores images (convkit.data.images.load_image, the one conversion inspect and the
web page use too), in batches, with the top classes by name.

A run folder predicts with PyTorch; an exported .onnx file predicts with onnxruntime alone (this
module imports torch only for a run folder). A file that cannot be read is reported by name
and reason, and every other file is still predicted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convkit.data.images import MAX_PIXELS, conversion_options, load_image
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

    @property
    def options(self) -> dict[str, bool]:
        """How user images are converted for this model."""
        return conversion_options(self.dataset, self.image_shape)


def open_predictor(target: str | Path) -> Predictor:
    """A run folder (its kept weights, with PyTorch) or an exported .onnx file (onnxruntime)."""
    target = Path(target)
    if target.suffix == ".onnx":
        from convkit.use.onnx_model import OnnxClassifier

        onnx = OnnxClassifier(target)
        return Predictor(
            onnx.classes, onnx.image_shape, onnx.dataset, onnx.probabilities, str(target)
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

    return Predictor(kept.classes, kept.image_shape, kept.cfg.dataset, probabilities, str(run_dir))


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


def _decode_threads(files: list[Path], sample: int = 64) -> int:
    """Threads for decoding: Pillow releases the GIL while it decodes, which pays for photos;
    small files (a 28x28 PNG decodes in ~0.1 ms) are faster in one thread, where the Python
    around each decode is not fighting over the GIL (10,000 MNIST PNGs: 3,020 images/s with
    one thread, 2,300 with two or four, measured on 2 cores)."""
    sizes = [f.stat().st_size for f in files[:sample] if f.is_file()]
    big = sizes and sum(sizes) / len(sizes) > 256 * 1024
    return min(4, os.cpu_count() or 1) if big else 1


def predict_files(
    predictor: Predictor,
    files: list[Path],
    *,
    top_k: int = 5,
    batch_size: int = 256,
    max_pixels: int = MAX_PIXELS,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Prediction | Failure]:
    """Predict `files` in batches, in order: a Prediction or a Failure for each."""
    if top_k < 1:
        raise ConfigError(f"expected --top-k >= 1, received {top_k}")
    k = min(top_k, len(predictor.classes))

    def load(path: Path) -> dict[str, Any] | Failure:
        try:
            return load_image(
                path, predictor.image_shape, max_pixels=max_pixels, **predictor.options
            )
        except ConvkitError as exc:
            return Failure(str(path), str(exc))

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
                yield Prediction(item["path"], top, item["conversion"])
            if progress:
                progress(len(loaded))
