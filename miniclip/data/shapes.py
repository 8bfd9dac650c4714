"""Captioned shapes: a procedural image-text dataset that needs no download.

    ds = ShapesDataset("train", seed=0)
    image, caption, attrs = ds[0]      # uint8 (32, 32, 3), 'a small red circle in the top left.'
    images = ds.arrays()               # uint8 (N, 32, 32, 3), all at once (vectorised)
    texts = ds.captions(np.arange(8), rng)   # a fresh caption template per call

Each image is a dark, lightly noisy background with one object (two in some
training images). An object is a shape x colour x size x position:
    SHAPES     circle, square, triangle, star, cross, diamond
    COLOURS    red, green, blue, yellow, purple, orange, white, cyan (jittered)
    SIZES      small, large
    POSITIONS  a 3 x 3 grid: top left, top, top right, left, center, right,
               bottom left, bottom, bottom right
Captions say the same facts in varied order and wording ('there is a large
green triangle on the left.', 'top left: a red circle.', 'a blue square to the
left of a yellow star.'), so the text tower has to read them.

Splits (sizes by default; any `size` may be asked for):
    train    50,000  one object (75 %) or two (25 %), never a HELDOUT_PAIRS combination
    test      2,000  one object, never a HELDOUT_PAIRS combination
    heldout   2,000  one object whose colour-shape pair is in HELDOUT_PAIRS: pairs
                     never seen in training, to measure compositional zero-shot
                     generalisation (every colour and every shape alone is seen)
Test images hold one object, so each attribute has one true answer for
zero-shot classification (`labels(attribute)`, `zero_shot_tasks()`).

Everything about image i is a function of (seed, split, i) alone: the random
numbers are a hash of those integers (a counter-based generator, like
JAX's or Philox), so any image can be made on its own or 50,000 at once, in
any order, with the same result.
"""
import functools
import re

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "cyan"]
COLOUR_RGB = np.array([  # the base colour of each name; every object is jittered by +-20
    [220, 40, 40], [40, 180, 60], [40, 80, 230], [240, 220, 40],
    [150, 50, 200], [250, 140, 30], [235, 235, 235], [40, 210, 220]], dtype=np.float32)
SHAPES = ["circle", "square", "triangle", "star", "cross", "diamond"]
SIZES = ["small", "large"]
POSITIONS = ["top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right"]  # position p is grid row p // 3, column p % 3

# Colour-shape pairs that no training image contains (each colour once).
HELDOUT_PAIRS = [("red", "triangle"), ("green", "star"), ("blue", "cross"),
                 ("yellow", "diamond"), ("purple", "circle"), ("orange", "square"),
                 ("white", "triangle"), ("cyan", "star")]

SPLIT_SIZES = {"train": 50_000, "test": 2_000, "heldout": 2_000}
PAIR_FRACTION = 0.25  # share of training images with two objects

CENTRES = (0.22, 0.5, 0.78)  # grid row / column centres, as fractions of the image side
BOX = {"small": 0.28, "large": 0.44}  # side of an object's box, as a fraction of the side
COLOUR_JITTER = 20.0
NOISE_STD = 6.0

# Words for positions. 'in the {position}' is always one of them, so captions
# and the zero-shot prompts share it.
WHERE = {
    "top left": ["in the top left", "in the top left corner", "at the top left"],
    "top": ["in the top", "at the top", "near the top"],
    "top right": ["in the top right", "in the top right corner", "at the top right"],
    "left": ["in the left", "on the left", "at the left side"],
    "center": ["in the center", "in the middle", "at the center"],
    "right": ["in the right", "on the right", "at the right side"],
    "bottom left": ["in the bottom left", "in the bottom left corner", "at the bottom left"],
    "bottom": ["in the bottom", "at the bottom", "near the bottom"],
    "bottom right": ["in the bottom right", "in the bottom right corner", "at the bottom right"],
}

# One-object captions. Some leave an attribute out, as real captions do.
TEMPLATES_ONE = [
    "a {size} {colour} {shape} {where}.",
    "there is a {size} {colour} {shape} {where}.",
    "{where}, a {size} {colour} {shape}.",
    "{position}: a {size} {colour} {shape}.",
    "the {size} {colour} {shape} is {where}.",
    "a picture of a {size} {colour} {shape} {where}.",
    "a {size} {shape} coloured {colour}, {where}.",
    "the {shape} is {colour} and {size}, {where}.",
    "a {colour} {shape}, {size}, {where}.",
    "one {size} {colour} {shape} {where}.",
    "a {colour} {shape} {where}.",
    "a {size} {colour} {shape}.",
    "the {colour} {shape}.",
    "a {size} {shape} {where}.",
    "something {colour} {where}.",
    "the {colour} shape is {size} and sits {where}.",
]
# Two-object captions: {a} and {b} are 'size colour shape' or 'colour shape'.
TEMPLATES_TWO = [
    "a {a} and a {b}.",
    "a {a} {relation} a {b}.",
    "a {a} next to a {b}.",
    "two shapes: a {a} and a {b}.",
    "a {a} {where_a} and a {b} {where_b}.",
    "there is a {a} {where_a} and a {b} {where_b}.",
    "{where_a}, a {a}; {where_b}, a {b}.",
]

