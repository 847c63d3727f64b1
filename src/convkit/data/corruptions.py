"""Common image corruptions at five severities, on whole uint8 batches, for `convkit robustness`.

Two tables, chosen by the images' shape:

- grey images (1 channel): MNIST-C (Mu & Gilmer 2019, arXiv:1906.02337), whose constants are
  for 28 x 28 digits. MNIST-C published each corruption at one severity (the default of its
  functions, kept here as `mnist_c_severity`), but its functions define five.
- colour images (3 channels): CIFAR-10-C (Hendrycks & Dietterich 2019, arXiv:1903.12261),
  whose constants are for 32 x 32 images.

The definitions and constants come from the papers and their published generators
(google-research/mnist-c `corruptions.py`, hendrycks/robustness `make_cifar_c.py`); the code
here is our own, vectorised over the batch with torch and numpy (no per-image Python loop,
except around Pillow's JPEG codec). The generators used skimage, scipy, OpenCV and ImageMagick;
where we reproduce one of their operations we say which, and with which conventions.

Choices of ours, the same for every corruption:

- The papers cast their float results to uint8 (np.uint8 truncates); we round to the nearest
  level, so a pixel a corruption leaves alone stays exactly as it was (at most 1 level apart).
- Random draws come from one torch.Generator seeded with `seed` and are made for the whole
  batch, so the result is deterministic for (images, name, severity, seed), and the five
  severities of a corruption share their draws (severity 3 is severity 2 made stronger).
- Images of another size than 28 x 28 (grey) or 32 x 32 (colour) get the pixel-valued
  constants (blur radii and sigmas, swap distances, elastic and translation distances, the fog
  fractal's size) multiplied by size / 28 or size / 32, size being the mean of height and
  width; fractions (pixelate), zoom factors, angles and intensities stay as they are.

Quirks of the generators that we keep, because the published datasets have them: MNIST-C's
Gaussian and glass blurs run down the columns only (skimage took the grey image's columns for
colour channels); CIFAR-10-C's glass blur copies neighbours where it meant to swap them (numpy
views); the defocus kernels of radius 8 and more sum to about 1.01 (cv2's softening mirrors at
the kernel's edge); zoom factors are np.arange's, endpoint rounding included.

Left out: frost (it blends in photographs of frost the generators ship as files), CIFAR-10-C's
spatter (its water drops need Canny edges, a distance transform and histogram equalization),
and MNIST-C's corruptions that have no severities (stripe, line, dotted line, zigzag, inverse,
Canny edges) or whose severities 1 to 3 leave grey images unchanged (saturate)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import io
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from convkit.errors import ConfigError

MNIST_C = "MNIST-C (Mu & Gilmer 2019)"
CIFAR_10_C = "CIFAR-10-C (Hendrycks & Dietterich 2019)"
SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """One corruption of a paper's table: its constants for severities 1..5, as the paper's."""

    name: str  # the paper's function name, e.g. "gaussian_noise"
    family: str  # "noise" | "blur" | "weather" | "digital" (ImageNet-C's four groups)
    source: str  # MNIST_C or CIFAR_10_C
    constants: tuple  # one entry per severity 1..5, exactly as the paper's table
    description: str  # what it does, in one line
    mnist_c_severity: int | None = None  # the one severity MNIST-C published (MNIST-C only)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- the tables ---------------------------------------------------------------------------------
# Pixel-valued constants are for 28 x 28 (MNIST-C) and 32 x 32 (CIFAR-10-C) images; elastic's
# are written as the papers write them, multiples of the image size. zoom_blur's entries are the
# (start, stop, step) of the np.arange of zoom factors the papers use.


def _entry(name, family, source, constants, description, mnist_c_severity=None):
    return Corruption(name, family, source, tuple(constants), description, mnist_c_severity)


_MNIST_TABLE = (
    _entry(
        "gaussian_noise",
        "noise",
        MNIST_C,
        (0.08, 0.12, 0.18, 0.26, 0.38),
        "adds Gaussian noise of this standard deviation (pixels in [0, 1]) to every pixel",
        5,
    ),
    _entry(
        "shot_noise",
        "noise",
        MNIST_C,
        (60, 25, 12, 5, 3),
        "replaces each pixel by a Poisson photon count of mean pixel x c, divided by c",
        5,
    ),
    _entry(
        "impulse_noise",
        "noise",
        MNIST_C,
        (0.03, 0.06, 0.09, 0.17, 0.27),
        "sets this fraction of the pixels to black or white (salt and pepper, half each)",
        4,
    ),
    _entry(
        "speckle_noise",
        "noise",
        MNIST_C,
        (0.15, 0.2, 0.35, 0.45, 0.6),
        "adds noise proportional to the pixel: x + x * N(0, c^2)",
        5,
    ),
    _entry(
        "gaussian_blur",
        "blur",
        MNIST_C,
        (1, 2, 3, 4, 6),
        "blurs with a Gaussian of this sigma in pixels (edges extended)",
        2,
    ),
    _entry(
        "glass_blur",
        "blur",
        MNIST_C,
        ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "(sigma, distance, passes): blurs, swaps pixels with random near neighbours, blurs again",
        1,
    ),
    _entry(
        "defocus_blur",
        "blur",
        MNIST_C,
        ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "(radius, softening): averages over a disk of this radius, as an out-of-focus lens",
        1,
    ),
    _entry(
        "motion_blur",
        "blur",
        MNIST_C,
        ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "(radius, sigma): smears along a random direction within 45 degrees of horizontal",
        1,
    ),
    _entry(
        "zoom_blur",
        "blur",
        MNIST_C,
        ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "(start, stop, step) of zoom factors: averages the image with its centre zoomed by each",
        5,
    ),
    _entry(
        "fog",
        "weather",
        MNIST_C,
        ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        "(strength, roughness decay): adds a plasma-fractal haze and lowers the contrast",
        5,
    ),
    _entry(
        "snow",
        "weather",
        MNIST_C,
        (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
        "(mean, std, zoom, threshold, radius, sigma, blend): falling flakes over a whitened image",
        5,
    ),
    _entry(
        "spatter",
        "weather",
        MNIST_C,
        (
            (0.65, 0.3, 4, 0.69, 0.6, 0),
            (0.65, 0.3, 3, 0.68, 0.6, 0),
            (0.65, 0.3, 2, 0.68, 0.5, 0),
            (0.65, 0.3, 1, 0.65, 1.5, 1),
            (0.67, 0.4, 1, 0.65, 1.5, 1),
        ),
        "(mean, std, sigma, threshold, mask sigma, unused): dark grey mud blotches",
        4,
    ),
    _entry(
        "contrast",
        "digital",
        MNIST_C,
        (0.4, 0.3, 0.2, 0.1, 0.05),
        "pulls every pixel towards the image's mean, keeping this fraction of the difference",
        4,
    ),
    _entry(
        "brightness",
        "weather",
        MNIST_C,
        (0.1, 0.2, 0.3, 0.4, 0.5),
        "adds this much to the HSV value (brightness) of every pixel",
        5,
    ),
    _entry(
        "jpeg_compression",
        "digital",
        MNIST_C,
        (25, 18, 15, 10, 7),
        "encodes as JPEG at this quality (Pillow) and decodes",
        5,
    ),
    _entry(
        "pixelate",
        "digital",
        MNIST_C,
        (0.6, 0.5, 0.4, 0.3, 0.25),
        "shrinks to this fraction of the size and enlarges back, both with Pillow's box filter",
        3,
    ),
    _entry(
        "elastic_transform",
        "digital",
        MNIST_C,
        (
            (28 * 2, 28 * 0.7, 28 * 0.1),
            (28 * 2, 28 * 0.08, 28 * 0.2),
            (28 * 0.05, 28 * 0.01, 28 * 0.02),
            (28 * 0.07, 28 * 0.01, 28 * 0.02),
            (28 * 0.12, 28 * 0.01, 28 * 0.02),
        ),
        "(alpha, sigma, jitter): random affine warp, then a smooth random displacement field",
        1,
    ),
    _entry(
        "quantize",
        "digital",
        MNIST_C,
        (5, 4, 3, 2, 1),
        "keeps this many bits per pixel (2^bits evenly spaced grey levels)",
        5,
    ),
    _entry(
        "shear",
        "digital",
        MNIST_C,
        (0.2, 0.4, 0.6, 0.8, 1.0),
        "shears by this angle in radians, either way at random, about the centre",
        2,
    ),
    _entry(
        "rotate",
        "digital",
        MNIST_C,
        (0.2, 0.4, 0.6, 0.8, 1.0),
        "rotates by this angle in radians, either way at random, about the centre",
        2,
    ),
    _entry(
        "scale",
        "digital",
        MNIST_C,
        (
            (1 / 0.9, 1 / 0.9),
            (1 / 0.8, 1 / 0.8),
            (1 / 0.7, 1 / 0.7),
            (1 / 0.6, 1 / 0.6),
            (1 / 0.5, 1 / 0.5),
        ),
        "(x, y) factors: shrinks about the centre, the image shown 1 / factor its size",
        3,
    ),
    _entry(
        "translate",
        "digital",
        MNIST_C,
        (1, 2, 3, 4, 5),
        "shifts by this many pixels across and down, each way at random",
        3,
    ),
)

_CIFAR_TABLE = (
    _entry(
        "gaussian_noise",
        "noise",
        CIFAR_10_C,
        (0.04, 0.06, 0.08, 0.09, 0.10),
        "adds Gaussian noise of this standard deviation (pixels in [0, 1]) to every value",
    ),
    _entry(
        "shot_noise",
        "noise",
        CIFAR_10_C,
        (500, 250, 100, 75, 50),
        "replaces each value by a Poisson photon count of mean value x c, divided by c",
    ),
    _entry(
        "impulse_noise",
        "noise",
        CIFAR_10_C,
        (0.01, 0.02, 0.03, 0.05, 0.07),
        "sets this fraction of the values (each channel apart) to 0 or 1, half each",
    ),
    _entry(
        "defocus_blur",
        "blur",
        CIFAR_10_C,
        ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "(radius, softening): averages over a disk of this radius, as an out-of-focus lens",
    ),
    _entry(
        "glass_blur",
        "blur",
        CIFAR_10_C,
        ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "(sigma, distance, passes): blurs, copies in pixels from random neighbours, blurs again",
    ),
    _entry(
        "motion_blur",
        "blur",
        CIFAR_10_C,
        ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "(radius, sigma): smears along a random direction within 45 degrees of horizontal",
    ),
    _entry(
        "zoom_blur",
        "blur",
        CIFAR_10_C,
        ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
        "(start, stop, step) of zoom factors: averages the image with its centre zoomed by each",
    ),
    _entry(
        "snow",
        "weather",
        CIFAR_10_C,
        (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "(mean, std, zoom, threshold, radius, sigma, blend): falling flakes over a whitened image",
    ),
    _entry(
        "fog",
        "weather",
        CIFAR_10_C,
        ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "(strength, roughness decay): adds a plasma-fractal haze and lowers the contrast",
    ),
    _entry(
        "brightness",
        "weather",
        CIFAR_10_C,
        (0.05, 0.1, 0.15, 0.2, 0.3),
        "adds this much to the HSV value (brightness) of every pixel, hue and saturation kept",
    ),
    _entry(
        "contrast",
        "digital",
        CIFAR_10_C,
        (0.75, 0.5, 0.4, 0.3, 0.15),
        "pulls each channel towards its mean, keeping this fraction of the difference",
    ),
    _entry(
        "elastic_transform",
        "digital",
        CIFAR_10_C,
        (
            (32 * 0, 32 * 0, 32 * 0.08),
            (32 * 0.05, 32 * 0.2, 32 * 0.07),
            (32 * 0.08, 32 * 0.06, 32 * 0.06),
            (32 * 0.1, 32 * 0.04, 32 * 0.05),
            (32 * 0.1, 32 * 0.03, 32 * 0.03),
        ),
        "(alpha, sigma, jitter): random affine warp, then a smooth random displacement field",
    ),
    _entry(
        "pixelate",
        "digital",
        CIFAR_10_C,
        (0.95, 0.9, 0.85, 0.75, 0.65),
        "shrinks to this fraction of the size and enlarges back, both with Pillow's box filter",
    ),
    _entry(
        "jpeg_compression",
        "digital",
        CIFAR_10_C,
        (80, 65, 58, 50, 40),
        "encodes as JPEG at this quality (Pillow) and decodes",
    ),
    _entry(
        "speckle_noise",
        "noise",
        CIFAR_10_C,
        (0.06, 0.1, 0.12, 0.16, 0.2),
        "adds noise proportional to the value: x + x * N(0, c^2)",
    ),
    _entry(
        "gaussian_blur",
        "blur",
        CIFAR_10_C,
        (0.4, 0.6, 0.7, 0.8, 1),
        "blurs with a Gaussian of this sigma in pixels (edges extended)",
    ),
    _entry(
        "saturate",
        "digital",
        CIFAR_10_C,
        ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
        "(factor, offset): sets the HSV saturation to factor x saturation + offset",
    ),
)

_TABLES = {1: _MNIST_TABLE, 3: _CIFAR_TABLE}
_REFERENCE_SIZE = {1: 28, 3: 32}  # the image size the pixel-valued constants are for

# The names used when the user names none. CIFAR-10-C: its 15 corruptions less frost. MNIST-C:
# the 11 of its 15 published corruptions that have severities (all but stripe, dotted line,
# zigzag and Canny edges), plus Gaussian noise, contrast, pixelate, JPEG and elastic, so that
# both tables cover the families of the CIFAR-10-C benchmark.
DEFAULT_CORRUPTIONS: dict[int, tuple[str, ...]] = {  # keyed by the number of channels
    1: (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "glass_blur",
        "motion_blur",
        "fog",
        "spatter",
        "contrast",
        "brightness",
        "jpeg_compression",
        "pixelate",
        "elastic_transform",
        "shear",
        "rotate",
        "scale",
        "translate",
    ),
    3: (
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "defocus_blur",
        "glass_blur",
        "motion_blur",
        "zoom_blur",
        "snow",
        "fog",
        "brightness",
        "contrast",
        "elastic_transform",
        "pixelate",
        "jpeg_compression",
    ),
}


def _channels(image_shape) -> int:
    try:
        shape = tuple(operator.index(d) for d in image_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"expected an image shape (C, H, W), received image_shape={image_shape!r}"
        )
    if shape[0] not in _TABLES:
        raise ConfigError(
            f"corruptions are defined for 1-channel (MNIST-C) and 3-channel (CIFAR-10-C) images, "
            f"received image_shape={shape}"
        )
    return shape[0]


def corruption_table(image_shape: tuple[int, int, int]) -> dict[str, Corruption]:
    """The table for images of this (C, H, W): MNIST-C for 1 channel, CIFAR-10-C for 3, in the
    paper's order."""
    return {c.name: c for c in _TABLES[_channels(image_shape)]}


