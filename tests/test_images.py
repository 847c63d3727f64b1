"""User images (convkit.data.images): photos turned upright, animations, 16-bit scans, and every
odd file a user may send, on tiny images made here."""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from convkit.data.images import MAX_PIXELS, load_image
from convkit.errors import ConfigError


def test_exif_orientation_turns_a_photo_upright(tmp_path):
    # Stored 40 wide x 20 tall, black left half; orientation 6 says "rotate 90 degrees clockwise
    # to show it", which puts the black half on top of a 20 x 40 portrait.
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:, :20] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    got = load_image(tmp_path / "photo.jpg", (3, 40, 20))
    x = got["converted"].astype(int)
    assert x.shape == (3, 40, 20) and got["original"].shape == (40, 20, 3)
    assert x[:, :18].max() < 40 and x[:, 22:].min() > 215
    assert got["conversion"] == "40x20 RGB -> turned upright (EXIF orientation 6)"


def test_animated_gif_gives_its_first_frame(tmp_path):
    black, white = Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)
    black.save(tmp_path / "anim.gif", save_all=True, append_images=[white, white], duration=100)
    got = load_image(tmp_path / "anim.gif", (1, 8, 8), invert_light=False)
    assert got["converted"].max() == 0
    assert "first frame" in got["conversion"]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path, fmt):
    a = np.array([[0, 257], [32896, 65535]], np.uint16)  # round(v / 257): 0, 1, 128, 255
    path = tmp_path / f"scan.{fmt.lower()}"
    Image.fromarray(a).save(path, fmt)
    assert Image.open(path).mode == "I;16"
    got = load_image(path, (1, 2, 2), invert_light=False)
    assert got["converted"][0].tolist() == [[0, 1], [128, 255]]
    assert got["conversion"] == "2x2 I;16 -> 16-bit scaled to 8-bit"


def test_32_bit_integer_and_float_images(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "i.tif")
    got = load_image(tmp_path / "i.tif", (1, 1, 2), invert_light=False)
    assert got["converted"][0].tolist() == [[0, 255]]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "f.tif")
    got = load_image(tmp_path / "f.tif", (1, 1, 3), invert_light=False)
    assert got["converted"][0].tolist() == [[0, 128, 255]]
    Image.fromarray(np.array([[-1000.0, 1000.0]], np.float32)).save(tmp_path / "wide.tif")
    got = load_image(tmp_path / "wide.tif", (1, 1, 2), invert_light=False)
    assert got["converted"][0].tolist() == [[0, 255]]
    assert "F stretched from -1000..1000" in got["conversion"]


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with one tiny compressed row: a bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_declaring(8_000, 8_000))  # 64 MP in ~0.1 KB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        ConfigError,
        match=r"bomb\.png: 8000x8000 = 64,000,000 pixels, over the limit of 50,000,000 "
        r"\(refused before decoding.*pass a larger max_pixels to load_image",
    ):
        load_image(tmp_path / "bomb.png", (1, 28, 28))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 30_000  # KiB: no decode
    # Over twice Pillow's own limit (179 MP), Pillow refuses inside Image.open: the same error,
    # and when the caller already allows that many pixels, it says Pillow's limit must rise too.
    (tmp_path / "huge.png").write_bytes(png_declaring(20_000, 20_000))
    with pytest.raises(
        ConfigError, match=r"huge\.png: 400,000,000 pixels, over the limit of 50,000,000 "
    ):
        load_image(tmp_path / "huge.png", (1, 28, 28))
    with pytest.raises(
        ConfigError,
        match=r"huge\.png: 400,000,000 pixels, over the limit of 1,000,000,000 .*"
        r"raise PIL\.Image\.MAX_IMAGE_PIXELS too",
    ):
        load_image(tmp_path / "huge.png", (1, 28, 28), max_pixels=10**9)


def test_the_pixel_limit_is_the_callers(tmp_path):
    Image.new("L", (100, 100)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match=r"100x100 = 10,000 pixels, over the limit of 5,000"):
        load_image(tmp_path / "a.png", (1, 28, 28), max_pixels=5_000)
    assert load_image(tmp_path / "a.png", (1, 28, 28), max_pixels=10_000)["converted"].shape == (
        1,
        28,
        28,
    )
    assert MAX_PIXELS == 50_000_000


