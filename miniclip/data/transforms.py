"""Turning pixels into the float arrays the model eats.

Two jobs live here:

1. OpenAI's preprocessing, reproduced exactly, so pretrained weights see the
   same numbers they were trained on (torchvision's Resize + CenterCrop +
   ToTensor + Normalize, written with Pillow and NumPy):
       resize the shorter side to R (bicubic), the longer to int(R * long / short)
       center-crop R x R, top = int(round((h - R) / 2)), same for left
       convert to RGB, scale to [0, 1], x = (x - mean) / std, layout (3, R, R)

2. Training augmentation on whole uint8 batches (N, S, S, 3) in NumPy:
   a random crop of a zero-padded image and a random horizontal flip, with no
   Python loop over the images.

From-scratch training normalises with the same MEAN / STD as OpenAI (they are
close to CIFAR's own statistics, and one pair of constants is simpler).
"""
import numpy as np
from PIL import Image

# OpenAI's per-channel statistics (R, G, B), measured on their training images.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def resize_and_crop(image, size):
    """Shorter side to `size` (bicubic), then the central size x size square.

    image: a PIL.Image of any mode; returns a PIL.Image (size, size), same mode.
    """
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # torchvision's int(), not round()
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize((new_w, new_h), Image.BICUBIC)  # Pillow returns a copy when unchanged
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class Preprocess:
    """OpenAI's `preprocess`: PIL.Image -> float32 (3, R, R), normalised.

    >>> preprocess = Preprocess(224)
    >>> x = preprocess(Image.open("cat.jpg"))   # (3, 224, 224)
    """

    def __init__(self, resolution, mean=MEAN, std=STD):
        self.resolution = resolution
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def __call__(self, image):
        image = resize_and_crop(image, self.resolution).convert("RGB")  # same order as OpenAI
        x = np.asarray(image, dtype=np.float32) / np.float32(255.0)  # (R, R, 3) in [0, 1]
        x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, R, R)

    def __repr__(self):
        return f"Preprocess(resolution={self.resolution})"


def normalize_batch(images, mean=MEAN, std=STD):
    """uint8 (N, S, S, 3) -> float32 (N, 3, S, S): x / 255, then (x - mean) / std."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"normalize_batch wants uint8 (N, S, S, 3) images, got "
                         f"{images.dtype} {images.shape}")
    x = images.astype(np.float32) / np.float32(255.0)  # (N, S, S, 3)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, 3, S, S)


def random_crop(images, rng, padding=4):
    """Pad each image with `padding` zeros on every side and cut a random S x S window.

    images: uint8 (N, S, S, 3); rng: numpy Generator. Returns a new (N, S, S, 3)
    array. Same as torchvision's RandomCrop(S, padding) (zero fill), batched.
    """
    n, s = images.shape[0], images.shape[1]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    top = rng.integers(0, 2 * padding + 1, size=n)  # (N,) window corner in the padded image
    left = rng.integers(0, 2 * padding + 1, size=n)
    rows = top[:, None] + np.arange(s)  # (N, S) which padded rows each image keeps
    cols = left[:, None] + np.arange(s)  # (N, S)
    # One gather: out[i, y, x] = padded[i, rows[i, y], cols[i, x]]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images, rng, p=0.5):
    """Mirror each image left-right with probability p. uint8 (N, S, S, 3) -> new array."""
    flip = rng.random(images.shape[0]) < p  # (N,) bool
    out = images.copy()
    out[flip] = images[flip, :, ::-1]  # reverse the width axis of the chosen images
    return out