def default_corruptions(image_shape: tuple[int, int, int]) -> tuple[str, ...]:
    """DEFAULT_CORRUPTIONS for images of this (C, H, W)."""
    return DEFAULT_CORRUPTIONS[_channels(image_shape)]


def check_corruptions(names: Iterable[str] | None, image_shape: tuple[int, int, int]) -> list[str]:
    """The names, checked against the table for this image shape, without repeats; None or no
    names give the defaults. An unknown name raises ConfigError with the known ones."""
    table = corruption_table(image_shape)
    if isinstance(names, str):  # "fog, snow" as typed on a command line
        names = names.split(",")
    names = [str(n).strip() for n in names] if names is not None else []
    if not names:
        return list(default_corruptions(image_shape))
    for name in names:
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown corruption {name!r} for {image_shape[0]}-channel images "
                f"({table[next(iter(table))].source}); known: {', '.join(table)}{hint}"
            )
    return list(dict.fromkeys(names))


# ---- the entry point ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    """What an implementation needs besides the images."""

    c: object  # the constants of this severity
    grey: bool  # the MNIST-C table (its variants differ from CIFAR-10-C's in places)
    scale: float  # image size / the size the paper's pixel constants are for
    generator: torch.Generator

    def px(self, value: float) -> float:
        """A pixel-valued constant scaled to this image size."""
        return value * self.scale


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """The images (N, C, H, W) uint8 with corruption `name` at `severity` (1..5) applied;
    uint8 of the same shape, the same for the same seed."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        what = (
            f"{images.dtype} of shape {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ConfigError(f"expected uint8 images (N, C, H, W), received {what}")
    n, ch, h, w = images.shape
    table = corruption_table((ch, h, w))
    if not isinstance(name, str):
        raise ConfigError(f"expected a corruption name, received name={name!r}")
    (name,) = check_corruptions([name], (ch, h, w))
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise ConfigError(f"expected a severity 1..5, received severity={severity!r}")
    if severity not in SEVERITIES:
        raise ConfigError(f"expected a severity 1..5, received severity={severity}")
    if n == 0:
        return images.clone()
    setting = _Setting(
        c=table[name].constants[int(severity) - 1],
        grey=ch == 1,
        scale=(h + w) / (2 * _REFERENCE_SIZE[ch]),
        generator=torch.Generator().manual_seed(int(seed)),
    )
    device = images.device
    out = _IMPLEMENTATIONS[name](images.cpu().contiguous(), setting)
    return out.to(device)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32).mul_(1.0 / 255.0)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8, rounded to the nearest level (see the module's notes)."""
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _uniform(shape, low: float, high: float, g: torch.Generator, dtype=torch.float32):
    return torch.rand(shape, generator=g, dtype=dtype).mul_(high - low).add_(low)


