"""Export a run's kept model (or any model) to one self-contained ONNX file, checked before it
appears.

The graph takes the images exactly as the datasets store them, uint8 (N, C, H, W) with a
dynamic batch axis, and gives softmax probabilities (N, classes): the scaling by 1/255 and the
run's normalisation are inside it, so using the file needs onnxruntime and nothing of convkit
(see `convkit.use.onnx_model.OnnxClassifier`). Its metadata carries the classes, the input
shape, the preprocessing and where the weights came from.

Every export is run with onnxruntime against the PyTorch model, in fp32, on real images where
there are any: a difference beyond tolerance is an error and leaves no file behind.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import convkit
from convkit.data import to_float
from convkit.data.images import conversion_options
from convkit.errors import ConvkitError
from convkit.fileio import atomic_path
from convkit.runs import KeptModel, Run, load_data
from convkit.use.onnx_model import INSTALL, OnnxClassifier

INPUT, OUTPUT = "images", "probabilities"  # the graph's input and output names
# On probabilities. onnxruntime vs torch measured 2e-8 .. 3e-5 on the registered models
# (untrained) and 7e-7 on a trained mnist-cnn; resnet101/152 reach 1e-3, but PyTorch's own fp32
# is as far from fp64 there (rounding, not the export): pass a larger `atol` for such a model.
ATOL = 1e-4
MIN_AGREEMENT = 0.999  # top-1 agreement the check requires
CHECK_IMAGES = 1000  # test images the check uses by default
RANDOM_IMAGES = 100  # random images it uses when the run's dataset cannot be loaded
BATCH = 250  # images per forward pass in the check
DEPENDENCIES = ("onnx", "onnxscript", "onnxruntime")


class ExportCheckError(ConvkitError):
    """The exported graph disagreed with the PyTorch model; `.report` holds the figures."""

    def __init__(self, message: str, report: ExportReport):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely the file agrees with the PyTorch model."""

    path: Path
    opset: int
    input_shape: tuple[int, int, int]  # (C, H, W) of the uint8 images; the batch axis is free
    classes: tuple[str, ...]
    max_prob_diff: float  # largest |onnxruntime - torch| over all probabilities checked
    top1_agreement: float  # fraction of checked images with the same top-1 class
    images_checked: int
    check_source: str  # which images: "the first 1000 mnist test images", "random ..."
    tolerance: float  # the largest max_prob_diff accepted
    size_bytes: int
    seconds: float  # export and check together

    @property
    def passed(self) -> bool:
        # written so that a NaN difference fails
        return self.max_prob_diff <= self.tolerance and self.top1_agreement >= MIN_AGREEMENT

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "passed": self.passed}


