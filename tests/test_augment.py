"""Batch augmentation and per-channel standardization."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convkit.data import Batches, Split
from convkit.data.arrays import channel_stats, to_float
from convkit.data.augment import CropFlip, random_crop_flip


def test_each_image_is_a_shifted_possibly_mirrored_crop():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding shows
    out = random_crop_flip(images, 2, g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (2, 2, 2, 2))
    seen_offsets, flips = set(), 0
    for i in range(64):
        matches = []
        for dy in range(5):
            for dx in range(5):
                crop = padded[i, :, dy : dy + 8, dx : dx + 8]
                matches += [
                    (dy, dx, flip)
                    for flip in (False, True)
                    if torch.equal(out[i], crop.flip(2) if flip else crop)
                ]
        assert matches, f"image {i} is not a crop of its padded original"
        seen_offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(seen_offsets) > 10 and 16 < flips < 48  # offsets vary, about half are mirrored


def test_same_generator_state_same_augmentation():
    images = torch.randint(0, 256, (16, 1, 6, 6), dtype=torch.uint8)
    a = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    b = random_crop_flip(images, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_channel_stats_and_standardization():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (50, 3, 4, 5), dtype=np.uint8))
    split = Split(images, torch.zeros(50, dtype=torch.long))
    mean, std = channel_stats(split, chunk=7)
    ref = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-5)
    x = torch.cat([x for x, _ in Batches(split, 16, mean=mean, std=std)])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4)
    assert torch.allclose(to_float(images[:2]), images[:2].float() / 255)


def test_batches_augment_only_when_asked():
    split = Split(torch.randint(0, 256, (8, 1, 6, 6), dtype=torch.uint8), torch.arange(8))
    plain = torch.cat([x for x, _ in Batches(split, 4)])
    assert torch.allclose(plain, split.images.float() / 255)
    g = torch.Generator().manual_seed(0)
    augmented = torch.cat([x for x, _ in Batches(split, 4, augment=CropFlip(2, g))])
    assert not torch.equal(augmented, plain) and augmented.shape == plain.shape


def test_translate_shifts_within_a_tenth_of_the_side_and_never_mirrors():
    from convkit.data.augment import translate_pad
    from convkit.data.geometry import translate

    assert translate_pad((1, 28, 28)) == 3 and translate_pad((3, 32, 32)) == 4
    assert translate_pad((3, 5, 64)) == 1
    g = torch.Generator().manual_seed(0)
    image = torch.arange(1, 28 * 28 + 1, dtype=torch.int64).reshape(1, 1, 28, 28)
    image = (image % 251 + 1).to(torch.uint8)  # no zeros, no symmetry: every shift is unique
    batch = image.repeat(200, 1, 1, 1)
    out = CropFlip(3, g, flip=False)(batch, torch.arange(200), 1)
    shifts = {(dx, dy): translate(image, dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)}
    seen = set()
    for x in out:
        match = [k for k, v in shifts.items() if torch.equal(v[0], x)]
        assert len(match) == 1  # a shift by up to 3 pixels, zeros in; a mirror would match none
        seen.add(match[0])
    assert len(seen) > 30  # the shifts are drawn, not fixed


def test_resized_crop_at_full_scale_is_the_image_or_its_mirror():
    from convkit.data.augment import random_resized_crop_flip

    images = torch.randint(0, 256, (64, 3, 9, 7), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = random_resized_crop_flip(images, g, scale=(1.0, 1.0), ratio=(7 / 9, 7 / 9))
    assert out.shape == images.shape and out.dtype == torch.uint8
    same = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, images, strict=True)]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))
    assert 16 < sum(mirrored) < 48


def test_resized_crops_are_parts_stretched_to_full_size():
    """On a horizontal ramp (a pixel's value is its column x 8), each output row is a ramp
    too, spanning the crop's share of the width: from sqrt(0.35 x 3/4) ~ 0.51 to all of it."""
    from convkit.data.augment import random_resized_crop_flip

    ramp = (torch.arange(32) * 8).to(torch.uint8).expand(1, 32, 32)
    images = ramp.expand(200, 1, 32, 32).contiguous()
    out = random_resized_crop_flip(images, torch.Generator().manual_seed(1)).float()
    rows = out[:, 0, 16]  # (N, W)
    steps = rows.diff(dim=1)
    rising = (steps >= 0).all(1)
    assert ((steps <= 0).all(1) | rising).all()  # monotone: mirrored or not, never scrambled
    assert 0.3 < rising.float().mean() < 0.7
    span = (rows.amax(1) - rows.amin(1)) / (31 * 8)
    assert span.min() > 0.45 and span.max() <= 1.0 and span.std() > 0.1  # parts of many sizes
    again = random_resized_crop_flip(images, torch.Generator().manual_seed(1)).float()
    assert torch.equal(out, again)  # the generator decides everything