# ---- noise --------------------------------------------------------------------------------------


def _gaussian_noise(images, s: _Setting):
    x = _to_float(images)
    return _to_uint8(x + s.c * torch.randn(x.shape, generator=s.generator))


def _speckle_noise(images, s: _Setting):
    x = _to_float(images)
    return _to_uint8(x + x * s.c * torch.randn(x.shape, generator=s.generator))


def _impulse_noise(images, s: _Setting):
    """skimage's salt and pepper: each value is hit with probability c, then white or black
    with probability 1/2 each; one uniform draw decides both."""
    u = torch.rand(images.shape, generator=s.generator)
    out = images.clone()
    out[u < s.c] = 255
    out[u < s.c / 2] = 0
    return out


def _shot_noise(images, s: _Setting):
    """Poisson(x c) / c, clipped to 1. The rate takes one of 256 values (one per grey level) and
    the result one of 256 levels, so we sample by inverting each level's cumulative distribution
    over the result's levels. A uniform u in [0, 1) is drawn as its top 12 bits, r, and the rest;
    a table over (level, r) gives the result for all r whose bin [r, r + 1) / 2^12 holds no step
    of the cdf, and for the few others (about 1%) the rest of u is drawn and the cdf walked.
    Exact (to float64), and many times faster than drawing Poisson counts one by one."""
    cdf, first, unsure_bin = _shot_noise_tables(float(s.c))
    level = images.reshape(-1).to(torch.int32)
    r = torch.randint(0, _BINS, level.shape, generator=s.generator, dtype=torch.int32)
    at = level * _BINS + r
    out = first.index_select(0, at)  # the smallest level whose cdf exceeds r / 2^12
    unsure = torch.nonzero(unsure_bin.index_select(0, at)).flatten()
    if len(unsure):
        rest = torch.rand(len(unsure), generator=s.generator, dtype=torch.float64)
        u = (r[unsure].to(torch.float64) + rest) / _BINS
        row, value = level[unsure].long() * 256, out[unsure].long()
        todo = torch.arange(len(unsure))
        while len(todo):  # walk up while the cdf is still at or below u: a step or two
            ahead = cdf[row[todo] + value[todo]] <= u[todo]
            todo = todo[ahead]
            value[todo] += 1
        out[unsure] = value.to(torch.uint8)
    return out.reshape(images.shape)


_BINS = 1 << 12  # bins of the uniform draw in the shot-noise tables


@functools.lru_cache(maxsize=16)
def _shot_noise_tables(c: float):
    """For each input level l and output level v, the cdf P(round(255 min(Poisson(l c / 255) /
    c, 1)) <= v), (256 * 256,) float64; and over (l, r), (256 * 2^12,) each, the smallest v whose
    cdf exceeds r / 2^12 (uint8), and whether a step of the cdf falls inside [r, r + 1) / 2^12."""
    top = math.ceil(c)  # counts >= c all give 255: one outcome
    k = np.arange(top + 1, dtype=np.float64)
    rate = np.arange(256, dtype=np.float64)[:, None] / 255.0 * c  # (256, 1)
    log_rate = np.log(np.where(rate > 0, rate, 1.0))
    log_pmf = k * log_rate - rate - np.array([math.lgamma(v + 1) for v in k])
    pmf = np.where(rate > 0, np.exp(log_pmf), (k == 0).astype(np.float64))  # rate 0: always 0
    cdf_count = np.cumsum(pmf, axis=1)
    cdf_count[:, -1] = 1.0  # the last count holds the whole tail
    level_of_count = np.round(np.minimum(k / c, 1.0) * 255)  # non-decreasing in the count
    last = np.searchsorted(level_of_count, np.arange(256), side="right") - 1  # (256,)
    cdf = np.where(last >= 0, cdf_count[:, np.maximum(last, 0)], 0.0)
    cdf[:, -1] = 1.0
    grid = np.arange(_BINS + 1) / _BINS
    edges = np.stack([np.searchsorted(row, grid, side="right") for row in cdf])  # (256, B + 1)
    first = edges[:, :-1].astype(np.uint8)  # u < 1, so never past level 255
    unsure = edges[:, 1:] > edges[:, :-1]
    return (
        torch.from_numpy(cdf.reshape(-1)),
        torch.from_numpy(first.reshape(-1)),
        torch.from_numpy(unsure.reshape(-1)),
    )