SPLITS = {"train": 0, "test": 1, "heldout": 2}


# ----------------------------------------------------------------------------
# Random numbers from a hash: (key, index, stream) -> uniform float in [0, 1)
# ----------------------------------------------------------------------------
def _mix(x):
    """SplitMix64's finaliser on uint64 arrays: each input bit flips about half the output bits."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)  # wraps mod 2**64
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniform(key, index, stream):
    """One uniform float in [0, 1) per index: a hash of (key, index, stream). index: (N,) ints."""
    golden = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, the SplitMix64 step
    x = _mix(np.asarray(index, dtype=np.uint64) * np.uint64(golden) + key)  # (N,) uint64
    x = _mix(x + np.uint64(stream * golden % 2 ** 64))
    return (x >> np.uint64(11)).astype(np.float64) / 2.0 ** 53  # top 53 bits -> [0, 1)


def _choose(u, n):
    """Uniform floats in [0, 1) -> ints in [0, n)."""
    return np.minimum((u * n).astype(np.int64), n - 1)


def _fix_articles(text):
    """'a orange circle' -> 'an orange circle'."""
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


# ----------------------------------------------------------------------------
# Object masks, drawn once per image size with Pillow
# ----------------------------------------------------------------------------
def _star(n_points=5, outer=0.5, inner=0.21):
    angles = np.pi / 2 + np.arange(2 * n_points) * np.pi / n_points  # first point up
    radius = np.where(np.arange(2 * n_points) % 2 == 0, outer, inner)
    return list(zip(0.5 + radius * np.cos(angles), 0.54 - radius * np.sin(angles)))


_OUTLINES = {  # polygons (or an ellipse box) in a unit box, y pointing down
    "circle": ("ellipse", [(0.04, 0.04), (0.96, 0.96)]),
    "square": ("polygon", [(0.12, 0.12), (0.88, 0.12), (0.88, 0.88), (0.12, 0.88)]),
    "triangle": ("polygon", [(0.5, 0.04), (0.96, 0.9), (0.04, 0.9)]),
    "star": ("polygon", _star()),
    "cross": ("polygon", [(0.35, 0.04), (0.65, 0.04), (0.65, 0.35), (0.96, 0.35),
                          (0.96, 0.65), (0.65, 0.65), (0.65, 0.96), (0.35, 0.96),
                          (0.35, 0.65), (0.04, 0.65), (0.04, 0.35), (0.35, 0.35)]),
    "diamond": ("polygon", [(0.5, 0.02), (0.98, 0.5), (0.5, 0.98), (0.02, 0.5)]),
}


def box_size(size_name, image_size):
    """Side in pixels of the square box a small or large object is drawn in."""
    return int(round(BOX[size_name] * image_size))


@functools.lru_cache(maxsize=None)
def shape_masks(image_size):
    """{(shape, size): float32 (b, b) coverage in [0, 1]}, drawn 4x larger and averaged (antialiasing)."""
    masks = {}
    for shape in SHAPES:
        kind, points = _OUTLINES[shape]
        for size in SIZES:
            b = box_size(size, image_size)
            big = Image.new("L", (4 * b, 4 * b), 0)
            scaled = [(x * 4 * b, y * 4 * b) for x, y in points]
            getattr(ImageDraw.Draw(big), kind)(scaled, fill=255)
            m = np.asarray(big, dtype=np.float32).reshape(b, 4, b, 4).mean(axis=(1, 3)) / 255.0
            masks[shape, size] = m
    return masks


@functools.lru_cache(maxsize=4)
def _noise_bank(seed, image_size):
    """float32 (64, S, S, 3) Gaussian noise fields; images pick one and shift it."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, NOISE_STD, (64, image_size, image_size, 3)).astype(np.float32)