class ImageClassifier(nn.Module):
    """The graph that is exported: uint8 images (N, C, H, W) -> float / 255 -> the run's
    normalisation -> the model -> softmax probabilities (N, classes)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", None if mean is None else mean.to(torch.float32).clone())
        self.register_buffer("std", None if std is None else std.to(torch.float32).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images, self.mean, self.std)  # the very function training used
        return torch.softmax(self.model(x), dim=1)


def export_onnx(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    opset: int | None = None,
    check_images: torch.Tensor | None = None,
    data_dir: str | Path | None = None,
    download: bool = False,
    atol: float = ATOL,
    log=print,
) -> ExportReport:
    """Export a run's kept model to ONNX (default: the run's own model.onnx) and check it.

    The check uses `check_images` (uint8 (N, C, H, W)) when given, else up to 1,000 images of
    the run's test split (looked for in `data_dir` and the usual places; downloaded only with
    `download`), else random images, which the report then names. `atol` bounds the largest
    probability difference accepted."""
    run = Run.open(run_dir)
    kept = run.kept_model()
    source = "the given images"
    if check_images is None:
        check_images, source = _test_images(kept, data_dir, download, log)
    return export_model(
        kept.classifier,  # with the run's test-time augmentation: it predicts as tested
        run.onnx_path if out is None else out,
        kept.image_shape,
        kept.classes,
        kept.mean,
        kept.std,
        opset=opset,
        check_images=check_images,
        check_source=source,
        metadata={
            "model": kept.cfg.model,
            "dataset": kept.cfg.dataset,
            "epoch": kept.epoch,
            # how a user's image becomes the uint8 input: convkit.data.images.load_image with
            "conversion": conversion_options(kept.cfg.dataset, kept.image_shape, kept.cfg.fit),
        },
        atol=atol,
        log=log,
    )


def export_model(
    model: nn.Module,
    out: str | Path,
    image_shape: tuple[int, int, int],
    classes: tuple[str, ...] | list[str],
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    *,
    opset: int | None = None,
    check_images: torch.Tensor | None = None,
    check_source: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    atol: float = ATOL,
    log=print,
) -> ExportReport:
    """Export `model` (CPU, fp32; put in eval mode) behind its preprocessing to the ONNX file
    `out`, with `metadata` added to convkit's own; run the file against the model on
    `check_images` (uint8 (N, C, H, W); default: 100 random images) and write it only when
    they agree: probabilities within `atol`, top-1 classes on 99.9% of the images. Raises
    ExportCheckError, a ConvkitError, when they do not."""
    started = time.perf_counter()
    require_dependencies()
    _check_model(model)
    out, image_shape, classes = _checked_target(out, image_shape, classes, opset)
    images, source = _checked_images(check_images, image_shape, check_source)
    wrapper = ImageClassifier(model, mean, std).eval()
    props = {**_strings(metadata or {}), **_metadata(image_shape, classes, wrapper)}
    try:
        with atomic_path(out) as tmp:
            used = _write_onnx(wrapper, image_shape, opset, props, tmp)
            diff, agreement = compare(tmp, wrapper, images)
            report = ExportReport(
                out, used, image_shape, classes, diff, agreement, len(images), source, atol,
                tmp.stat().st_size, time.perf_counter() - started,
            )  # fmt: skip
            if not report.passed:
                raise ExportCheckError(_disagreement(report), report)
    except OSError as exc:
        raise ConvkitError(f"cannot write {out}: {exc.strerror or exc}") from None
    log(
        f"Wrote {out} ({report.size_bytes / 1e6:.1f} MB, opset {used}); checked on {source}: "
        f"top-1 agreement {report.top1_agreement:.2%}, largest probability difference "
        f"{diff:.1e} (tolerance {atol:g})"
    )
    return report


def require_dependencies() -> None:
    """Raise one ConvkitError naming what ONNX export lacks, and how to install it."""
    missing = []
    for name in DEPENDENCIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConvkitError(
            f"ONNX export needs {', '.join(missing)}, not installed here; install the export "
            f"extra with: {INSTALL}"
        )


def compare(path: Path, wrapper: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """(largest |onnxruntime - torch| probability, top-1 agreement) of the file at `path` and
    `wrapper` on uint8 `images`, both in fp32."""
    onnx_probs = OnnxClassifier(path).probabilities(images.numpy())
    with torch.inference_mode():
        torch_probs = torch.cat(
            [wrapper(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
        )
    torch_probs = torch_probs.numpy()
    diff = float(np.abs(onnx_probs - torch_probs).max())
    agreement = float((onnx_probs.argmax(1) == torch_probs.argmax(1)).mean())
    return diff, agreement


# ---- the pieces --------------------------------------------------------------------------------


def _write_onnx(
    wrapper: nn.Module, image_shape: tuple[int, int, int], opset: int | None, props, path: Path
) -> int:
    """Export `wrapper` to `path` as one file with `props` as metadata; the opset written."""
    example = torch.zeros((2, *image_shape), dtype=torch.uint8)  # batch 2: 1 would specialise
    with _quiet_exporter():
        try:
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, external_data=False, verbose=False,
                opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
        except Exception as exc:  # torch.export and the exporter raise many types
            cause = exc.__cause__ or exc
            raise ConvkitError(
                f"cannot export the model to ONNX with input (N, "
                f"{', '.join(map(str, image_shape))}): {_first_line(cause)}"
            ) from exc
    used = program.model.opset_imports.get("", 0)
    if opset is not None and used != opset:
        raise ConvkitError(
            f"the exporter cannot write opset {opset} for this model (it wrote {used}); "
            f"choose 18 or later, or leave the default"
        )
    program.model.metadata_props.update(props)
    program.save(path, external_data=False)
    return used


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's noise for the export only: a warning per torchvision operator
    it cannot find, torch.export's FutureWarnings, onnxscript's version-converter notes, and
    the tracebacks torch logs when a model cannot be traced (the exception carries them)."""
    quiet = {"torch": logging.CRITICAL, "torch.onnx": logging.ERROR, "onnxscript": logging.ERROR}
    loggers = [logging.getLogger(name) for name in quiet]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for lg, level in zip(loggers, quiet.values(), strict=True):
            lg.setLevel(level)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _metadata(
    image_shape: tuple[int, int, int], classes: tuple[str, ...], wrapper: ImageClassifier
) -> dict[str, str]:
    """convkit's own metadata_props: what OnnxClassifier needs, and provenance."""
    norm = None if wrapper.mean is None else (wrapper.mean.tolist(), wrapper.std.tolist())
    preprocessing = {
        "input": f"{INPUT}: uint8 (N, C, H, W), as the dataset stores its images",
        "scale": 1 / 255,
        "mean": norm and norm[0],  # per channel, on the [0, 1] scale; null: not standardised
        "std": norm and norm[1],
        "output": f"{OUTPUT}: softmax (N, classes)",
    }
    versions = {name: importlib.import_module(name).__version__ for name in DEPENDENCIES}
    return {
        "convkit_version": convkit.__version__,
        "classes": json.dumps(list(classes)),
        "input_shape": json.dumps(list(image_shape)),
        "preprocessing": json.dumps(preprocessing),
        "versions": json.dumps({"torch": torch.__version__, **versions}),
    }