# ---- linear filters as matrices -----------------------------------------------------------------
# A filter with a boundary rule is a linear map on each row (or on the whole image), so we build
# its matrix once (numpy, float64) and apply it to the batch with one matrix product. The
# boundary rules, in scipy's names: "nearest" repeats the edge pixel (skimage's default, cv2's
# BORDER_REPLICATE), "reflect" mirrors about the edge of the image, the edge pixel repeated
# (d c b a | a b c d), "mirror" mirrors about the edge pixel (d c b | a b c d; cv2's default
# BORDER_REFLECT_101) and "constant" reads zeros outside.


def _fold(index: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Indices anywhere on the line -> 0..n-1 under the boundary rule; -1 for "constant" outside."""
    if mode == "nearest":
        return np.clip(index, 0, n - 1)
    if mode == "reflect":
        m = np.mod(index, 2 * n)
        return np.where(m >= n, 2 * n - 1 - m, m)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(index)
        m = np.mod(index, 2 * n - 2)
        return np.where(m >= n, 2 * n - 2 - m, m)
    if mode == "constant":
        return np.where((index >= 0) & (index < n), index, -1)
    raise ValueError(f"unknown boundary mode {mode!r}")


def _filter_matrix(n: int, weights: np.ndarray, mode: str) -> np.ndarray:
    """(n, n) matrix of the correlation of a line of n pixels with `weights` (odd length, centred)."""
    r = len(weights) // 2
    rows = np.repeat(np.arange(n), len(weights))
    cols = _fold((np.arange(n)[:, None] + np.arange(-r, r + 1)).reshape(-1), n, mode)
    vals = np.tile(np.asarray(weights, dtype=np.float64), n)
    keep = cols >= 0
    out = np.zeros((n, n))
    np.add.at(out, (rows[keep], cols[keep]), vals[keep])
    return out


def _gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's Gaussian (skimage's gaussian uses it): radius int(truncate sigma + 0.5)."""
    if sigma <= 1e-15:
        return np.ones(1)
    r = int(truncate * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return w / w.sum()


@functools.lru_cache(maxsize=64)
def _gaussian_matrix(n: int, sigma: float, mode: str, truncate: float) -> torch.Tensor:
    return torch.from_numpy(_filter_matrix(n, _gaussian_weights(sigma, truncate), mode)).float()


def _separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """rows @ x @ cols.T for each image of x (..., H, W): a separable filter on the batch."""
    return torch.matmul(rows, x @ cols.T)


def _gaussian_blur_float(
    x, sigma: float, mode: str = "nearest", truncate: float = 4.0, down_only: bool = False
):
    """skimage.filters.gaussian (default mode "nearest", truncate 4) of each image and channel
    of x (..., H, W); down_only blurs along the columns alone (see _skimage_down_only)."""
    h, w = x.shape[-2:]
    rows = _gaussian_matrix(h, sigma, mode, truncate)
    if down_only:
        return torch.matmul(rows, x)
    return _separable(x, rows, _gaussian_matrix(w, sigma, mode, truncate))


def _skimage_down_only(s: _Setting) -> bool:
    """MNIST-C's gaussian_blur and glass_blur call skimage's gaussian(x, sigma,
    multichannel=True) on 2-D grey images; skimage then takes the last axis (the columns) for
    colour channels and blurs along the first alone: down each column, not across. The published
    MNIST-C glass blur was made so, and so is ours; CIFAR-10-C's colour images blur both ways."""
    return s.grey


class _ImageMap:
    """A linear map of whole images, from its matrix (H*W, H*W) float64, ready to apply to every
    image and channel of a batch (N, C, H, W). A sparse map (few inputs per output pixel) is
    applied as weighted sums of gathered rows of the transposed batch (embedding_bag's kernel),
    a dense one as one matrix product."""

    def __init__(self, matrix: np.ndarray) -> None:
        nonzero = matrix != 0
        width = int(nonzero.sum(axis=1).max())
        self.dense = width > len(matrix) // 8
        if self.dense:
            self.matrix_t = torch.from_numpy(matrix.T.astype(np.float32))
        else:
            order = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]  # nonzeros first
            self.cols = torch.from_numpy(order)
            self.vals = torch.from_numpy(np.take_along_axis(matrix, order, 1).astype(np.float32))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, ch, h, w = x.shape
        flat = x.reshape(n * ch, h * w)
        if self.dense:
            return (flat @ self.matrix_t).reshape(x.shape)
        table = flat.T.contiguous()  # (H*W, N*C): a pixel's values over the batch, in a row
        out = F.embedding_bag(self.cols, table, per_sample_weights=self.vals, mode="sum")
        return out.T.reshape(x.shape)


def _kernel_operator(h: int, w: int, kernel: np.ndarray, mode: str) -> np.ndarray:
    """(H*W, H*W) matrix of the correlation with a 2-D kernel (odd sizes, centred), as
    cv2.filter2D does it (its default border is "mirror")."""
    kh, kw = kernel.shape
    rr, cc = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = np.zeros((h * w, h * w))
    for dy in range(kh):
        src_r = _fold(rr + dy - kh // 2, h, mode)
        for dx in range(kw):
            if kernel[dy, dx] == 0:
                continue
            src_c = _fold(cc + dx - kw // 2, w, mode)
            np.add.at(out, ((rr * w + cc).ravel(), (src_r * w + src_c).ravel()), kernel[dy, dx])
    return out


# ---- blur ---------------------------------------------------------------------------------------


def _gaussian_blur(images, s: _Setting):
    x = _gaussian_blur_float(_to_float(images), s.px(s.c), down_only=_skimage_down_only(s))
    return _to_uint8(x)


def _disk_kernel(radius: float, softening: float) -> np.ndarray:
    """The papers' defocus kernel: a disk of this radius on the integer grid (normalised),
    softened by a cv2.GaussianBlur (3 x 3, or 5 x 5 above radius 8) of sigma `softening`,
    which mirrors at the kernel's own border; trimmed to its nonzero part."""
    half = 8 if radius <= 8 else math.ceil(radius)  # the papers: -8..8, or -radius..radius
    size = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * softening**2))  # cv2.getGaussianKernel
    m = _filter_matrix(len(grid), g / g.sum(), "mirror")
    kernel = m @ disk @ m.T
    kernel[kernel < 1e-12 * kernel.max()] = 0  # the softening's e^-50 tails: nothing
    rows, cols = np.nonzero(kernel)
    r = max(half - rows.min(), rows.max() - half, half - cols.min(), cols.max() - half)
    return kernel[half - r : half + r + 1, half - r : half + r + 1]


@functools.lru_cache(maxsize=32)
def _defocus_map(h: int, w: int, radius: float, softening: float) -> _ImageMap:
    return _ImageMap(_kernel_operator(h, w, _disk_kernel(radius, softening), "mirror"))


def _defocus_blur(images, s: _Setting):
    radius, softening = s.c
    _, _, h, w = images.shape
    return _to_uint8(_defocus_map(h, w, s.px(radius), softening)(_to_float(images)))


def _local_shuffle(images: torch.Tensor, delta: int, passes: int, s: _Setting) -> torch.Tensor:
    """Glass blur's pixel shuffling, for all images at once. Each pass visits the pixels from
    the bottom right to the top left (rows H-delta..delta+1, columns likewise) and moves in the
    pixel at a random offset (dy, dx), each from -delta to delta - 1 (numpy's randint excludes
    its upper end). The papers' code meant to swap the two pixels; with grey (2-D) images it
    does (and MNIST-C swaps with probability 1/2 only), but with colour images numpy's
    views make the "swap" a copy: the pixel takes its neighbour's colour and the neighbour keeps
    it. CIFAR-10-C was made that way, so colour images get the copy here too."""
    n, ch, h, w = images.shape
    # (H*W, N), one word a pixel: RGB packed into a uint32, so a colour moves in one step
    hwnc = images.permute(2, 3, 0, 1).reshape(h * w, n, ch).numpy()
    if ch == 1:
        pixels = np.ascontiguousarray(hwnc[:, :, 0])
    else:
        padded = np.zeros((h * w, n, 4), dtype=np.uint8)
        padded[:, :, :ch] = hwnc
        pixels = padded.view(np.uint32)[:, :, 0].copy()
    rows, cols = np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1)
    side = 2 * delta
    code = np.arange(side * side)
    moves = (code // side - delta) * w + (code % side - delta)  # a code -> a flat pixel offset
    if s.grey:  # MNIST-C: each visit swaps with probability 1/2: half the codes stay put
        moves = np.concatenate([moves, np.zeros_like(moves)])
    small = torch.int16 if len(moves) < 2**15 else torch.int32
    for _ in range(passes):
        codes = torch.randint(
            0, len(moves), (len(rows), len(cols), n), generator=s.generator, dtype=small
        ).numpy()
        _shuffle_pass(pixels, w, rows, cols, lambda r, codes=codes: moves[codes[r]], swap=s.grey)
    if ch == 1:
        out = pixels[:, :, None]
    else:
        out = pixels[:, :, None].view(np.uint8)[:, :, :ch]
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(h, w, n, ch).permute(2, 3, 0, 1)


def _shuffle_pass(pixels: np.ndarray, w: int, rows, cols, offsets, swap: bool) -> None:
    """One pass over pixels (H*W, N) in place: pixel (row, col) of image i takes the pixel
    offsets(r)[j, i] further on (a flat offset), for the r-th row and j-th column in the order
    given, and gives its own in exchange if `swap`. The visits depend on each other, so we loop
    over pixel positions, each one step for the whole batch."""
    n = pixels.shape[1]
    flat = pixels.reshape(-1)  # pixel p of image i at p * N + i
    image_index = np.arange(n)
    for r, row in enumerate(rows):
        here = row * w + np.asarray(cols)
        there = (here[:, None] + offsets(r)) * n + image_index  # (len(cols), N)
        for j, p in enumerate(here):
            moved_in = flat[there[j]]
            if swap:
                flat[there[j]] = pixels[p].copy()
            pixels[p] = moved_in


def _glass_blur(images, s: _Setting):
    """Blur (Gaussian of sigma), shuffle pixels locally (`passes` times, up to `delta` pixels
    away) and blur again, as frosted glass would."""
    sigma, delta, passes = s.c
    sigma, delta = s.px(sigma), max(1, round(s.px(delta)))
    down_only = _skimage_down_only(s)
    once = _gaussian_blur_float(_to_float(images), sigma, down_only=down_only)
    shuffled = _local_shuffle(_to_uint8(once), delta, passes, s).contiguous()  # uint8, as theirs
    return _to_uint8(_gaussian_blur_float(_to_float(shuffled), sigma, down_only=down_only))


def _motion_blur_float(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor):
    """ImageMagick's motion blur (MagickMotionBlurImage, which the papers call): each pixel
    becomes a weighted sum of 2 ceil(radius) + 1 pixels on the ray from it at `angles` (degrees,
    one per image, clockwise from the +x axis as rows go down), the i-th at the offset
    (round(i cos a), round(i sin a)) with weight exp(-i^2 / 2 sigma^2), normalised; pixels
    beyond the border repeat the edge (ImageMagick's default virtual pixels).

    The offsets differ per image, so no one convolution does it. We sort the batch by angle:
    then, for each tap, the images that share its offset come in a few runs of consecutive
    images, and each run is one shifted slice of the edge-padded batch, added in place."""
    n, ch, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    # the far taps of a narrow Gaussian weigh next to nothing: drop those whose total weight is
    # under 1e-5 (at most 0.003 of a grey level), so narrow kernels cost only their real width
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k]: the weight of taps k and beyond
    width = int((tail >= 1e-5).sum())
    i, weights = i[:width], weights[:width].tolist()
    order = torch.argsort(angles, stable=True)
    a = torch.deg2rad(angles[order].to(torch.float64))[:, None]  # (N, 1)
    ox = torch.ceil(i * torch.cos(a) - 0.5).long()  # (N, taps): ImageMagick rounds .5 down
    oy = torch.ceil(i * torch.sin(a) - 0.5).long()
    top, bottom = max(0, -int(oy.min())), max(0, int(oy.max()))
    left, right = max(0, -int(ox.min())), max(0, int(ox.max()))
    padded = F.pad(x[order], (left, right, top, bottom), mode="replicate")
    out = x[order] * weights[0]  # tap 0 is the pixel itself
    for tap in range(1, width):
        key = ox[:, tap] * (2 * (h + w + width) + 1) + oy[:, tap]
        starts = [0] + (torch.nonzero(key[1:] != key[:-1]).flatten() + 1).tolist() + [n]
        for lo, hi in zip(starts[:-1], starts[1:], strict=True):
            y0, x0 = top + int(oy[lo, tap]), left + int(ox[lo, tap])
            out[lo:hi].add_(padded[lo:hi, :, y0 : y0 + h, x0 : x0 + w], alpha=weights[tap])
    result = torch.empty_like(out)
    result[order] = out
    return result


