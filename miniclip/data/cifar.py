"""CIFAR-10 and CIFAR-100 as uint8 arrays.

    images, labels, classnames = load_cifar("cifar10", "test")
    # images: uint8 (10000, 32, 32, 3), labels: int64 (10000,), classnames: 10 names

Two kinds of source are read:
  (a) the official python archives, cifar-10-python.tar.gz and
      cifar-100-python.tar.gz (pickled dicts holding a NumPy array; exact
      pixels). Downloaded into the cache with an md5 check when nowhere to be
      found and download=True.
  (b) an image-folder layout {train,test}/<class>/*.jpg|png, as a folder or a
      .tar.gz of one, such as cifar10-jpeg.tar.gz (60,000 JPEGs; JPEG
      re-encoding shifts pixel values a little, so label figures measured on it).

Where it looks, in order: `root` (a folder holding the files, or the path of
one archive / image folder), else $MINICLIP_DATA, then the cache folder
($MINICLIP_CACHE, default ~/.cache/miniclip). Each source is decoded once to
<cache>/<source name>/{train,test}_{images,labels}.npy, with source.json
beside them (the source's path, size, mtime and md5); later loads memory-map
those files (read-only arrays, ready in milliseconds) while the source is
unchanged, and decode again when it changed.

Nothing damaged is cached: the whole archive is read (so gzip's CRC is
checked), the official archives' md5 is checked whenever they are decoded,
and each split must have CIFAR's size and per-class counts (50,000 / 10,000
images; 5,000 / 1,000 per class for CIFAR-10, 500 / 100 for CIFAR-100).
"""
import gzip
import hashlib
import io
import json
import os
import pickle
import posixpath
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from miniclip.fileio import atomic_write
from miniclip.data.transforms import to_8bit
from miniclip.download import cache_dir, download as fetch

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# The official fine-label order; spaces instead of underscores, as OpenAI writes them.
CIFAR100_CLASSES = [
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow tree", "wolf", "woman", "worm"]

# OpenAI's 18 CIFAR prompt templates (data/prompts.md).
TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.",
    "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.",
    "a bad photo of the {}.", "a good photo of the {}.", "a photo of the small {}.",
    "a photo of the big {}."]

# name -> what the official archive is called, where it lives, its md5, the pickles in it
OFFICIAL = {
    "cifar10": {"title": "CIFAR-10", "file": "cifar-10-python.tar.gz", "size": "163 MB",
                "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "md5": "c58f30108f718f92721af3b95e74349a", "classes": CIFAR10_CLASSES,
                "train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"],
                "labels": b"labels", "meta": "batches.meta", "names": b"label_names"},
    "cifar100": {"title": "CIFAR-100", "file": "cifar-100-python.tar.gz", "size": "161 MB",
                 "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "md5": "eb9058c3a382ffc7106e4002c42a8d85", "classes": CIFAR100_CLASSES,
                 "train": ["train"], "test": ["test"],
                 "labels": b"fine_labels", "meta": "meta", "names": b"fine_label_names"},
}
IMAGE_FOLDER = {"cifar10": "cifar10-jpeg", "cifar100": "cifar100-jpeg"}  # + .tar.gz or a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# What a complete copy holds: split -> (images, images per class). Checked on every decode.
SPLIT_SIZES = {"cifar10": {"train": (50000, 5000), "test": (10000, 1000)},
               "cifar100": {"train": (50000, 500), "test": (10000, 100)}}


class DataError(ValueError):
    """A data source that is damaged or incomplete (nothing is cached from it)."""


# ----------------------------------------------------------------------------
# Reading pickles that come from the network
# ----------------------------------------------------------------------------
try:
    from numpy._core.multiarray import _reconstruct  # NumPy 2
except ImportError:
    from numpy.core.multiarray import _reconstruct  # NumPy 1

# The only globals a pickled NumPy array needs; CIFAR's pickles hold dicts,
# lists, bytes, ints and one uint8 array (b'data'), so nothing else is let in.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # as written by NumPy 1 (and CIFAR)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as written by NumPy 2
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global but the three that rebuild a NumPy array.

    A pickle can name any importable function and call it while loading (for
    example os.system): that is how a malicious file runs code. An official
    CIFAR batch needs only `numpy.ndarray`, `numpy.dtype` and NumPy's
    `_reconstruct` (its b'data' is an array); everything else is refused
    before it is imported, so loading a hostile file cannot run anything.
    """

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[module, name]
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name} from a pickle: an official CIFAR "
            f"batch holds only dicts, lists, bytes, ints and a NumPy array. This file is "
            f"not one; get the archive again from the official URL")


def unpickle(data, source):
    """Unpickle `data` (bytes) with RestrictedUnpickler; `source` names it in errors."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f"{source}: {err}") from None


