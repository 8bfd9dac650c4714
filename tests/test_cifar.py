"""CIFAR readers: official python archives, image folders, the restricted unpickler."""
import io
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import shared_file
from miniclip.data.cifar import (CIFAR10_CLASSES, CIFAR100_CLASSES, TEMPLATES, load_cifar,
                                 unpickle)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test decodes into its own cache and sees no MINICLIP_DATA."""
    monkeypatch.setenv("MINICLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINICLIP_DATA", raising=False)


def py2_pickle(entries):
    """A protocol-2 pickle written the way Python 2's cPickle wrote the CIFAR batches.

    entries: {str key: uint8 2-D array | list of ints | list of str}. Keys and
    strings are Python 2 `str` (SHORT_BINSTRING / BINSTRING opcodes), arrays go
    through numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype.
    """
    def string(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def integer(i):
        return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)

    out = b"\x80\x02}("
    for key, value in entries.items():
        out += string(key.encode())
        if isinstance(value, np.ndarray):
            rows, cols = value.shape
            out += (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
                    + integer(0) + b"\x85" + string(b"b") + b"\x87R"
                    + b"(" + integer(1) + integer(rows) + integer(cols) + b"\x86"
                    + b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
                    + b"(" + integer(3) + string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
                    + integer(0) + b"tb" + b"\x89" + string(value.tobytes()) + b"tb")
        else:
            out += b"](" + b"".join(string(v.encode()) if isinstance(v, str) else integer(v)
                                    for v in value) + b"e"
    return out + b"u."


def add_file(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_official(path, name, n_per_batch, rng):
    """A small archive in the official layout; returns {split: (images (N,32,32,3), labels)}."""
    if name == "cifar10":
        batches = {"train": [f"data_batch_{k}" for k in range(1, 6)], "test": ["test_batch"]}
        top, key, meta = "cifar-10-batches-py", "labels", "batches.meta"
        names, meta_key = CIFAR10_CLASSES, "label_names"
    else:
        batches = {"train": ["train"], "test": ["test"]}
        top, key, meta = "cifar-100-python", "fine_labels", "meta"
        names, meta_key = [c.replace(" ", "_") for c in CIFAR100_CLASSES], "fine_label_names"
    expected = {}
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, f"{top}/{meta}", py2_pickle({meta_key: names}))
        for split, files in batches.items():
            images, labels = [], []
            for file in files:
                x = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
                y = [int(v) for v in rng.integers(0, len(names), n_per_batch)]
                data = x.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072)  # R plane, G, B
                entry = {"batch_label": "a batch", "data": data, key: y}
                if name == "cifar100":
                    entry["coarse_labels"] = [0] * n_per_batch
                add_file(tar, f"{top}/{file}", py2_pickle(entry))
                images.append(x)
                labels += y
            expected[split] = (np.concatenate(images), np.array(labels))
    return expected


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_official_archive(tmp_path, name):
    rng = np.random.default_rng(0)
    file = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    expected = make_official(tmp_path / file, name, 3, rng)
    for split in ("train", "test"):
        images, labels, classnames = load_cifar(name, split, root=tmp_path, download=False)
        assert images.dtype == np.uint8 and images.shape == expected[split][0].shape
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])
        assert classnames == (CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES)
    cached = Path(os.environ["MINICLIP_CACHE"]) / file[: -len(".tar.gz")]
    assert (cached / "train_images.npy").is_file()
    # a second load reads the cache: it works with the archive gone
    (tmp_path / file).unlink()
    images, _, _ = load_cifar(name, "train", root=tmp_path, download=False)
    np.testing.assert_array_equal(images, expected["train"][0])


def test_archive_found_through_miniclip_data(tmp_path, monkeypatch):
    expected = make_official(tmp_path / "cifar-10-python.tar.gz", "cifar10", 2, np.random.default_rng(1))
    monkeypatch.setenv("MINICLIP_DATA", str(tmp_path))
    images, labels, _ = load_cifar("cifar10", "test", download=False)
    np.testing.assert_array_equal(images, expected["test"][0])


def test_cifar100_names_use_spaces():
    assert len(CIFAR100_CLASSES) == 100 and len(set(CIFAR100_CLASSES)) == 100
    assert "aquarium fish" in CIFAR100_CLASSES and "maple tree" in CIFAR100_CLASSES
    assert not any("_" in c for c in CIFAR100_CLASSES)
    assert len(TEMPLATES) == 18 and all(t.count("{}") == 1 for t in TEMPLATES)


class Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_globals(tmp_path):
    marker = tmp_path / "ran"
    evil = pickle.dumps({b"data": Boom(marker), b"labels": [1]}, protocol=2)
    assert b"system" in evil  # the pickle really names os.system (posix.system)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load the global"):
        unpickle(evil, "evil.pkl")
    assert not marker.exists()
    # the same pickle inside an archive: load_cifar names the file and runs nothing
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        add_file(tar, "cifar-10-batches-py/data_batch_1", evil)
    with pytest.raises(pickle.UnpicklingError, match="data_batch_1"):
        load_cifar("cifar10", "train", root=tmp_path, download=False)
    assert not marker.exists()
    pickle.loads(evil)  # the control: a plain Unpickler does run the command
    assert marker.exists()


def test_unpickler_accepts_plain_arrays():
    # Python 3 pickles (protocol 3+: bytes need no global) of what a CIFAR batch holds
    data = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [0, 1]}
    for protocol in (3, 4):
        loaded = unpickle(pickle.dumps(data, protocol=protocol), "ok.pkl")
        np.testing.assert_array_equal(loaded[b"data"], data[b"data"])


def make_image_folder_tar(path, top, rng, per_class=2, classes=CIFAR10_CLASSES):
    """A .tar.gz of {train,test}/<class>/*.png; returns {split: {relative name: (image, label)}}."""
    expected = {"train": {}, "test": {}}
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for label, cls in enumerate(classes):
                for k in range(per_class):
                    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(image).save(buf, format="PNG")
                    name = f"{top}/{split}/{cls.replace(' ', '_')}/{k:04d}.png"
                    add_file(tar, name, buf.getvalue())
                    expected[split][name] = (image, label)
    return expected


def test_image_folder_tarball(tmp_path):
    expected = make_image_folder_tar(tmp_path / "cifar10-jpeg.tar.gz", "cifar10-jpeg",
                                     np.random.default_rng(2))
    for split in ("train", "test"):
        images, labels, classnames = load_cifar("cifar10", split, root=tmp_path, download=False)
        names = sorted(expected[split])  # the reader orders images by file name
        np.testing.assert_array_equal(images, np.stack([expected[split][n][0] for n in names]))
        np.testing.assert_array_equal(labels, [expected[split][n][1] for n in names])
        assert classnames == CIFAR10_CLASSES
    assert (Path(os.environ["MINICLIP_CACHE"]) / "cifar10-jpeg" / "test_labels.npy").is_file()


def test_image_folder_directory_cifar100_order(tmp_path):
    # folders in a shuffled order and with underscores still map to the canonical order
    rng = np.random.default_rng(3)
    root = tmp_path / "mine"
    picks = ["worm", "apple", "maple tree"]
    truth = {}
    for split in ("train", "test"):
        for cls in picks:
            folder = root / split / cls.replace(" ", "_")
            folder.mkdir(parents=True)
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / "a.png")
            truth[split, CIFAR100_CLASSES.index(cls)] = image
    images, labels, _ = load_cifar("cifar100", "test", root=root, download=False)
    assert sorted(labels.tolist()) == sorted(CIFAR100_CLASSES.index(c) for c in picks)
    for image, label in zip(images, labels):
        np.testing.assert_array_equal(image, truth["test", label])


def test_unknown_class_folder(tmp_path):
    folder = tmp_path / "bad" / "train" / "spaceship"
    folder.mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(folder / "x.png")
    with pytest.raises(ValueError, match="spaceship"):
        load_cifar("cifar10", "train", root=tmp_path / "bad", download=False)


def test_missing_offline_says_both_ways(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_cifar("cifar10", "train", root=tmp_path, download=False)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and "cifar10-jpeg.tar.gz" in message
    assert "MINICLIP_DATA" in message and "download=True" in message


def test_real_cifar10_jpeg(monkeypatch):
    """The 60,000 JPEGs of ../shared/data: decoded once per machine into the default cache."""
    monkeypatch.undo()  # use the real MINICLIP_CACHE / default cache, not the private one
    tarball = shared_file("data", "cifar10-jpeg.tar.gz")
    start = time.time()
    train_x, train_y, classnames = load_cifar("cifar10", "train", root=tarball, download=False)
    test_x, test_y, _ = load_cifar("cifar10", "test", root=tarball, download=False)
    print(f"CIFAR-10 JPEG load: {time.time() - start:.1f} s")
    assert train_x.shape == (50000, 32, 32, 3) and test_x.shape == (10000, 32, 32, 3)
    assert train_x.dtype == np.uint8
    assert np.bincount(train_y, minlength=10).tolist() == [5000] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [1000] * 10
    assert classnames == CIFAR10_CLASSES
    assert 80 < train_x[:1000].mean() < 180  # real photos, not blank