def _motion_blur(images, s: _Setting):
    radius, sigma = s.c
    angles = _uniform(len(images), -45.0, 45.0, s.generator, torch.float64)
    return _to_uint8(_motion_blur_float(_to_float(images), s.px(radius), s.px(sigma), angles))


def _zoom_matrix(n: int, factor: float) -> np.ndarray:
    """(n, n) matrix of the papers' clipped_zoom along one axis: the central ceil(n / factor)
    pixels enlarged by `factor` with scipy.ndimage.zoom (linear, corners aligned: output o reads
    input o (in - 1) / (out - 1)), the central n pixels of the result kept."""
    crop = math.ceil(n / factor)
    top = (n - crop) // 2
    size = round(crop * factor)  # scipy rounds the output shape with Python's round
    trim = (size - n) // 2
    pos = (np.arange(n) + trim) * ((crop - 1) / (size - 1) if size > 1 else 0.0)
    lo = np.clip(np.floor(pos).astype(int), 0, crop - 1)
    hi = np.clip(lo + 1, 0, crop - 1)
    frac = pos - lo
    out = np.zeros((n, n))
    np.add.at(out, (np.arange(n), top + lo), 1 - frac)
    np.add.at(out, (np.arange(n), top + hi), frac)
    return out


def _zoom_blur_operator(h: int, w: int, arange: tuple) -> np.ndarray:
    """(H*W, H*W) matrix of the zoom blur: the mean of the image and its zooms by each factor."""
    factors = np.arange(*arange)
    total = np.eye(h * w)
    for z in factors:
        total += np.kron(_zoom_matrix(h, z), _zoom_matrix(w, z))
    return total / (len(factors) + 1)


