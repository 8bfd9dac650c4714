"""Your own image-caption pairs, listed in a CSV file (OpenCLIP's convention).

    filepath	title
    photos/cat.jpg	a cat asleep on a sofa
    photos/dog.png	a dog catching a ball

Tab-separated by default (`sep`), columns `filepath` and `title` by default
(`img_key`, `caption_key`). Relative paths are relative to the CSV file's
folder. Every image is loaded once, its shorter side resized to S (bicubic)
and the central S x S square kept, into one uint8 array (N, S, S, 3).
"""
import csv
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from miniclip.data.transforms import resize_and_crop


class CsvDataset:
    """Image-caption pairs from a CSV file, held in memory.

    on_error: 'fail' (default) stops at the first unreadable image and names
    it; 'skip' leaves such rows out, warns with their count, and lists their
    paths in `self.skipped`.
    ds[i] -> (image uint8 (S, S, 3), caption str); ds.arrays() -> uint8 (N, S, S, 3);
    ds.captions(indices, rng=None) -> list of str (the DataLoader's interface).
    """

    def __init__(self, path, image_size=32, sep="\t", img_key="filepath", caption_key="title",
                 on_error="fail"):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'fail' or 'skip'")
        self.path, self.image_size = Path(path), image_size
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=sep)
            columns = reader.fieldnames or []
            for key, flag in ((img_key, "img_key"), (caption_key, "caption_key")):
                if key not in columns:
                    hint = (" The file may not be separated by sep={!r}: pass sep=',' for a "
                            "comma-separated file.".format(sep) if len(columns) == 1 else "")
                    raise ValueError(f"{self.path}: no column {key!r} ({flag}); columns found: "
                                     f"{columns}. Pass {flag}= the right name.{hint}")
            rows = list(reader)

        images, self.texts, self.skipped = [], [], []
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            file = self.path.parent / row[img_key]  # an absolute path stays absolute
            try:
                with Image.open(file) as raw:
                    image = resize_and_crop(raw, image_size).convert("RGB")  # decodes the file
            except Image.DecompressionBombError as err:  # more pixels than Pillow's limit allows
                if on_error == "fail":
                    raise ValueError(f"{self.path} line {line}: the image {file} is too large to "
                                     f"decode safely ({err}). Shrink or remove it, or pass "
                                     f"on_error='skip' to leave such images out") from None
                self.skipped.append(str(file))
                continue
            except (OSError, SyntaxError, ValueError) as err:  # missing, not an image, truncated
                if on_error == "fail":
                    raise ValueError(f"{self.path} line {line}: cannot read the image {file}: "
                                     f"{err}. Fix or remove that row, or pass on_error='skip' "
                                     f"to leave unreadable images out") from None
                self.skipped.append(str(file))
                continue
            images.append(np.asarray(image))
            self.texts.append(row[caption_key])
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} of {len(rows)} rows whose "
                          f"image could not be read (first: {self.skipped[0]})")
        if not images:
            raise ValueError(f"{self.path}: no readable image-caption pairs")
        self.images_array = np.stack(images)  # (N, S, S, 3) uint8

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        return self.images_array[i], self.texts[i]

    def arrays(self):
        """All images, uint8 (N, S, S, 3)."""
        return self.images_array

    def images(self, indices):
        """uint8 (len(indices), S, S, 3)."""
        return self.images_array[np.asarray(indices, dtype=np.int64)]

    def captions(self, indices, rng=None):
        """The captions at these indices (one caption per image, so rng is unused)."""
        return [self.texts[i] for i in np.asarray(indices, dtype=np.int64).reshape(-1)]

    def __repr__(self):
        return f"CsvDataset({str(self.path)!r}, image_size={self.image_size}, pairs={len(self)})"
