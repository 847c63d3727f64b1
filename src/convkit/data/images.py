"""User image files (photos, drawings, scans) converted the way a dataset stores its images.

`inspect`, `predict` and the web server all go through `load_image`, so one conversion serves
them all. Files come from users: every failure is a ConfigError naming the file, and an image
too large to decode safely is refused from its header, before any pixel is decoded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from convkit.errors import ConfigError

# Pixels (width x height) decoded at most unless the caller allows more. Phone and camera photos
# are 12 to 50 megapixels (50 MP is the high-resolution mode of many phone sensors), so photos
# pass; decoded as RGB, 50 MP is 150 MB, and converting it peaks at 0.5 GB (0.7 GB with an alpha
# channel; measured on 50 MP PNGs), which a laptop or a small server can take. A decompression
# bomb (a small PNG declaring 40000 x 40000) is refused from its header.
MAX_PIXELS = 50_000_000

# Raster formats users send; others Pillow knows (EPS runs Ghostscript, PSD, FITS, ...) are not
# opened at all, which keeps rarely-exercised decoders away from files off the internet.
FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "AVIF", "JPEG2000")

_WIDE = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # more than 8 bits a sample

# How an image meets the model's input when their shapes differ: `crop` keeps the centre at the
# input's aspect ratio (nothing squashed, the edges lost), `pad` fits the whole image and fills
# the rest with its border's mean colour (nothing lost, bars added), `stretch` resizes as it is
# (squashed). `auto`: crop colour images whose aspect ratio is more than NEAR_SQUARE off the
# input's (photos: 4:3 and 16:9 are), pad the others (grey drawings and scans, whose strokes a
# crop could cut, and images already near the input's shape, where the bars are thin).
FITS = ("auto", "crop", "pad", "stretch")
NEAR_SQUARE = 1.2


def load_image(
    path: str | Path,
    image_shape: tuple[int, int, int],
    *,
    invert_light: bool = True,
    digit_frame: bool = False,
    fit: str = "auto",
    max_pixels: int = MAX_PIXELS,
) -> dict[str, Any]:
    """A user's image file, any size or mode, converted as the run's dataset stores images.

    Turned upright by its EXIF orientation (photos); the first frame of an animation; 16-bit
    images scaled to 8 bits. Grey or RGB, fitted to (H, W) as `fit` says (FITS: cropped,
    padded or stretched when the aspect ratios differ). A grey image on a light background
    is inverted to MNIST's light-on-dark when `invert_light`. With `digit_frame` (MNIST), the
    drawing is cropped to its ink, scaled to fit 20x20 and centred by its centre of mass in
    28x28, as MNIST's digits were made (an image that is 28x28 and light on dark already is
    taken as framed, and kept as it is). An image of more than `max_pixels` pixels is refused
    before decoding (above 2 x PIL.Image.MAX_IMAGE_PIXELS, ~179 M, Pillow refuses it too).
    Returns the original (for showing), the converted uint8 array (C, H, W), and a line that
    says what was done."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    c, h, w = image_shape
    if c not in (1, 3):
        raise ConfigError(f"the run expects {c}-channel images; only grey and RGB are supported")
    check_fit(fit)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise ConfigError(f"image {path} {what}")
    if path.stat().st_size == 0:
        raise ConfigError(f"image {path} is empty (0 bytes)")
    Image.init()  # registers every plugin, so FORMATS can be checked against them
    steps = []
    try:
        with Image.open(path, formats=[f for f in FORMATS if f in Image.OPEN]) as im:
            _check_pixels(path, im.size, max_pixels)  # from the header: nothing decoded yet
            steps.append(f"{im.size[0]}x{im.size[1]} {im.mode}")
            if getattr(im, "is_animated", False):
                im.seek(0)
                steps.append("first frame")
            im.load()
            shown, converted, original_mode = _decoded(im, c, steps)
    except ConfigError:
        raise
    except UnidentifiedImageError:
        raise ConfigError(f"{path} is not an image convkit reads ({', '.join(FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow checks the header's size inside Image.open, refusing over twice its own
        # limit (and warning over it), before convkit's check can run.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found[1]):,} pixels" if found else "too many pixels"
        _refuse(path, pixels, max_pixels, pillow=max_pixels >= 2 * (Image.MAX_IMAGE_PIXELS or 0))
    except Exception as exc:  # Pillow's decoders raise many types for damaged files
        raise ConfigError(
            f"{path} is a damaged image file, or one Pillow cannot convert "
            f"({type(exc).__name__}: {exc})"
        ) from None
    array = _fitted(converted, original_mode, image_shape, steps, invert_light, digit_frame, fit)
    return {
        "path": str(path),
        "original": shown,
        "converted": array,
        "conversion": " -> ".join(steps),
    }


def convert_image(
    image: Any,
    image_shape: tuple[int, int, int],
    *,
    name: str = "image",
    invert_light: bool = True,
    digit_frame: bool = False,
    fit: str = "auto",
    max_pixels: int = MAX_PIXELS,
) -> dict[str, Any]:
    """An image already in memory, a PIL image or a uint8 array (H, W), (H, W, 3) or (H, W, 4),
    converted exactly as `load_image` converts a file (from the decoded pixels on); `name`
    stands for the path in the result and in errors."""
    from PIL import Image

    c = image_shape[0]
    if c not in (1, 3):
        raise ConfigError(f"the run expects {c}-channel images; only grey and RGB are supported")
    check_fit(fit)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ConfigError(
                f"{name}: expected uint8 pixels 0..255 (as images are stored), received dtype "
                f"{image.dtype}; convert with (x * 255).round().astype('uint8') if it holds 0..1"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ConfigError(
                f"{name}: expected an image array (H, W), (H, W, 3) or (H, W, 4), received "
                f"shape {tuple(image.shape)}"
            )
        image = Image.fromarray(np.ascontiguousarray(image))
    elif not isinstance(image, Image.Image):
        raise ConfigError(
            f"{name}: expected a PIL image or a uint8 array, received {type(image).__name__}"
        )
    _check_pixels(Path(name), image.size, max_pixels)
    steps = [f"{image.size[0]}x{image.size[1]} {image.mode}"]
    try:
        shown, converted, original_mode = _decoded(image, c, steps, in_place=False)
    except Exception as exc:
        raise ConfigError(
            f"{name}: Pillow cannot convert this image ({type(exc).__name__}: {exc})"
        ) from None
    array = _fitted(converted, original_mode, image_shape, steps, invert_light, digit_frame, fit)
    return {"path": name, "original": shown, "converted": array, "conversion": " -> ".join(steps)}


def _decoded(im, c: int, steps: list[str], in_place: bool = True) -> tuple[np.ndarray, Any, str]:
    """A decoded image made upright, 8-bit and opaque, then grey (c = 1) or RGB: (the RGB pixels
    for showing, the converted PIL image, the mode it was in). Appends what it did to `steps`.
    A photo is turned upright in place (no copy) unless `in_place` is False (a caller's image)."""
    from PIL import ExifTags, Image, ImageOps

    original_mode = im.mode
    orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in range(2, 9):  # 1 is upright; 2..8 mirror and/or turn
        if in_place:
            ImageOps.exif_transpose(im, in_place=True)  # as the camera was held
        else:
            im = ImageOps.exif_transpose(im)
        steps.append(f"turned upright (EXIF orientation {orientation})")
    if im.mode in _WIDE:
        im, note = _to_8bit(im)
        original_mode = "L"
        steps.append(note)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
        im = Image.new("RGB", im.size, (255, 255, 255))
        im.paste(rgba, mask=rgba.getchannel("A"))  # transparent pixels become white,
        del rgba  # as a viewer shows them
    rgb = im if im.mode == "RGB" else im.convert("RGB")  # no copy made when it is RGB
    shown = np.asarray(rgb)
    converted = rgb if c == 3 else im.convert("L")
    return shown, converted, original_mode


def _fitted(
    converted,
    original_mode: str,
    image_shape: tuple[int, int, int],
    steps: list[str],
    invert_light: bool,
    digit_frame: bool,
    fit: str = "auto",
) -> np.ndarray:
    """The grey or RGB image as the dataset stores images: inverted to light on dark for grey
    runs when its background is light, framed as MNIST's digits or fitted (`fit`) and resized;
    uint8 (C, H, W)."""
    from PIL import Image

    c, h, w = image_shape
    if converted.mode != original_mode:
        steps.append("grey" if c == 1 else "RGB")
    if c == 1 and invert_light:
        a = np.asarray(converted)
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        if border.mean() > 127:
            converted = Image.fromarray(255 - a)  # dark ink on paper -> MNIST's light on black
            steps.append("inverted (light background)")
    # An image already 28x28 and light on dark is taken as MNIST-framed already (a dataset's
    # own image written to a file, say): framing it again would shift it.
    framed = converted.size == (w, h) and "inverted (light background)" not in steps
    if c == 1 and digit_frame and (h, w) == (28, 28) and not framed:
        array, note = _mnist_frame(converted)
        steps.append(note)
    else:
        converted = _shaped(converted, (w, h), fit, c, steps)
        resized = converted.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        array = np.array(resized, dtype=np.uint8)  # a writable copy
        array = array[None] if c == 1 else array.transpose(2, 0, 1)
        if (w, h) != converted.size:
            steps.append(f"resized to {w}x{h}")
    return array


def resolve_fit(fit: str, size: tuple[int, int], target: tuple[int, int], channels: int) -> str:
    """What `fit` does to an image of `size` (width, height) for an input of `target` (width,
    height): "crop", "pad", "stretch", or "same" when the aspect ratios already agree."""
    (iw, ih), (w, h) = size, target
    if iw * h == ih * w or fit == "stretch":
        return "same" if iw * h == ih * w else "stretch"
    if fit != "auto":
        return fit
    off = (iw * h) / (ih * w)
    return "crop" if channels == 3 and max(off, 1 / off) > NEAR_SQUARE else "pad"


def _shaped(im, target: tuple[int, int], fit: str, channels: int, steps: list[str]):
    """`im` cut or padded to the aspect ratio of `target` (width, height) as `fit` says (the
    resize comes after); unchanged for stretch and for an image of that aspect ratio already."""
    from PIL import Image

    how = resolve_fit(fit, im.size, target, channels)
    (iw, ih), (w, h) = im.size, target
    if how == "crop":
        cw, ch = (round(ih * w / h), ih) if iw * h > ih * w else (iw, round(iw * h / w))
        left, top = (iw - cw) // 2, (ih - ch) // 2
        steps.append(f"centre {cw}x{ch} cropped")
        return im.crop((left, top, left + cw, top + ch))
    if how == "pad":  # resized to fit first: a 1 x 10,000 image never becomes 10,000 x 10,000
        strips = [(0, 0, iw, 1), (0, ih - 1, iw, ih), (0, 0, 1, ih), (iw - 1, 0, iw, ih)]
        border = np.concatenate(  # the four edges only: a 50 MP photo is not copied whole
            [np.asarray(im.crop(box)).reshape(-1, channels) for box in strips]
        )
        colour = tuple(int(v) for v in border.mean(0).round())
        scale = min(w / iw, h / ih)
        sw, sh = max(1, round(iw * scale)), max(1, round(ih * scale))
        if (sw, sh) != (iw, ih):
            im = im.resize((sw, sh), Image.Resampling.BILINEAR, reducing_gap=None)
            steps.append(f"resized to {sw}x{sh}")
        canvas = Image.new(im.mode, (w, h), colour if channels == 3 else colour[0])
        canvas.paste(im, ((w - sw) // 2, (h - sh) // 2))
        steps.append(f"padded to {w}x{h} with its border's mean colour")
        return canvas
    if how == "stretch":
        steps.append("stretched (aspect ratio not kept)")
    return im


def check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ConfigError(f"unknown fit {fit!r}; expected one of {', '.join(FITS)}")


def conversion_options(
    dataset: str, image_shape: tuple[int, int, int], fit: str = "auto"
) -> dict[str, Any]:
    """How to convert a user's image for a run on `dataset`: grey runs invert a light background
    (MNIST is light on dark), and MNIST's digits are also framed as MNIST framed them; other
    images meet the input as the run's `fit` says."""
    return {
        "invert_light": image_shape[0] == 1,
        "digit_frame": dataset == "mnist" and tuple(image_shape) == (1, 28, 28),
        "fit": fit,
    }


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ConfigError(f"{path}: the image is {width}x{height}, it has no pixels")
    if width * height > max_pixels:
        _refuse(path, f"{width}x{height} = {width * height:,} pixels", max_pixels)


def _refuse(path: Path, pixels: str, max_pixels: int, pillow: bool = False) -> NoReturn:
    how = (
        "raise PIL.Image.MAX_IMAGE_PIXELS too: Pillow refuses twice its value itself"
        if pillow
        else "pass a larger max_pixels to load_image, or scale the image down first"
    )
    raise ConfigError(
        f"{path}: {pixels}, over the limit of {max_pixels:,} (refused before decoding: a "
        f"file this size may be a decompression bomb); if it is a genuine image, {how}"
    )


def _to_8bit(im) -> tuple[Any, str]:
    """A grey image of more than 8 bits a sample as 8-bit 'L', scaled rather than clipped:
    16-bit (PNG, TIFF) by 255/65535; 32-bit integer images whose values fit 0..65535 as 16-bit;
    float images in 0..1 by 255; others that fit 0..255 unchanged, the rest stretched from
    their minimum..maximum."""
    from PIL import Image

    a = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.min() >= 0 and 255 < a.max() <= 65535):
        # round(v * 255 / 65535), in integers: 65535 -> 255, 32896 -> 128
        out = (a.astype(np.uint32) * 255 + 32767) // 65535
        return Image.fromarray(out.astype(np.uint8)), "16-bit scaled to 8-bit"
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if im.mode == "F" and lo >= 0 and hi <= 1:  # float images usually hold 0..1
        return Image.fromarray((a * 255).round().astype(np.uint8)), "F scaled from 0..1 to 8-bit"
    if lo >= 0 and hi <= 255:
        return Image.fromarray(a.round().astype(np.uint8)), f"{im.mode} to 8-bit"
    out = (a - lo) * (255 / (hi - lo) if hi > lo else 0.0)
    return Image.fromarray(out.round().astype(np.uint8)), f"{im.mode} stretched from {lo:g}..{hi:g}"


def _mnist_frame(grey) -> tuple[np.ndarray, str]:
    """MNIST's normalisation of a light-on-dark drawing: crop to the ink, fit in 20x20 keeping
    the aspect ratio, paste into 28x28 so the centre of mass sits at the centre."""
    from PIL import Image

    a = np.asarray(grey, dtype=np.float64)
    ink = a > 0.2 * a.max() if a.max() > 0 else np.zeros_like(a, dtype=bool)
    if not ink.any():
        return np.zeros((1, 28, 28), dtype=np.uint8), "blank: no ink found"
    rows, cols = np.nonzero(ink)
    box = grey.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    scale = 20 / max(box.size)
    size = (max(1, round(box.size[0] * scale)), max(1, round(box.size[1] * scale)))
    digit = np.asarray(box.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    total = digit.sum()
    cy = (digit.sum(1) * np.arange(size[1])).sum() / total if total else size[1] / 2
    cx = (digit.sum(0) * np.arange(size[0])).sum() / total if total else size[0] / 2
    top = int(round(14 - cy - 0.5))
    left = int(round(14 - cx - 0.5))
    top, left = min(max(top, 0), 28 - size[1]), min(max(left, 0), 28 - size[0])
    out = np.zeros((28, 28), dtype=np.float64)
    out[top : top + size[1], left : left + size[0]] = digit
    note = "cropped to the ink, fit in 20x20 and centred by mass in 28x28 (as MNIST)"
    return out.clip(0, 255).round().astype(np.uint8)[None], note