@functools.lru_cache(maxsize=16)
def _zoom_blur_map(h: int, w: int, arange: tuple) -> _ImageMap:
    return _ImageMap(_zoom_blur_operator(h, w, arange))


def _zoom_blur(images, s: _Setting):
    _, _, h, w = images.shape
    return _to_uint8(_zoom_blur_map(h, w, s.c)(_to_float(images)))


# ---- weather ------------------------------------------------------------------------------------


def _next_power_of_two(v: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(v, 1.0))))


def _plasma_fractal(count: int, size: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """`count` plasma fractals (count, size, size) in [0, 1], size a power of two, by the
    diamond-square algorithm the papers use: starting from a zero map that wraps around at its
    edges, each level sets the centre of each square of the grid to the mean of its 4 corners,
    then the midpoint of each edge to the mean of its 4 neighbours (2 corners, 2 centres), each
    plus uniform noise in [-wibble^2, wibble^2] (wibble = 100, divided by `decay` each level,
    as the papers' "wibble * uniform(-wibble, wibble)"); the map is then scaled to [0, 1]."""
    maps = torch.zeros(count, size, size)  # float32: the map ends up in 256 levels
    step, wibble = size, 100.0

    def noise(shape):
        return _uniform((count, *shape), -wibble * wibble, wibble * wibble, g)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        sums = corners + corners.roll(-1, 1)
        sums = sums + sums.roll(-1, 2)
        maps[:, half::step, half::step] = sums / 4 + noise(sums.shape[1:])
        centres = maps[:, half::step, half::step]
        across = (centres + centres.roll(1, 1)) + (corners + corners.roll(-1, 2))
        maps[:, ::step, half::step] = across / 4 + noise(across.shape[1:])
        down = (centres + centres.roll(1, 2)) + (corners + corners.roll(-1, 1))
        maps[:, half::step, ::step] = down / 4 + noise(down.shape[1:])
        step //= 2
        wibble /= decay
    low = maps.amin(dim=(1, 2), keepdim=True)
    high = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low)


