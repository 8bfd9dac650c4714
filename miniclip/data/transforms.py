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
import os
import stat
import warnings

import numpy as np
from PIL import Image

# OpenAI's per-channel statistics (R, G, B), measured on their training images.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def resize_and_crop(image, size):
    """Shorter side to `size` (bicubic), then the central size x size square.

    image: a PIL.Image of any mode; returns a PIL.Image (size, size), same mode
    (16-bit and float modes come back as 8-bit 'L', see to_8bit).

    Beyond an aspect ratio of MAX_ASPECT, only the part that survives the
    crop is resampled: Pillow's resize(box=) maps the crop window back onto
    the source and samples it with the same bicubic filter (taps outside the
    box are still read), so the work stays ~size² however extreme the aspect
    ratio (a 1 x 1,000,000 image would otherwise become 32 x 32,000,000).
    """
    image = to_8bit(image)
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # torchvision's int(), not round()
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    if new_long <= MAX_ASPECT * size:  # the usual case: exactly OpenAI's resize, then crop
        image = image.resize((new_w, new_h), Image.BICUBIC)  # Pillow returns a copy when unchanged
        return image.crop((left, top, left + size, top + size))
    sx, sy = w / new_w, h / new_h  # source pixels per resized pixel
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return image.resize((size, size), Image.BICUBIC, box=box)


# The most pixels an image may have (64 Mpx, e.g. 8000 x 8000). Image.open reads only the
# header, so a small compressed file that would decode to gigabytes is refused before
# any pixel is decoded (Pillow itself only warns below 179 Mpx).
MAX_PIXELS = 64_000_000


class ImageRefusedError(ValueError):
    """An image file open_image will not decode; the message names the file."""


def open_image(path):
    """Image.open(path), refusing what would hang or decode to gigabytes, before decoding.

    A FIFO, a folder or a device is refused (opening a FIFO waits for a writer forever);
    an image of more than MAX_PIXELS pixels is refused from its header (Pillow's own
    decompression-bomb error included). Raises ImageRefusedError (a ValueError) naming
    the file; OSError for a missing file or one that is not an image.
    """
    mode = os.stat(path).st_mode  # never blocks, whatever the file is
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise ImageRefusedError(f"the image {path} is {kind}; give an image file")
    try:
        with warnings.catch_warnings():  # Pillow's bomb warning: the check below says it better
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own limit, 2 x 89 Mpx by default
        image = None
    if image is None or image.size[0] * image.size[1] > MAX_PIXELS:
        size = "" if image is None else f" ({image.size[0]} x {image.size[1]})"
        if image is not None:
            image.close()
        raise ImageRefusedError(f"the image {path} is too large{size}: more than "
                                f"{MAX_PIXELS:,} pixels, too many to decode safely; shrink it")
    return image


# Above this aspect ratio only the crop window is resampled (work ~size², not size² x aspect);
# its pixels can differ from resize-then-crop by one level (Pillow rounds its weights per box).
MAX_ASPECT = 4


def to_8bit(image):
    """16-bit and float images -> 8-bit 'L', scaled, not clipped; other modes unchanged.

    Pillow's convert('RGB') clips these to 0..255, so a 16-bit PNG turns white
    and a float TIFF black. Here: 16-bit (I;16*, and 'I', which Pillow uses
    for 16-bit PNGs) v -> round(v / 257) (0..65535 -> 0..255); float ('F')
    in [0, 1] -> round(255 v), a float image with values above 1 is taken
    as 0..255; out-of-range values are clipped.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        # round(v / 257) in integers, (2v + 257) // 514 (v / 257 never ends in exactly .5),
        # so a large image never becomes a float64 copy (8 bytes a pixel)
        v = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        return Image.fromarray(((2 * v + 257) // 514).astype(np.uint8), mode="L")
    if image.mode == "F":
        x = np.asarray(image).astype(np.float64)
        x = np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0)
        if x.size and x.max() <= 1.0:
            x = x * 255.0
    else:
        return image
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8), mode="L")


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
