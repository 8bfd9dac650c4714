"""Your own image-caption pairs, listed in a CSV file (OpenCLIP's convention).

    filepath	title
    photos/cat.jpg	a cat asleep on a sofa
    photos/dog.png	a dog catching a ball

Tab-separated by default (`sep`; on the command line `--csv-separator`), columns
`filepath` and `title` by default (`img_key`, `caption_key`; `--csv-img-key`,
`--csv-caption-key`). A tab-separated file has no quoting (a caption may start
with `"`); any other separator uses the standard CSV quoting. A UTF-8 byte-order
mark is ignored. Relative paths are relative to the CSV file's folder. Every
image is loaded once, its shorter side resized to S (bicubic) and the central
S x S square kept, into one uint8 array (N, S, S, 3).

An image listed on several rows (COCO-style, five captions per image) is one image
with several captions, in the order of its first row: training draws one of them per
epoch, evaluation uses all of them (miniclip/data/captions.py).
"""
import csv
import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np

from miniclip.data.captions import one_caption_each
from miniclip.data.transforms import ImageRefusedError, open_image, resize_and_crop

FLAGS = {"img_key": "--csv-img-key", "caption_key": "--csv-caption-key"}


def read_rows(path, sep="\t", img_key="filepath", caption_key="title"):
    """The (line number, image path, caption) of every row of a CSV/TSV file.

    Everything wrong with the file itself is a ValueError naming the file (and the
    line): not a regular file, not UTF-8, a missing column, a row with too few or too
    many fields, a field over csv's size limit.
    """
    path = Path(path)
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block open() forever
        raise ValueError(f"{path}: not a regular file; give the path of a CSV/TSV file")
    try:
        raw = path.read_bytes()
    except MemoryError:
        err = MemoryError(f"{path} ({path.stat().st_size:,} bytes) is too large to read "
                          f"into memory")
        err.filename = str(path)
        raise err from None
    try:
        text = raw.decode("utf-8-sig")  # utf-8-sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path} line {line}: not valid UTF-8 (byte {raw[err.start]:#04x}); "
                         f"save the file as UTF-8") from None
    # a TSV has no quoting: a caption starting with '"' must not swallow the next rows
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting)
    rows, line = [], 1
    try:
        columns = next(reader, [])
        for key, arg in (("img_key", img_key), ("caption_key", caption_key)):
            if arg not in columns:
                hint = (f" The file may not be separated by {sep!r}: pass --csv-separator ',' "
                        f"(sep=',' in Python) for a comma-separated file."
                        if len(columns) == 1 else "")
                raise ValueError(f"{path}: no column {arg!r} ({key}); columns found: "
                                 f"{columns}. Pass {FLAGS[key]} with the right name "
                                 f"({key}= in Python).{hint}")
        image_col, caption_col = columns.index(img_key), columns.index(caption_key)
        line = reader.line_num + 1
        for row in reader:
            if row:  # blank lines are skipped, as csv.DictReader does
                if len(row) != len(columns):
                    raise ValueError(
                        f"{path} line {line}: {len(row)} fields where the header has "
                        f"{len(columns)} ({columns}); fix that row (a missing or extra "
                        f"{sep!r}?)")
                rows.append((line, row[image_col], row[caption_col]))
            line = reader.line_num + 1
    except csv.Error as err:  # e.g. a field larger than csv.field_size_limit()
        raise ValueError(f"{path} line {line}: {err} (csv's limit is "
                         f"{csv.field_size_limit():,} characters a field)") from None
    return rows


class CsvDataset:
    """Images and their captions from a CSV file, held in memory; rows naming the same
    image are grouped: N images, each with one or more captions.

    on_error: 'fail' (default) stops at the first unreadable image and names
    it; 'skip' leaves such rows out, warns with their count, and lists their
    paths in `self.skipped`.
    ds[i] -> (image uint8 (S, S, 3), its first caption); ds.arrays() -> uint8 (N, S, S, 3);
    ds.texts: each image's first caption; ds.texts_per_image: each image's captions;
    ds.captions(indices, rng=None) -> list of str (the DataLoader's interface: rng None,
    the first caption; a Generator, one of the image's captions drawn from it).
    """

    def __init__(self, path, image_size=32, sep="\t", img_key="filepath", caption_key="title",
                 on_error="fail"):
        if on_error not in ("fail", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'fail' or 'skip'")
        self.path, self.image_size = Path(path), image_size
        rows = read_rows(self.path, sep, img_key, caption_key)
        grouped = {}  # image path as written -> (its first row's line, [captions]), in order
        for line, name, caption in rows:
            grouped.setdefault(name, (line, []))[1].append(caption)

        images, self.texts_per_image, self.skipped = [], [], []
        for name, (line, captions) in grouped.items():
            file = self.path.parent / name  # an absolute path stays absolute
            try:
                with open_image(file) as raw:  # refuses FIFOs, folders, > MAX_PIXELS pixels
                    image = resize_and_crop(raw, image_size).convert("RGB")  # decodes the file
            except (OSError, SyntaxError, ValueError) as err:  # missing, not an image, truncated
                problem = (str(err) if isinstance(err, ImageRefusedError)  # it names the file
                           else f"cannot read the image {file}: {err}")
                if on_error == "fail":
                    raise ValueError(f"{self.path} line {line}: {problem}. Fix or remove that "
                                     f"row (in Python, on_error='skip' leaves unreadable "
                                     f"images out)") from None
                self.skipped.extend([str(file)] * len(captions))  # one entry per row left out
                continue
            except MemoryError:
                err = MemoryError(f"{self.path} line {line}: decoding the image {file} needs "
                                  f"more memory than is free; shrink it")
                err.filename = str(file)
                raise err from None
            images.append(np.asarray(image))
            self.texts_per_image.append(captions)
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} of {len(rows)} rows whose "
                          f"image could not be read (first: {self.skipped[0]})")
        if not images:
            raise ValueError(f"{self.path}: no readable image-caption pairs")
        self.images_array = np.stack(images)  # (N, S, S, 3) uint8
        self.texts = [captions[0] for captions in self.texts_per_image]
        self._draw = one_caption_each(self.texts_per_image)

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
        """One caption per index: rng None, the image's first; a Generator, one drawn from it."""
        return self._draw(indices, rng)

    def __repr__(self):
        return (f"CsvDataset({str(self.path)!r}, image_size={self.image_size}, images={len(self)}, "
                f"captions={sum(map(len, self.texts_per_image))})")