def _fog_layers(n: int, h: int, w: int, decay: float, s: _Setting) -> torch.Tensor:
    """One fog layer (N, H, W) per image. The papers crop the top-left H x W of a plasma fractal
    of side 32 (CIFAR-10-C: the whole map) or 256 (MNIST-C: a 28 x 28 corner), drawn afresh per
    image. A 256-wide map per digit would cost 84 times the pixels it yields, so we cut each
    map into aligned cells of the image's size rounded up to a power of two and give each image
    its own cell: a batch of N digits takes N / 64 maps, each cell is a crop aligned as the
    papers' corner is, and the scaling of each map to [0, 1] is over the whole map, as theirs."""
    size = _next_power_of_two((256 if s.grey else 32) * s.scale)
    cell = min(size, _next_power_of_two(max(h, w)))
    per_side = size // cell
    count = -(-n // per_side**2)
    maps = _plasma_fractal(count, size, decay, s.generator)
    slot = torch.randperm(count * per_side**2, generator=s.generator)[:n]
    which, cy, cx = slot // per_side**2, (slot // per_side) % per_side, slot % per_side
    rows = (cy * cell)[:, None, None] + torch.arange(h)[None, :, None]
    cols = (cx * cell)[:, None, None] + torch.arange(w)[None, None, :]
    return maps[which[:, None, None], rows, cols]


def _fog(images, s: _Setting):
    strength, decay = s.c
    x = _to_float(images)
    n, _, h, w = x.shape
    peak = x.amax(dim=(1, 2, 3), keepdim=True)  # each image's brightest value
    x = x + strength * _fog_layers(n, h, w, decay, s)[:, None]
    return _to_uint8(x * peak / (peak + strength))


def _snow(images, s: _Setting):
    """The flakes: Gaussian noise (one grey layer per image), the centre zoomed in, values below
    a threshold dropped, stored as 8 bits and motion-blurred along a random direction within
    45 degrees of straight up; added twice (once turned by 180 degrees) to the image, which is
    first blended towards max(image, 1.5 grey + 0.5) (a whitened sky)."""
    mean, std, zoom, threshold, radius, sigma, blend = s.c
    x = _to_float(images)
    n, _, h, w = x.shape
    layer = torch.randn((n, 1, h, w), generator=s.generator) * std + mean
    layer = _separable(
        layer,
        torch.from_numpy(_zoom_matrix(h, zoom)).float(),
        torch.from_numpy(_zoom_matrix(w, zoom)).float(),
    )
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = _to_uint8(layer.clamp(0, 1)).float() / 255  # the papers pass it on as a PNG
    angles = _uniform(n, -135.0, -45.0, s.generator, torch.float64)
    layer = _motion_blur_float(layer, s.px(radius), s.px(sigma), angles)
    layer = _to_uint8(layer).float() / 255
    if s.grey:
        grey = x
    else:  # cv2's RGB2GRAY weights
        grey = torch.einsum("nchw,c->nhw", x, torch.tensor([0.299, 0.587, 0.114]))[:, None]
    whitened = torch.maximum(x, grey * 1.5 + 0.5)
    x = x.mul_(blend).add_(whitened, alpha=1 - blend)
    return _to_uint8(x.add_(layer + layer.flip(-1, -2)))


def _spatter(images, s: _Setting):
    """MNIST-C's spatter (the mud of CIFAR-10-C's severities 4 and 5, in grey): Gaussian noise
    blurred into blobs, those above a threshold kept as a mask, the mask blurred and cut below
    0.8, the image covered by mud of grey level 63 where the mask is."""
    mean, std, sigma, threshold, mask_sigma, _ = s.c
    x = _to_float(images)
    n, _, h, w = x.shape
    liquid = torch.randn((n, 1, h, w), generator=s.generator) * std + mean
    liquid = _gaussian_blur_float(liquid, s.px(sigma))
    mask = _gaussian_blur_float((liquid > threshold).float(), s.px(mask_sigma))
    mask = torch.where(mask < 0.8, 0.0, mask)
    return _to_uint8(x * (1 - mask) + 63 / 255 * mask)


def _brightness(images, s: _Setting):
    """V += c in HSV, hue and saturation kept. With H and S fixed, RGB is proportional to V, so
    this is rgb * min(V + c, 1) / V (V the largest channel); black pixels (V = 0, saturation 0)
    become grey min(c, 1). For grey images (MNIST-C goes grey -> RGB -> HSV -> RGB -> grey) it
    is min(x + c, 1)."""
    x = _to_float(images)
    value = x.amax(dim=1, keepdim=True)  # (N, 1, H, W): the per-pixel work is done at this size
    new = (value + s.c).clamp_(max=1.0)
    gain = new / value.clamp(min=1e-12)
    out = x.mul_(gain)
    if bool((value == 0).any()):
        out = torch.where(value == 0, new, out)
    return _to_uint8(out)


def _saturate(images, s: _Setting):
    """S -> clip(S factor + offset, 0, 1) in HSV (skimage's), hue and value kept. With V the
    largest channel and m the smallest, S = (V - m) / V and each channel is V - S V t with t
    fixed by the hue, so a channel becomes V - (S' / S)(V - channel), that is
    V - S' V (V - channel) / (V - m). A grey pixel (V = m) has hue 0, red: it becomes
    (V, V (1 - S'), V (1 - S'))."""
    factor, offset = s.c
    x = _to_float(images)
    value = x.amax(dim=1, keepdim=True)  # (N, 1, H, W)
    spread = value - x.amin(dim=1, keepdim=True)
    sat = torch.where(value > 0, spread / value.clamp(min=1e-12), 0.0)
    new_sat = (sat * factor + offset).clamp_(0.0, 1.0)
    pull = new_sat * value / spread.clamp(min=1e-12)
    out = value - (value - x).mul_(pull)
    grey = spread == 0
    if bool(grey.any()):
        keep = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # red keeps V, green and blue drop
        out = torch.where(grey, value * (keep + (1 - keep) * (1 - new_sat)), out)
    return _to_uint8(out)


# ---- digital ------------------------------------------------------------------------------------


def _contrast(images, s: _Setting):
    x = _to_float(images)
    mean = x.mean(dim=(2, 3), keepdim=True)  # per image and channel
    return _to_uint8((x - mean) * s.c + mean)


def _quantize(images, s: _Setting):
    levels = 2**s.c - 1
    x = images.to(torch.float32) * (levels / 255.0)
    return _to_uint8(x.round() / levels)


def _jpeg(images, s: _Setting):
    """Pillow's JPEG at this quality, one image at a time (the codec takes one image). Threads
    do not help: with images this small, Pillow's Python around the codec holds the GIL."""
    from PIL import Image

    n, ch, h, w = images.shape
    arrays = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
    if ch == 1:
        arrays = arrays[..., 0]
    out = np.empty_like(arrays)

    quality, mode = int(s.c), ("L" if ch == 1 else "RGB")
    buffer = io.BytesIO()
    for i in range(n):
        buffer.seek(0)
        buffer.truncate()
        Image.frombuffer(mode, (w, h), arrays[i], "raw", mode, 0, 1).save(
            buffer, format="JPEG", quality=quality
        )
        buffer.seek(0)
        with Image.open(buffer, formats=["JPEG"]) as decoded:
            out[i] = np.asarray(decoded)
    out = torch.from_numpy(out)
    return out[:, None] if ch == 1 else out.permute(0, 3, 1, 2).contiguous()


_PILLOW_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (32 - 8 - 2)


@functools.lru_cache(maxsize=64)
def _box_resample(size_in: int, size_out: int):
    """Pillow's BOX resampling along one axis: which input pixels each output pixel averages,
    (out, in) 0/1; the one weight they share, as Pillow's 22-bit integer, (out,); and, where
    every output pixel takes exactly one input pixel (enlarging does), which one, (out,), else
    None. Output pixel j spans input [j, j + 1) x in / out; it takes the pixels whose offset
    from the span's centre, over max(in / out, 1), lies in Pillow's box (-0.5, 0.5]."""
    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)
    member = np.zeros((size_out, size_in), dtype=np.float32)
    weight = np.zeros(size_out)
    for j in range(size_out):
        centre = (j + 0.5) * scale
        lo = max(0, int(centre - support + 0.5))
        hi = min(size_in, int(centre + support + 0.5))
        t = (np.arange(lo, hi) - centre + 0.5) / max(scale, 1.0)
        inside = (t > -0.5) & (t <= 0.5)
        member[j, lo:hi] = inside
        if inside.any():
            weight[j] = math.floor(0.5 + (1 << _PILLOW_BITS) / inside.sum())
    single = torch.from_numpy(member.argmax(1)) if (member.sum(1) == 1).all() else None
    return torch.from_numpy(member), torch.from_numpy(weight), single


