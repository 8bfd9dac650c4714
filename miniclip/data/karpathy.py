"""COCO and Flickr30k retrieval data: Karpathy's split file plus a folder of images.

The retrieval benchmarks (CLIP paper Table 13, CLIP_benchmark) use Karpathy's
splits, one JSON file per dataset (dataset_coco.json, dataset_flickr30k.json):

    {"images": [{"filename": "1000092795.jpg", "split": "test",
                 "sentences": [{"raw": "Two young guys with shaggy hair ..."}, ... 5 of them]},
                ...]}

COCO entries also hold "filepath" ("train2014" / "val2014"), the sub-folder of the
image. Splits: train, val, test, and COCO's restval (more training images).

    data = KarpathyDataset("dataset_flickr30k.json", "flickr30k-images", split="test")
    data.arrays()            # uint8 (N, S, S, 3): each image's shorter side resized to S
                             # (bicubic), the central S x S kept (OpenAI's preprocess, in uint8)
    data.texts_per_image     # N lists of captions (5 each for Flickr30k and COCO)
"""
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np

from miniclip.data.captions import one_caption_each
from miniclip.data.transforms import ImageRefusedError, open_image, resize_and_crop
from miniclip.fileio import read_bounded

# dataset_coco.json is about 150 MB; anything far larger is not a split file
MAX_JSON_BYTES = 1 << 30


def _relative(value, where, path):
    """A relative path inside the image folder, or a ValueError naming the entry."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not value or value.startswith(("/", "\\")) or ".." in parts:
        raise ValueError(f"{path}: {where} is {value!r}: must be a file name inside the "
                         f"image folder (no absolute path, no '..')")
    return value


def _text(entry, key, where, path, optional=False):
    """entry[key] as a string, or a ValueError naming the entry and the problem."""
    if optional and key not in entry:
        return ""
    value = entry.get(key)
    if not isinstance(value, str):
        problem = "is missing" if key not in entry else f"is {type(value).__name__}, not a string"
        raise ValueError(f"{path}: {where}.{key} {problem}; not a Karpathy-split file "
                         f"(dataset_coco.json / dataset_flickr30k.json)?")
    return value


def read_karpathy(path, split):
    """[(image path relative to the image folder, [captions])] of a split (a name, or a
    tuple of names: ('train', 'restval') is COCO's training set), in file order.

    Everything wrong with the file is one ValueError naming it and the entry: not a
    regular file, larger than MAX_JSON_BYTES, not JSON, not the Karpathy layout, an
    image with no captions, a path leaving the image folder, a split that no image has.
    """
    data = read_bounded(path, MAX_JSON_BYTES, "Karpathy-split JSON")
    try:
        top = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column "
                         f"{err.colno}); give dataset_coco.json or dataset_flickr30k.json") from None
    except (UnicodeDecodeError, RecursionError) as err:
        problem = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else "nested too deeply"
        raise ValueError(f"{path}: not a JSON file miniclip reads ({problem}); give "
                         f"dataset_coco.json or dataset_flickr30k.json") from None
    if not isinstance(top, dict) or not isinstance(top.get("images"), list):
        raise ValueError(f"{path}: no 'images' list at the top; not a Karpathy-split file "
                         f"(dataset_coco.json / dataset_flickr30k.json)")
    wanted = {split} if isinstance(split, str) else set(split)
    chosen, splits = [], set()
    for i, entry in enumerate(top["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: {where} is {type(entry).__name__}, not an object")
        image_split = _text(entry, "split", where, path)
        splits.add(image_split)
        if image_split not in wanted:
            continue
        name = _relative(_text(entry, "filename", where, path), f"{where}.filename", path)
        folder = _text(entry, "filepath", where, path, optional=True)
        if folder:
            name = _relative(folder, f"{where}.filepath", path) + "/" + name
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise ValueError(f"{path}: {where} ({name}) has no 'sentences' list of captions")
        captions = [_text(s if isinstance(s, dict) else {}, "raw", f"{where}.sentences[{j}]", path)
                    for j, s in enumerate(sentences)]
        chosen.append((name, captions))
    if not chosen:
        raise ValueError(f"{path}: no image in split {' or '.join(sorted(wanted))}; the file's splits: "
                         f"{', '.join(sorted(splits)) or 'none'}")
    return chosen


class KarpathyDataset:
    """One split of a Karpathy-split file, its images loaded from `images` (a folder).

    ds.arrays() -> uint8 (N, S, S, 3); ds.texts_per_image -> N lists of captions;
    ds.captions(indices, rng=None) -> one caption per image (the DataLoader's interface:
    rng None, the first; a Generator, one drawn from it, a new one every epoch).
    split: a split name, or a tuple of them (('train', 'restval'): COCO's training set).
    An unreadable image is an error naming the JSON entry's file.
    """

    def __init__(self, path, images, split="test", image_size=32):
        self.path, self.folder, self.image_size = Path(path), Path(images), image_size
        if not self.folder.is_dir():
            raise ValueError(f"--images {images}: not a folder; give the folder holding the "
                             f"images {self.path.name} names")
        entries = read_karpathy(self.path, split)
        arrays, self.files, self.texts_per_image = [], [], []
        for name, captions in entries:
            file = self.folder / name
            try:
                with open_image(file) as raw:  # refuses FIFOs, folders, > MAX_PIXELS pixels
                    arrays.append(np.asarray(resize_and_crop(raw, image_size).convert("RGB")))
            except (OSError, SyntaxError, ValueError) as err:  # missing, not an image, truncated
                problem = str(err) if isinstance(err, ImageRefusedError) else \
                    f"cannot read the image {file}: {err}"
                raise ValueError(f"{self.path} ({name}): {problem}") from None
            self.files.append(os.fspath(file))
            self.texts_per_image.append(captions)
        self.images_array = np.stack(arrays)   # (N, S, S, 3) uint8
        self._draw = one_caption_each(self.texts_per_image)

    def __len__(self):
        return len(self.texts_per_image)

    def arrays(self):
        """All images, uint8 (N, S, S, 3)."""
        return self.images_array

    def captions(self, indices, rng=None):
        """One caption per index: rng None, the image's first; a Generator, one drawn from it."""
        return self._draw(indices, rng)

    def __repr__(self):
        return (f"KarpathyDataset({str(self.path)!r}, images={len(self)}, "
                f"captions={sum(map(len, self.texts_per_image))})")
