"""OpenAI's preprocessing, batch normalisation and the NumPy augmentations."""
import numpy as np
import pytest
from PIL import Image

from miniclip.data.transforms import (MEAN, STD, Preprocess, normalize_batch, random_crop,
                                      random_flip)


def by_hand(image, r):
    """torchvision's Resize(r, BICUBIC) + CenterCrop(r) + ToTensor + Normalize, spelled out."""
    w, h = image.size
    if w <= h:
        size = (r, int(r * h / w))
    else:
        size = (int(r * w / h), r)
    resized = image.resize(size, Image.BICUBIC)
    top = int(round((size[1] - r) / 2.0))
    left = int(round((size[0] - r) / 2.0))
    pixels = np.asarray(resized.convert("RGB"))[top:top + r, left:left + r]  # numpy crop
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("size", [(55, 37), (37, 61), (24, 24), (90, 24)])
def test_preprocess_matches_hand_computation(size):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    out = Preprocess(24)(image)
    assert out.shape == (3, 24, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, by_hand(image, 24), rtol=0, atol=1e-6)


def test_preprocess_long_side_is_truncated_not_rounded():
    # 24 * 55 / 37 = 35.68: torchvision resizes to 35 wide, not 36; the crop then starts
    # at round(5.5) = 6. A gradient image shows which columns were kept.
    ramp = np.tile(np.linspace(0, 255, 55).astype(np.uint8)[None, :, None], (37, 1, 3))
    image = Image.fromarray(ramp)
    wrong = np.asarray(image.resize((36, 24), Image.BICUBIC))[:, 6:30]
    out = Preprocess(24)(image)
    right = by_hand(image, 24)
    np.testing.assert_allclose(out, right, atol=1e-6)
    wrong = (wrong.astype(np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    assert np.abs(out - wrong.transpose(2, 0, 1)).max() > 0.01


def test_preprocess_converts_modes():
    rng = np.random.default_rng(1)
    grey = Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8))  # mode L
    out = Preprocess(16)(grey)
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out, by_hand(grey, 16), atol=1e-6)
    # a grey image gives the same value in each channel before normalisation
    raw = out * np.array(STD, np.float32)[:, None, None] + np.array(MEAN, np.float32)[:, None, None]
    np.testing.assert_allclose(raw[0], raw[1], atol=1e-6)


def test_normalize_batch():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    out = normalize_batch(images)
    assert out.shape == (5, 3, 8, 8) and out.dtype == np.float32 and out.flags.c_contiguous
    for c in range(3):
        expect = (images[..., c] / 255.0 - MEAN[c]) / STD[c]
        np.testing.assert_allclose(out[:, c], expect, atol=1e-5)
    # the same numbers as Preprocess on an image already at the resolution
    one = Preprocess(8)(Image.fromarray(images[0]))
    np.testing.assert_array_equal(out[0], one)
    with pytest.raises(ValueError, match="uint8"):
        normalize_batch(images.astype(np.float32))


def unique_images(n, s=8):
    """Images whose pixels are all different, so a crop offset can be recognised."""
    base = np.random.default_rng(3).permutation(n * s * s * 3) % 251 + 1  # no zeros
    return base.reshape(n, s, s, 3).astype(np.uint8)


def test_random_crop_is_a_window_of_the_padded_image():
    images = unique_images(32)
    out = random_crop(images, np.random.default_rng(0), padding=4)
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(out[i], padded[i, dy:dy + 8, dx:dx + 8])]
        assert len(matches) >= 1, f"image {i} is not a crop of its padded self"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets differ between images
    # deterministic for a given generator state; padding 0 is the identity
    again = random_crop(images, np.random.default_rng(0), padding=4)
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(random_crop(images, np.random.default_rng(5), padding=0), images)


def test_random_flip_really_flips():
    images = unique_images(1000)
    out = random_flip(images, np.random.default_rng(0))
    flipped = np.array([np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(out, images)])
    assert np.all(flipped ^ kept)  # every image is exactly one of the two
    assert 400 < flipped.sum() < 600
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(1), p=1.0),
                                  images[:, :, ::-1])
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(1), p=0.0), images)
    np.testing.assert_array_equal(out, random_flip(images, np.random.default_rng(0)))