def _pair_positions():
    """Ordered position pairs two grid cells apart in a row or column: two large objects never touch."""
    pairs = [(p, q) for p in range(9) for q in range(9)
             if abs(p // 3 - q // 3) == 2 or abs(p % 3 - q % 3) == 2]
    return np.array(pairs, dtype=np.int64)  # (32, 2)


def _relations(p, q):
    """How position p stands to position q: the relation words that are clearly true."""
    words = []
    if q % 3 - p % 3 == 2:
        words.append("to the left of")
    if p % 3 - q % 3 == 2:
        words.append("to the right of")
    if q // 3 - p // 3 == 2:
        words.append("above")
    if p // 3 - q // 3 == 2:
        words.append("below")
    return words


# ----------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------
class ShapesDataset:
    """Procedural captioned shapes; see the module docstring.

    split: 'train' | 'test' | 'heldout'; seed: int; image_size: 32 or 64 (any
    size from 16 up works); size: number of images (default SPLIT_SIZES[split]).
    ds[i] -> (image uint8 (S, S, 3), caption str, attributes dict).
    """

    def __init__(self, split="train", seed=0, image_size=32, size=None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use one of {list(SPLITS)}")
        if image_size < 16:
            raise ValueError(f"image_size={image_size} is too small to draw shapes: use 16 or more")
        self.split, self.seed, self.image_size = split, seed, image_size
        self.size = SPLIT_SIZES[split] if size is None else int(size)
        # one 64-bit key per (seed, split): every random number of this dataset hangs off it
        self.key = _mix(np.array([seed], dtype=np.uint64) * np.uint64(4) + np.uint64(SPLITS[split]))[0]
        self.objects = self._sample_objects()
        self._arrays = None

    def __len__(self):
        return self.size

    def _uniform(self, stream, slot=0, index=None):
        index = np.arange(self.size) if index is None else index
        return _uniform(self.key, index, 1000 * slot + stream)

    def _sample_objects(self):
        """Every attribute of every image, as arrays {name: (N, 2)}: slot 0 is the main
        object, slot 1 the second object of two-object images (-1 where there is none)."""
        n, s, u = self.size, self.image_size, self._uniform
        held = {(COLOURS.index(colour), SHAPES.index(shape)) for colour, shape in HELDOUT_PAIRS}
        every = [(c, k) for c in range(len(COLOURS)) for k in range(len(SHAPES))]
        combos = np.array(sorted(held) if self.split == "heldout" else
                          [pair for pair in every if pair not in held])  # (K, 2) colour, shape
        two = u(1) < PAIR_FRACTION if self.split == "train" else np.zeros(n, dtype=bool)

        position = np.stack([_choose(u(2), 9), np.full(n, -1)], axis=1)  # (N, 2)
        pairs = _pair_positions()[_choose(u(3), 32)]  # (N, 2)
        position[two] = pairs[two]

        colour, shape, size, top, left = (np.full((n, 2), -1, dtype=np.int64) for _ in range(5))
        rgb = np.zeros((n, 2, 3), dtype=np.float32)
        centres = np.array(CENTRES) * s  # pixel centre of grid row / column 0, 1, 2
        jitter_px = max(1, s // 32)
        for slot in (0, 1):
            combo = combos[_choose(u(4, slot), len(combos))]  # (N, 2)
            colour[:, slot], shape[:, slot] = combo[:, 0], combo[:, 1]
            size[:, slot] = _choose(u(5, slot), 2)
            jitter = np.stack([u(6 + c, slot) for c in range(3)], axis=1) * 2 - 1  # (N, 3) in [-1, 1)
            rgb[:, slot] = np.clip(COLOUR_RGB[colour[:, slot]] + COLOUR_JITTER * jitter, 0, 255)
            # the object's box: centred on its grid cell, moved by up to jitter_px pixels
            b = np.array([box_size(z, s) for z in SIZES])[size[:, slot]]  # (N,)
            cell = np.maximum(position[:, slot], 0)
            dy = _choose(u(9, slot), 2 * jitter_px + 1) - jitter_px
            dx = _choose(u(10, slot), 2 * jitter_px + 1) - jitter_px
            top[:, slot] = np.clip(np.round(centres[cell // 3] - b / 2).astype(np.int64) + dy, 0, s - b)
            left[:, slot] = np.clip(np.round(centres[cell % 3] - b / 2).astype(np.int64) + dx, 0, s - b)
        for attribute in (colour, shape, size, top, left):
            attribute[~two, 1] = -1  # single-object images have no second object
        return {"colour": colour, "shape": shape, "size": size, "position": position,
                "top": top, "left": left, "rgb": rgb, "count": 1 + two.astype(np.int64)}

    # ---------------------------------------------------------------- images
    def images(self, indices):
        """uint8 (len(indices), S, S, 3): the images at these indices, made in chunks of 4096."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.size):
            raise IndexError(f"index out of range for a {self.split} set of {self.size} images")
        s = self.image_size
        out = np.empty((len(indices), s, s, 3), dtype=np.uint8)
        for start in range(0, len(indices), 4096):
            chunk = indices[start:start + 4096]
            out[start:start + len(chunk)] = self._render(chunk)
        return out

    def arrays(self):
        """All images, uint8 (N, S, S, 3); made on the first call, then kept."""
        if self._arrays is None:
            self._arrays = self.images(np.arange(self.size))
        return self._arrays

    def _render(self, idx):
        """Draw images idx (n,) -> uint8 (n, S, S, 3)."""
        n, s, u = len(idx), self.image_size, self._uniform
        # background: a dark grey level with a slight tint, per image
        level = 10 + 60 * u(20, index=idx)  # (n,)
        tint = (np.stack([u(21 + c, index=idx) for c in range(3)], axis=1) * 2 - 1) * 8  # (n, 3)
        canvas = np.empty((n, s, s, 3), dtype=np.float32)
        canvas[:] = (level[:, None] + tint)[:, None, None, :]

        # objects: one pass per (slot, shape, size), painting every image that has it
        for slot in (0, 1):
            for (shape, size), mask in shape_masks(s).items():
                has = ((self.objects["shape"][idx, slot] == SHAPES.index(shape))
                       & (self.objects["size"][idx, slot] == SIZES.index(size)))
                rows = np.nonzero(has)[0]  # positions in this chunk
                self._paint(canvas, rows, idx[rows], slot, mask)

        # light noise: one of 64 fixed noise fields, shifted by a random amount per image
        bank = _noise_bank(self.seed, s)  # (64, S, S, 3)
        pick = _choose(u(40, index=idx), 64)
        ys = (np.arange(s) + _choose(u(41, index=idx), s)[:, None]) % s  # (n, S)
        xs = (np.arange(s) + _choose(u(42, index=idx), s)[:, None]) % s
        canvas += bank[pick[:, None, None], ys[:, :, None], xs[:, None, :]]
        return np.clip(np.round(canvas), 0, 255).astype(np.uint8)

    def _paint(self, canvas, rows, images, slot, mask):
        """Blend the slot's object into canvas[rows] (images: their dataset indices).

        mask: (b, b) coverage; pixel = old * (1 - mask) + colour * mask, so edges are soft.
        """
        b = mask.shape[0]
        ys = self.objects["top"][images, slot][:, None] + np.arange(b)  # (m, b)
        xs = self.objects["left"][images, slot][:, None] + np.arange(b)  # (m, b)
        box = (rows[:, None, None], ys[:, :, None], xs[:, None, :])  # indexes (m, b, b) pixels
        colour = self.objects["rgb"][images, slot][:, None, None, :]  # (m, 1, 1, 3)
        m = mask[None, :, :, None]  # (1, b, b, 1)
        canvas[box] = canvas[box] * (1 - m) + colour * m

    # -------------------------------------------------------------- captions
    def captions(self, indices, rng=None):
        """One caption per index. rng=None: the fixed caption of each image (as ds[i]
        gives); a numpy Generator: a template drawn afresh, so captions vary per epoch."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if rng is None:
            draws = np.stack([self._uniform(50 + k, index=indices) for k in range(4)], axis=1)
        else:
            draws = rng.random((len(indices), 4))
        return [self._caption(i, d) for i, d in zip(indices, draws)]

    def caption_set(self, indices, count=5):
        """`count` captions per index, each from a different template, so differently
        worded (COCO and Flickr30k have five per image); fixed by (seed, index).
        Returns one list of `count` strings per index."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        draws = np.stack([self._uniform(50 + k, index=indices) for k in range(4)], axis=1)
        out = []
        for i, d in zip(indices, draws):
            n = len(TEMPLATES_ONE) if self.objects["count"][i] == 1 else len(TEMPLATES_TWO)
            first = _choose(d[0], n)
            out.append([self._caption(i, [((first + k) % n + 0.5) / n,   # the k-th template after it
                                          (d[1] + k / count) % 1.0, d[2], d[3]])
                        for k in range(count)])
        return out

    def _caption(self, i, draws):
        """The caption of image i from 4 uniform numbers (template, wording, order, relation)."""
        o = self.objects
        words = [{"size": SIZES[o["size"][i, k]], "colour": COLOURS[o["colour"][i, k]],
                  "shape": SHAPES[o["shape"][i, k]], "position": POSITIONS[o["position"][i, k]]}
                 for k in range(o["count"][i])]
        for w in words:
            options = WHERE[w["position"]]
            w["where"] = options[_choose(draws[1], len(options))]
        if len(words) == 1:
            template = TEMPLATES_ONE[_choose(draws[0], len(TEMPLATES_ONE))]
            return _fix_articles(template.format(**words[0]))
        a, b = words if draws[2] < 0.5 else words[::-1]  # either object may come first
        relations = _relations(POSITIONS.index(a["position"]), POSITIONS.index(b["position"]))
        short = draws[3] < 0.5  # 'colour shape' or 'size colour shape'
        phrase = "{colour} {shape}" if short else "{size} {colour} {shape}"
        template = TEMPLATES_TWO[_choose(draws[0], len(TEMPLATES_TWO))]
        return _fix_articles(template.format(
            a=phrase.format(**a), b=phrase.format(**b), where_a=a["where"], where_b=b["where"],
            relation=relations[_choose(draws[1], len(relations))]))

    # ------------------------------------------------------------ attributes
    def labels(self, attribute):
        """int64 (N,): the main object's class index for 'colour', 'shape', 'size',
        'position', or 'object' (colour-shape pair, colour * len(SHAPES) + shape)."""
        if attribute == "object":
            return self.objects["colour"][:, 0] * len(SHAPES) + self.objects["shape"][:, 0]
        if attribute not in ("colour", "shape", "size", "position"):
            raise ValueError(f"unknown attribute {attribute!r}: use colour, shape, size, position or object")
        return self.objects[attribute][:, 0].copy()

    def attributes(self, i):
        """The facts of image i: the main object's names and class indices, and every object."""
        o = self.objects
        objects = [{"colour": COLOURS[o["colour"][i, k]], "shape": SHAPES[o["shape"][i, k]],
                    "size": SIZES[o["size"][i, k]], "position": POSITIONS[o["position"][i, k]],
                    "rgb": tuple(int(round(v)) for v in o["rgb"][i, k]),
                    "box": (int(o["top"][i, k]), int(o["left"][i, k]),
                            box_size(SIZES[o["size"][i, k]], self.image_size))}
                   for k in range(o["count"][i])]
        main = objects[0]
        return {**{k: main[k] for k in ("colour", "shape", "size", "position")},
                "colour_index": int(o["colour"][i, 0]), "shape_index": int(o["shape"][i, 0]),
                "size_index": int(o["size"][i, 0]), "position_index": int(o["position"][i, 0]),
                "objects": objects}

    def __getitem__(self, i):
        if not -self.size <= i < self.size:
            raise IndexError(f"index {i} out of range for a {self.split} set of {self.size} images")
        i = i % self.size
        return self.images([i])[0], self.captions([i])[0], self.attributes(i)

    def __repr__(self):
        return (f"ShapesDataset(split={self.split!r}, seed={self.seed}, "
                f"image_size={self.image_size}, size={self.size})")


# ----------------------------------------------------------------------------
# Zero-shot prompts and a text corpus for the tokenizer
# ----------------------------------------------------------------------------
def zero_shot_tasks():
    """{attribute: (classnames, templates)} for zero-shot classification.

    Class k of an attribute is `ShapesDataset.labels(attribute) == k`. Prompts
    are `template.format(classname)`; no template puts 'a' before a colour, so
    'orange' never needs 'an'. 'object' (colour-shape pairs) is the one to run
    on the heldout split.
    """
    return {
        "colour": (list(COLOURS), ["the {} shape.", "the {} object.", "a shape coloured {}.",
                                   "something {}."]),
        "shape": (list(SHAPES), ["a {}.", "a picture of a {}.", "the {}.", "there is a {}."]),
        "size": (list(SIZES), ["a {} shape.", "the {} shape.", "a {} object."]),
        "position": (list(POSITIONS), ["a shape in the {}.", "something in the {}.",
                                       "{}: a shape."]),
        "object": ([f"{c} {s}" for c in COLOURS for s in SHAPES],
                   ["the {}.", "one {}.", "a picture of one {}."]),
    }


def caption_corpus(num_captions=20000, seed=0):
    """Text to train a tokenizer on: captions of training images, then every zero-shot prompt."""
    ds = ShapesDataset("train", seed=seed, size=num_captions)
    texts = ds.captions(np.arange(num_captions), np.random.default_rng(seed))
    for classnames, templates in zero_shot_tasks().values():
        texts += [t.format(c) for t in templates for c in classnames]
    return texts