# ----------------------------------------------------------------------------
# Reading a whole archive, so that damage cannot pass unseen
# ----------------------------------------------------------------------------
class _HashingReader(io.RawIOBase):
    """A read-only file that feeds every byte it hands out to an md5."""

    def __init__(self, raw):
        self.raw, self.md5 = raw, hashlib.md5()

    def readable(self):
        return True

    def readinto(self, buffer):
        n = self.raw.readinto(buffer)
        self.md5.update(memoryview(buffer)[:n])
        return n


def _damaged(path, problem):
    return DataError(f"{path} is damaged ({problem}): nothing was cached from it. Delete it and "
                     f"download or copy it again")


def iter_tar(path, wanted, md5=None):
    """Yield (member name, bytes) of the regular members for which wanted(name) is true.

    The whole file is read, to its last byte, in one streaming pass: a gzip
    stream's CRC-32 and length are checked at its end (a truncated or
    bit-flipped archive fails here instead of yielding fewer or wrong images),
    and the md5 of the file is compared with `md5` when one is given.
    Raises DataError naming the file and what is wrong with it.
    """
    with open(path, "rb") as raw:
        reader = io.BufferedReader(_HashingReader(raw), 1 << 20)
        stream = gzip.GzipFile(fileobj=reader, mode="rb") if reader.peek(2)[:2] == b"\x1f\x8b" else reader
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if member.isfile() and wanted(member.name):
                        yield member.name, tar.extractfile(member).read()
            while stream.read(1 << 20):  # the rest: tar padding, then gzip's CRC and length
                pass
            while reader.read(1 << 20):
                pass
        except (EOFError, gzip.BadGzipFile, zlib.error, tarfile.TarError) as err:
            raise _damaged(path, f"{type(err).__name__}: {err}") from None
        digest = reader.raw.md5.hexdigest()
    if md5 is not None and digest != md5:
        raise _damaged(path, f"its md5 is {digest}, the official archive's is {md5}")


def check_counts(labels, name, split, source):
    """Refuse a split whose size or per-class counts are not CIFAR's (a truncated source)."""
    total, per_class = SPLIT_SIZES[name][split]
    counts = np.bincount(labels, minlength=len(OFFICIAL[name]["classes"]))
    if len(labels) != total or not np.all(counts == per_class):
        empty = int(np.sum(counts == 0))
        raise DataError(
            f"{source}: its {split} split holds {len(labels)} images ({empty} classes empty, "
            f"per class {counts.min()}..{counts.max()}); {OFFICIAL[name]['title']} has {total}, "
            f"{per_class} per class. The source is incomplete: nothing was cached from it; get "
            f"it again (or pass verify=False to load a partial copy on purpose)")


# ----------------------------------------------------------------------------
# Decoding the two kinds of source
# ----------------------------------------------------------------------------
def read_official_archive(path, name, verify=True):
    """The official python archive -> {split: (images uint8 (N, 32, 32, 3), labels int64 (N,))}.

    verify: check the archive's md5 against the official one (read in the same pass).
    """
    info = OFFICIAL[name]
    pickles = {}
    names = info["train"] + info["test"] + [info["meta"]]
    for member, data in iter_tar(path, lambda n: posixpath.basename(n) in names,
                                 md5=info["md5"] if verify else None):
        pickles[posixpath.basename(member)] = unpickle(data, f"{path}:{member}")
    missing = [b for b in info["train"] + info["test"] if b not in pickles]
    if missing:
        raise ValueError(f"{path} is not a complete {info['title']} python archive: "
                         f"{', '.join(missing)} not found in it")
    if info["meta"] in pickles:  # check the class order against ours
        found = [n.decode().replace("_", " ") for n in pickles[info["meta"]][info["names"]]]
        if found != info["classes"]:
            raise ValueError(f"{path}: its class names {found[:5]}... are not the "
                             f"{info['title']} classes {info['classes'][:5]}...")
    for b in info["train"] + info["test"]:
        batch = pickles[b]
        for key in (b"data", info["labels"]):
            if not isinstance(batch, dict) or key not in batch:
                raise DataError(f"{path}: the batch {b} has no {key.decode()!r} entry: not an "
                                f"official {info['title']} batch. Get the archive again from "
                                f"{info['url']}")
    out = {}
    for split in ("train", "test"):
        batches = [pickles[b] for b in info[split]]
        data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
        # each row: 1024 red, 1024 green, 1024 blue values, rows of 32 -> (N, 32, 32, 3)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([np.asarray(b[info["labels"]], dtype=np.int64) for b in batches])
        out[split] = (np.ascontiguousarray(images), labels)
    return out