def test_odd_files_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    Image.new("RGB", (1, 1)).save(tmp_path / "doc.eps")  # Pillow reads EPS with Ghostscript
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.png").write_bytes(png_declaring(4, 4)[:20])
    cases = {
        "empty.png": r"empty\.png is empty \(0 bytes\)",
        "folder.png": r"folder\.png is not a file",
        "doc.eps": r"doc\.eps is not an image convkit reads \(PNG, JPEG",
        "cut.jpg": r"cut\.jpg is a damaged image file",
        "header.png": r"header\.png is a damaged image file",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_image(tmp_path / name, (1, 28, 28))


def test_an_image_with_no_pixels(tmp_path):
    (tmp_path / "zero.png").write_bytes(png_declaring(0, 5))
    with pytest.raises(ConfigError, match=r"zero\.png"):
        load_image(tmp_path / "zero.png", (1, 28, 28))


def test_the_first_image_of_a_fresh_process_loads(tmp_path):
    # Pillow registers most formats only on its first open; checking FORMATS against them
    # before that refused every file as "not an image" in a new process (found measuring memory)
    Image.new("L", (3, 3)).save(tmp_path / "a.png")
    code = (
        "import sys; from convkit.data.images import load_image; "
        "print(load_image(sys.argv[1], (1, 28, 28))['conversion'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a.png")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3x3 L -> resized to 28x28"


# ---- fit: how an image of another shape meets the model's input ----------------------------------


def _stripes(width: int, height: int) -> np.ndarray:
    """A colour image in three vertical thirds: red, green, blue."""
    a = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    a[:, :third], a[:, third : 2 * third], a[:, 2 * third :] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    return a


def test_crop_keeps_the_centre_at_the_inputs_aspect_ratio():
    from convkit.data.images import convert_image

    got = convert_image(_stripes(90, 30), (3, 30, 30), fit="crop")
    assert got["conversion"] == "90x30 RGB -> centre 30x30 cropped"
    assert (got["converted"] == np.array([0, 255, 0], np.uint8)[:, None, None]).all()  # all green


def test_pad_keeps_the_whole_image_on_its_border_colour():
    from convkit.data.images import convert_image

    a = np.full((20, 40, 3), 200, np.uint8)
    a[5:15, 10:30] = (255, 0, 0)
    got = convert_image(a, (3, 40, 40), fit="pad")
    assert got["conversion"] == "40x20 RGB -> padded to 40x40 with its border's mean colour"
    out = got["converted"].transpose(1, 2, 0)
    assert (out[:10] == 200).all() and (out[30:] == 200).all()  # the bars: the border's colour
    assert (out[10:30] == a).all()  # the image itself, whole and unscaled, in the middle


def test_stretch_squashes_and_says_so():
    from convkit.data.images import convert_image

    got = convert_image(_stripes(90, 30), (3, 30, 30), fit="stretch")
    assert got["conversion"] == "90x30 RGB -> stretched (aspect ratio not kept) -> resized to 30x30"
    row = got["converted"][:, 15]
    assert row[0, 0] == 255 and row[1, 15] == 255 and row[2, 29] == 255  # all three thirds


@pytest.mark.parametrize(
    ("size", "channels", "expected"),
    [
        ((640, 480), 3, "crop"),  # a 4:3 photo
        ((480, 640), 3, "crop"),  # portrait
        ((110, 100), 3, "pad"),  # near the square input: thin bars, nothing cut
        ((640, 480), 1, "pad"),  # grey: a drawing or a scan, whose strokes a crop could cut
        ((64, 64), 3, "same"),  # the input's shape already: only resized
    ],
)
def test_auto_crops_photos_and_pads_the_rest(size, channels, expected):
    from convkit.data.images import resolve_fit

    assert resolve_fit("auto", size, (32, 32), channels) == expected
    assert resolve_fit("stretch", size, (32, 32), channels) in ("stretch", "same")


def test_a_digit_frame_ignores_fit_and_an_unknown_fit_is_named(tmp_path):
    from convkit.data.images import convert_image

    g = np.zeros((30, 60), np.uint8)
    g[10:20, 25:35] = 255
    framed = [convert_image(g, (1, 28, 28), digit_frame=True, fit=f)["converted"] for f in
              ("crop", "pad", "stretch")]  # fmt: skip
    assert (framed[0] == framed[1]).all() and (framed[1] == framed[2]).all()
    with pytest.raises(ConfigError, match="unknown fit 'squash'; expected one of auto, crop"):
        convert_image(g, (1, 28, 28), fit="squash")
    Image.fromarray(g).save(tmp_path / "g.png")
    with pytest.raises(ConfigError, match="unknown fit 'squash'"):
        load_image(tmp_path / "g.png", (1, 28, 28), fit="squash")


def test_the_settings_fit_choices_are_the_conversions():
    import dataclasses

    from convkit.data.images import FITS
    from convkit.train import TrainConfig

    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "fit")
    assert field.metadata["choices"] == FITS and field.default == "auto"


def test_a_1_by_10000_image_is_fitted_without_a_huge_canvas(tmp_path):
    from convkit.data.images import convert_image

    line = np.zeros((10_000, 1), np.uint8)
    line[4000:6000] = 255  # the middle fifth lit
    got = convert_image(line, (1, 28, 28))  # grey: padded, the whole line kept
    assert got["conversion"] == "1x10000 L -> resized to 1x28 -> padded to 28x28 with its " \
                                "border's mean colour"  # fmt: skip
    column = got["converted"][0, :, 13]
    bars = got["converted"][0, :, :13]  # the border's mean: here the whole line's, 20% lit
    assert (bars == 51).all() and column[14] == 255 and column[0] == 0
    wide = np.zeros((1, 10_000, 3), np.uint8)
    wide[:, 4990:5010] = (0, 0, 255)
    got = convert_image(wide, (3, 32, 32))  # a colour "photo": its centre, 1x1, fills the input
    assert got["conversion"] == "10000x1 RGB -> centre 1x1 cropped -> resized to 32x32"
    assert (got["converted"] == np.array([0, 0, 255], np.uint8)[:, None, None]).all()