def _pillow_box_pass(sums: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Pillow's 8-bit arithmetic on the sums of the pixels each output pixel averages: times
    the integer weight, plus a half, shifted right (floor), clipped to 0..255. float64 holds
    these integers (< 2^31) exactly; when every weight is a power of two (boxes of 1, 2, 4...
    pixels), so does float32, at half the cost."""
    if all(k > 0 and math.log2(k).is_integer() for k in weight.flatten().tolist()):
        return (sums * (weight.to(torch.float32) / (1 << _PILLOW_BITS))).add_(0.5).floor_()
    acc = sums.to(torch.float64).mul_(weight).add_(1 << (_PILLOW_BITS - 1))
    return acc.div_(1 << _PILLOW_BITS).floor_().clamp_(0, 255).to(torch.float32)


def _pillow_box_resize(x: torch.Tensor, h_out: int, w_out: int) -> torch.Tensor:
    """PIL.Image.resize((w_out, h_out), Image.BOX) of each image of x (..., H, W) (float32
    holding 0..255): the horizontal pass, rounded to 8 bits, then the vertical one, as Pillow
    does them. The sums of up to 2^16 pixels are exact in float32; where each output pixel is
    one input pixel (weight 2^22), a pass only picks pixels."""
    h, w = x.shape[-2:]
    if w_out != w:
        member, weight, single = _box_resample(w, w_out)
        if single is not None:
            x = x.index_select(-1, single)
        else:
            x = _pillow_box_pass(x @ member.T, weight)
    if h_out != h:
        member, weight, single = _box_resample(h, h_out)
        if single is not None:
            x = x.index_select(-2, single)
        else:
            x = _pillow_box_pass(torch.matmul(member, x), weight[:, None])
    return x


def _pixelate(images, s: _Setting):
    _, _, h, w = images.shape
    x = images.to(torch.float32)
    small = _pillow_box_resize(x, max(1, int(h * s.c)), max(1, int(w * s.c)))
    return _pillow_box_resize(small, h, w).to(torch.uint8)


def _pixel_scale(h: int, w: int, corners: bool):
    """(d, e), (x, y) each: pixel coordinates p = d g + e from grid_sample's g in [-1, 1].
    corners=True puts g = -1, 1 at the outer pixels' centres (there, "reflection" is cv2's
    BORDER_REFLECT_101), False at their outer edges (there, "reflection" is scipy's "reflect")."""
    e = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    d = e if corners else torch.tensor([w / 2, h / 2], dtype=torch.float64)
    return d.clamp(min=0.5), e


def _grid_coordinates(h: int, w: int, corners: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample's coordinates of the pixel centres: (W,) across, (H,) down."""
    d, e = _pixel_scale(h, w, corners)
    xs = (torch.arange(w, dtype=torch.float64) - e[0]) / d[0]
    ys = (torch.arange(h, dtype=torch.float64) - e[1]) / d[1]
    return xs.float(), ys.float()


def _warp(x: torch.Tensor, inverse: torch.Tensor, padding: str, corners: bool = True):
    """x (N, C, H, W) warped by the affine maps whose inverses (N, 2, 3) take each output pixel
    (x, y, 1) to the input point it reads, sampled bilinearly; "zeros" reads 0 outside."""
    n, _, h, w = x.shape
    d, e = _pixel_scale(h, w, corners)
    a, t = inverse[:, :, :2].to(torch.float64), inverse[:, :, 2].to(torch.float64)
    # the same map between grid_sample's coordinates: g_in = D^-1 A D g_out + D^-1 (A e + t - e)
    linear = a * d[None, None, :] / d[None, :, None]
    shift = ((a @ e) + t - e) / d
    theta = torch.cat([linear, shift[:, :, None]], dim=2).to(x.dtype)[:, :, :, None, None]
    xs, ys = _grid_coordinates(h, w, corners)
    grid = torch.empty(n, h, w, 2, dtype=x.dtype)  # F.affine_grid's, 4 times as fast
    for k in range(2):
        grid[..., k] = theta[:, k, 0] * xs + (theta[:, k, 1] * ys[:, None] + theta[:, k, 2])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=corners)


def _displace(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, padding: str, corners: bool):
    """x (N, C, H, W) sampled bilinearly at (col + dx, row + dy), dx and dy (N, H, W) in pixels."""
    n, _, h, w = x.shape
    d, _ = _pixel_scale(h, w, corners)
    xs, ys = _grid_coordinates(h, w, corners)
    grid = torch.empty(n, h, w, 2, dtype=x.dtype)
    grid[..., 0] = dx * (1 / float(d[0])) + xs
    grid[..., 1] = dy * (1 / float(d[1])) + ys[:, None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=corners)


def _elastic_transform(images, s: _Setting):
    """First a random affine map: three points around the centre (at +-1/3 of the size) each
    moved by up to `jitter` pixels, warped as cv2.warpAffine (bilinear; MNIST-C fills the
    outside with black, CIFAR-10-C mirrors it). Then every pixel moves by a displacement field:
    uniform noise in [-1, 1], smoothed by a Gaussian of `sigma` (skimage, "reflect", truncated
    at 3 sigma), times `alpha`, sampled bilinearly (scipy's map_coordinates; black outside for
    MNIST-C, "reflect" for CIFAR-10-C)."""
    alpha, sigma, jitter = (s.px(v) for v in s.c)
    x = _to_float(images)
    n, _, h, w = x.shape
    g = s.generator
    cx, cy, arm = w // 2, h // 2, max(1, min(h, w) // 3)
    before = torch.tensor(
        [[cx + arm, cy + arm], [cx + arm, cy - arm], [cx - arm, cy - arm]], dtype=torch.float64
    )
    after = before + _uniform((n, 3, 2), -jitter, jitter, g, torch.float64)
    # the affine map M (2 x 3) with M [p, 1] = p' for the three pairs: [p 1] M^T = p'
    ones = torch.ones(3, 1, dtype=torch.float64)
    forward = torch.linalg.solve(torch.cat([before, ones], 1), after).transpose(1, 2)  # (N, 2, 3)
    lin_inv = torch.linalg.inv(forward[:, :, :2])
    inverse = torch.cat([lin_inv, -(lin_inv @ forward[:, :, 2:])], dim=2)
    x = _warp(x, inverse, "zeros" if s.grey else "reflection", corners=True)

    fields = _uniform((2, n, h, w), -1.0, 1.0, g)
    dx, dy = _gaussian_blur_float(fields, sigma, "reflect", truncate=3.0) * alpha
    if s.grey:
        x = _displace(x, dx, dy, "zeros", corners=True)
    else:
        x = _displace(x, dx, dy, "reflection", corners=False)
    return _to_uint8(x)


def _centred_affine(s: _Setting, n: int, h: int, w: int, linear: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) inverse maps in = L (out - centre) + centre: MNIST-C's skimage.warp with an
    AffineTransform whose translation keeps the centre ((W - 1) / 2, (H - 1) / 2) in place."""
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
    shift = centre - linear @ centre
    return torch.cat([linear, shift.view(-1, 2, 1).expand(n, 2, 1)], dim=2)


def _random_sign(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1


def _affine_corruption(images, s: _Setting, linear: torch.Tensor) -> torch.Tensor:
    """skimage.transform.warp(x, inverse_map): bilinear, black outside."""
    n, _, h, w = images.shape
    return _to_uint8(_warp(_to_float(images), _centred_affine(s, n, h, w, linear), "zeros"))


def _shear(images, s: _Setting):
    """skimage's AffineTransform(shear=a) (before 0.20): x_in = x - sin(a) y, y_in = cos(a) y."""
    a = s.c * _random_sign(len(images), s.generator)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    linear = torch.stack(
        [torch.stack([one, -torch.sin(a)], 1), torch.stack([zero, torch.cos(a)], 1)], 1
    )
    return _affine_corruption(images, s, linear)


def _rotate(images, s: _Setting):
    a = s.c * _random_sign(len(images), s.generator)
    cos, sin = torch.cos(a), torch.sin(a)
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    return _affine_corruption(images, s, linear)


def _scale(images, s: _Setting):
    sx, sy = s.c
    linear = torch.tensor([[sx, 0.0], [0.0, sy]], dtype=torch.float64).expand(len(images), 2, 2)
    return _affine_corruption(images, s, linear)


def _translate(images, s: _Setting):
    """Input = output + (dx, dy): the digit moves by (-dx, -dy), each sign at random."""
    n, _, h, w = images.shape
    step = s.px(s.c)
    dx, dy = step * _random_sign(n, s.generator), step * _random_sign(n, s.generator)
    inverse = torch.zeros(n, 2, 3, dtype=torch.float64)
    inverse[:, 0, 0] = inverse[:, 1, 1] = 1.0
    inverse[:, 0, 2], inverse[:, 1, 2] = dx, dy
    return _to_uint8(_warp(_to_float(images), inverse, "zeros"))


_IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor, _Setting], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "glass_blur": _glass_blur,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "fog": _fog,
    "snow": _snow,
    "spatter": _spatter,
    "brightness": _brightness,
    "saturate": _saturate,
    "contrast": _contrast,
    "jpeg_compression": _jpeg,
    "pixelate": _pixelate,
    "elastic_transform": _elastic_transform,
    "quantize": _quantize,
    "shear": _shear,
    "rotate": _rotate,
    "scale": _scale,
    "translate": _translate,
}