def _image_files(path):
    """Yield (relative posix name, bytes) for every image file in a folder or a .tar.gz."""
    path = Path(path)
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                yield file.relative_to(path).as_posix(), file.read_bytes()
        return
    yield from iter_tar(path, lambda n: posixpath.splitext(n)[1].lower() in IMAGE_EXTENSIONS)


def class_index(folder, classnames, source):
    """Position of a class folder name ('maple_tree', 'Maple Tree') in the canonical class list."""
    key = folder.lower().replace("_", " ").replace("-", " ")
    if key not in classnames:
        raise ValueError(f"{source}: the folder {folder!r} is not one of the {len(classnames)} "
                         f"classes ({', '.join(classnames[:4])}, ...). Rename it to its class "
                         f"name, or remove it")
    return classnames.index(key)


def read_image_folder(path, classnames):
    """{train,test}/<class>/<image> (folder or .tar.gz) -> {split: (images, labels)}.

    Images are decoded with Pillow, converted to RGB and must be 32 x 32.
    Within a split, images are ordered by file name.
    """
    found = {"train": [], "test": []}
    files = list(_image_files(path))  # the whole archive first: its CRC is checked before decoding
    for name, data in files:
        parts = name.split("/")
        if len(parts) < 3 or parts[-3] not in found:
            raise ValueError(f"{path}: {name} is not laid out as {{train,test}}/<class>/<image>")
        label = class_index(parts[-2], classnames, path)
        try:
            with Image.open(io.BytesIO(data)) as raw:  # the header only, so far
                if raw.size != (32, 32):  # checked before decoding: a 12000² PNG stays a header
                    raise ValueError(f"{path}: {name} is {raw.size[0]}x{raw.size[1]}, CIFAR images "
                                     f"are 32x32; resize them, or load them with CsvDataset")
                image = np.asarray(to_8bit(raw).convert("RGB"))
        except (OSError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: cannot decode {name}: {err}") from None
        found[parts[-3]].append((name, label, image))
    out = {}
    for split, items in found.items():
        if not items:
            raise ValueError(f"{path}: no images under {split}/<class>/")
        items.sort(key=lambda item: item[0])
        out[split] = (np.stack([item[2] for item in items]),
                      np.array([item[1] for item in items], dtype=np.int64))
    return out


# ----------------------------------------------------------------------------
# Finding a source, caching the decoded arrays
# ----------------------------------------------------------------------------
def _search_folders(root):
    if root is not None:
        return [Path(root).expanduser()]
    folders = [Path(os.environ["MINICLIP_DATA"]).expanduser()] if os.environ.get("MINICLIP_DATA") else []
    return folders + [cache_dir()]


def _is_official(path, name):
    """True when the tarball at `path` is the official python archive (peeks at its first entry)."""
    top = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    with tarfile.open(path, "r|*") as tar:
        first = next(iter(tar), None)
    return first is not None and first.name.split("/")[0] == top


def find_source(name, root=None):
    """('official' | 'folder', path) of the first source found for `name`, or None."""
    if root is not None and Path(root).is_file():
        return ("official" if _is_official(root, name) else "folder"), Path(root)
    if root is not None and (Path(root) / "train").is_dir():
        return "folder", Path(root)
    for folder in _search_folders(root):
        candidates = [("official", folder / OFFICIAL[name]["file"]),
                      ("folder", folder / (IMAGE_FOLDER[name] + ".tar.gz")),
                      ("folder", folder / IMAGE_FOLDER[name])]
        for kind, path in candidates:
            if path.is_file() or (kind == "folder" and (path / "train").is_dir()):
                return kind, path
    return None


def _cache_name(path):
    """The cache folder name of a source: its file name without .tar.gz / .tgz."""
    name = Path(path).name
    for ext in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _save(path, array):
    """np.save through atomic_write: a half-written cache file never looks finished."""
    atomic_write(path, lambda f: np.save(f, array))


def _not_found(name, root):
    info = OFFICIAL[name]
    places = ", ".join(str(f) for f in _search_folders(root))
    return FileNotFoundError(
        f"{info['title']} not found (looked in {places}). Provide it in one of two ways:\n"
        f"  1. put the official archive {info['file']} ({info['url']}) or an image-folder "
        f"tarball {IMAGE_FOLDER[name]}.tar.gz ({{train,test}}/<class>/*.jpg) in a folder and "
        f"set MINICLIP_DATA to it (or pass root=), or copy it into {cache_dir()};\n"
        f"  2. allow the download ({info['size']}): load_cifar(..., download=True).")


def _stamp(path):
    """{size, mtime_ns} of a source file, or of the newest file in a source folder, plus file count."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = [f.stat() for f in path.rglob("*") if f.is_file()]
    return {"source": str(path.resolve()), "size": sum(f.st_size for f in files),
            "mtime_ns": max((f.st_mtime_ns for f in files), default=0), "files": len(files)}


def _file_md5(path):
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
    return md5.hexdigest()


def _cache_is_current(folder, path, split):
    """True when `folder` holds a finished decode of `path` as it is now.

    The cache's source.json records the source's size, mtime and md5. Size and
    mtime equal -> current. Otherwise the md5 decides (a copied or touched file
    with the same bytes keeps its cache; a changed one is decoded again).
    """
    stamp_file = folder / "source.json"
    if not ((folder / f"{split}_images.npy").is_file() and (folder / f"{split}_labels.npy").is_file()
            and stamp_file.is_file()):
        return False
    try:
        recorded = json.loads(stamp_file.read_text())
    except ValueError:
        return False
    now = _stamp(path)
    if all(recorded.get(k) == v for k, v in now.items() if k != "source"):
        return True
    if Path(path).is_file() and recorded.get("md5") and recorded["md5"] == _file_md5(path):
        _save_stamp(folder, dict(now, md5=recorded["md5"]))
        return True
    return False


def _save_stamp(folder, stamp):
    text = json.dumps(stamp, indent=1) + "\n"
    atomic_write(folder / "source.json", lambda f: f.write(text.encode("utf-8")))


def load_cifar(name, split, root=None, download=True, verify=True):
    """(images uint8 (N, 32, 32, 3), labels int64 (N,), classnames) for CIFAR-10 or -100.

    name: 'cifar10' | 'cifar100'; split: 'train' | 'test'. root: a folder to
    look in instead of $MINICLIP_DATA and the cache, or the path of an archive
    or image folder. download: fetch the official archive into the cache when
    no source is found. The images are a read-only memory map of the cache.
    verify: when decoding, check the official archive's md5 and that each
    split has CIFAR's size and per-class counts (False: a partial copy of your
    own is accepted). A damaged source raises DataError and nothing is cached.
    The cache is keyed to its source: a changed source file is decoded again.
    """
    if name not in OFFICIAL:
        raise ValueError(f"unknown dataset {name!r}: use 'cifar10' or 'cifar100'")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    info = OFFICIAL[name]
    source = find_source(name, root)
    if source is None:  # maybe decoded before, the archive removed since
        for cached in (_cache_name(info["file"]), IMAGE_FOLDER[name]):
            if (cache_dir() / cached / f"{split}_images.npy").is_file():
                source = ("cached", cache_dir() / cached)
                break
    if source is None:
        if not download:
            raise _not_found(name, root)
        source = ("official", fetch(info["url"], cache_dir() / info["file"], md5=info["md5"]))

    kind, path = source
    folder = path if kind == "cached" else cache_dir() / _cache_name(path)
    images_file, labels_file = folder / f"{split}_images.npy", folder / f"{split}_labels.npy"
    if kind != "cached" and not _cache_is_current(folder, path, split):
        stamp = _stamp(path)  # before reading: a source changed meanwhile is not trusted
        if kind == "official":
            splits = read_official_archive(path, name, verify=verify)
        else:
            splits = read_image_folder(path, info["classes"])
        if verify:
            for s, (_, labels) in splits.items():
                check_counts(labels, name, s, path)
        if Path(path).is_file():
            stamp["md5"] = _file_md5(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "source.json").unlink(missing_ok=True)  # the stamp marks a finished cache
        for s, (images, labels) in splits.items():
            _save(folder / f"{s}_labels.npy", labels)
            _save(folder / f"{s}_images.npy", images)
        _save_stamp(folder, stamp)
    images = np.load(images_file, mmap_mode="r")
    labels = np.load(labels_file)
    return images, labels, list(info["classes"])