def _strings(metadata: Mapping[str, Any]) -> dict[str, str]:
    """metadata_props hold strings: strings stay as they are, anything else becomes JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def _checked_target(out, image_shape, classes, opset) -> tuple[Path, tuple[int, ...], tuple]:
    out = Path(out)
    if out.is_dir():
        raise ConvkitError(f"{out} is a folder; give the file to write, e.g. {out / 'model.onnx'}")
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(n, int) and n >= 1 for n in shape):
        raise ConvkitError(f"expected image_shape (C, H, W) of positive ints, received {shape}")
    if len(classes) < 1:
        raise ConvkitError("expected at least one class name, received none")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise ConvkitError(f"expected opset to be a positive int, received opset={opset!r}")
    return out, shape, tuple(classes)


def _check_model(model: nn.Module) -> None:
    found = {(p.dtype, p.device.type) for p in model.parameters()} - {(torch.float32, "cpu")}
    if found:
        dtype, device = sorted(found, key=str)[0]
        raise ConvkitError(
            f"expected a CPU fp32 model to export, received {dtype} parameters on {device}; "
            f"call model.float().cpu() first"
        )


def _checked_images(images, image_shape, source) -> tuple[torch.Tensor, str]:
    if images is None:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(
            0, 256, (RANDOM_IMAGES, *image_shape), dtype=torch.uint8, generator=g
        )
        return images, source or f"{RANDOM_IMAGES} random images"
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != image_shape:
        raise ConvkitError(
            f"expected check images uint8 (N, {', '.join(map(str, image_shape))}), received "
            f"{str(images.dtype).removeprefix('torch.')} {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ConvkitError("expected at least one check image, received none")
    return images, source or f"{len(images)} given images"


def _test_images(kept: KeptModel, data_dir, download: bool, log) -> tuple[torch.Tensor | None, str]:
    """Up to CHECK_IMAGES images of the run's test split, or (None, why random images)."""
    name = kept.cfg.dataset
    try:
        dataset, _ = load_data(kept.cfg, data_dir=data_dir, download=download, log=log)
        test = dataset.test.images
    except ConvkitError as exc:
        log(f"Checking on random images: dataset {name} cannot be loaded ({_first_line(exc)})")
        return None, f"{RANDOM_IMAGES} random images (dataset {name} cannot be loaded)"
    if tuple(test.shape[1:]) != kept.image_shape:
        return None, f"{RANDOM_IMAGES} random images ({name}'s images are not {kept.image_shape})"
    test = test[:CHECK_IMAGES]
    return test, f"the first {len(test)} {name} test images"


def _disagreement(r: ExportReport) -> str:
    return (
        f"the exported model disagrees with PyTorch on {r.check_source}: largest probability "
        f"difference {r.max_prob_diff:.2e} (tolerance {r.tolerance:g}), top-1 agreement "
        f"{r.top1_agreement:.2%} (needs {MIN_AGREEMENT:.1%}); nothing was written to {r.path}. "
        f"Try another --opset; if it persists, report it with the model's name"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
