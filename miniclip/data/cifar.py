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
<cache>/<source name>/{train,test}_{images,labels}.npy; later loads memory-map
those files (read-only arrays, ready in milliseconds). Delete that folder to
decode again.
"""
import io
import os
import pickle
import posixpath
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from miniclip.checkpoint import atomic_write
from miniclip.download import cache_dir

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
# Decoding the two kinds of source
# ----------------------------------------------------------------------------
def read_official_archive(path, name):
    """The official python archive -> {split: (images uint8 (N, 32, 32, 3), labels int64 (N,))}."""
    info = OFFICIAL[name]
    pickles = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            base = posixpath.basename(member.name)
            if member.isfile() and base in info["train"] + info["test"] + [info["meta"]]:
                pickles[base] = unpickle(tar.extractfile(member).read(), f"{path}:{member.name}")
    missing = [b for b in info["train"] + info["test"] if b not in pickles]
    if missing:
        raise ValueError(f"{path} is not a complete {info['title']} python archive: "
                         f"{', '.join(missing)} not found in it")
    if info["meta"] in pickles:  # check the class order against ours
        found = [n.decode().replace("_", " ") for n in pickles[info["meta"]][info["names"]]]
        if found != info["classes"]:
            raise ValueError(f"{path}: its class names {found[:5]}... are not the "
                             f"{info['title']} classes {info['classes'][:5]}...")
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
    with tarfile.open(path, "r|*") as tar:  # streaming: one pass, no seeks, no extraction
        for member in tar:
            if member.isfile() and posixpath.splitext(member.name)[1].lower() in IMAGE_EXTENSIONS:
                yield member.name, tar.extractfile(member).read()


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
    for name, data in _image_files(path):
        parts = name.split("/")
        if len(parts) < 3 or parts[-3] not in found:
            raise ValueError(f"{path}: {name} is not laid out as {{train,test}}/<class>/<image>")
        label = class_index(parts[-2], classnames, path)
        try:
            image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except OSError as err:
            raise ValueError(f"{path}: cannot decode {name}: {err}") from None
        if image.shape != (32, 32, 3):
            raise ValueError(f"{path}: {name} is {image.shape[1]}x{image.shape[0]}, CIFAR images "
                             f"are 32x32; resize them, or load them with CsvDataset")
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


def load_cifar(name, split, root=None, download=True):
    """(images uint8 (N, 32, 32, 3), labels int64 (N,), classnames) for CIFAR-10 or -100.

    name: 'cifar10' | 'cifar100'; split: 'train' | 'test'. root: a folder to
    look in instead of $MINICLIP_DATA and the cache, or the path of an archive
    or image folder. download: fetch the official archive into the cache when
    no source is found. The images are a read-only memory map of the cache.
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
        from miniclip.download import download as fetch
        source = ("official", fetch(info["url"], cache_dir() / info["file"], md5=info["md5"]))

    kind, path = source
    folder = cache_dir() / _cache_name(path)
    images_file, labels_file = folder / f"{split}_images.npy", folder / f"{split}_labels.npy"
    if not (images_file.is_file() and labels_file.is_file()):
        if kind == "official":
            splits = read_official_archive(path, name)
        else:
            splits = read_image_folder(path, info["classes"])
        folder.mkdir(parents=True, exist_ok=True)
        for s, (images, labels) in splits.items():  # labels first: images mark a finished cache
            _save(folder / f"{s}_labels.npy", labels)
            _save(folder / f"{s}_images.npy", images)
    images = np.load(images_file, mmap_mode="r")
    labels = np.load(labels_file)
    return images, labels, list(info["classes"])
