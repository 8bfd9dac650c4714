"""The batch iterator: coverage, determinism, resuming mid-epoch, prefetch."""
import threading

import numpy as np
import pytest

from miniclip.data.loader import DataLoader, label_captions
from miniclip.data.transforms import normalize_batch


def numbered_captions(indices, rng):
    """Caption i names i, plus a random word, so ids show which caption was tokenised."""
    return [f"{i} {rng.integers(1000)}" for i in indices]


def tokenize(texts):
    return np.array([[int(w) for w in t.split()] for t in texts])


def make(n=103, **kwargs):
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    options = dict(batch_size=10, seed=0)
    options.update(kwargs)
    return images, DataLoader(images, numbered_captions, tokenize, **options)


def collect(batches):
    return [tuple(np.array(a) for a in batch) for batch in batches]


@pytest.mark.parametrize("prefetch", [True, False])
def test_each_index_once_per_epoch(prefetch):
    images, loader = make(drop_last=False, prefetch=prefetch)
    batches = collect(loader.iter_epoch(0))
    assert len(batches) == len(loader) == 11
    seen = np.concatenate([idx for _, _, idx in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(103))
    assert not np.array_equal(seen, np.arange(103))  # shuffled
    for x, ids, idx in batches:
        assert x.dtype == np.float32 and ids.dtype == np.int64 and idx.dtype == np.int64
        np.testing.assert_array_equal(x, normalize_batch(images[idx]))  # no augmentation
        np.testing.assert_array_equal(ids[:, 0], idx)  # caption of the same image

    _, loader = make(drop_last=True, prefetch=prefetch)
    batches = collect(loader)
    assert len(batches) == len(loader) == 10
    seen = np.concatenate([idx for _, _, idx in batches])
    assert len(set(seen.tolist())) == 100 and all(len(b[2]) == 10 for b in batches)


def test_deterministic_per_seed_and_epoch():
    _, a = make(augment=True)
    _, b = make(augment=True)
    _, c = make(augment=True, seed=1)
    first, again = collect(a.iter_epoch(3)), collect(b.iter_epoch(3))
    for u, v in zip(first, again):
        for p, q in zip(u, v):
            np.testing.assert_array_equal(p, q)
    other_epoch = collect(a.iter_epoch(4))
    other_seed = collect(c.iter_epoch(3))
    assert not np.array_equal(first[0][2], other_epoch[0][2])
    assert not np.array_equal(first[0][2], other_seed[0][2])
    # set_epoch chooses what a plain for-loop runs
    a.set_epoch(3)
    np.testing.assert_array_equal(collect(a)[0][0], first[0][0])


def test_augmentation_changes_pixels_and_captions_vary():
    images, loader = make(augment=True, prefetch=False)
    x, ids, idx = next(iter(loader.iter_epoch(0)))
    assert x.shape == (10, 3, 8, 8)
    assert not np.array_equal(x, normalize_batch(images[idx]))
    words = [collect(loader.iter_epoch(e))[0][1][:, 1] for e in (0, 1)]
    assert not np.array_equal(words[0], words[1])


@pytest.mark.parametrize("prefetch", [True, False])
def test_resume_mid_epoch(prefetch):
    _, loader = make(augment=True, prefetch=prefetch)
    full = collect(loader.iter_epoch(2))
    resumed = collect(loader.iter_epoch(2, start_batch=4))
    assert len(resumed) == len(full) - 4
    for u, v in zip(full[4:], resumed):
        for p, q in zip(u, v):
            np.testing.assert_array_equal(p, q)


def test_prefetch_gives_the_same_batches():
    _, with_thread = make(augment=True, prefetch=True)
    _, without = make(augment=True, prefetch=False)
    for u, v in zip(collect(with_thread.iter_epoch(0)), collect(without.iter_epoch(0))):
        for p, q in zip(u, v):
            np.testing.assert_array_equal(p, q)


def test_errors_in_the_thread_reach_the_caller():
    images = np.zeros((20, 4, 4, 3), dtype=np.uint8)

    def bad_tokenize(texts):
        raise RuntimeError("tokenizer broke")

    loader = DataLoader(images, numbered_captions, bad_tokenize, batch_size=5)
    with pytest.raises(RuntimeError, match="tokenizer broke"):
        list(loader)


def test_breaking_early_stops_the_thread():
    before = threading.active_count()
    _, loader = make(n=1000, batch_size=4)
    for k, _ in enumerate(loader):
        if k == 2:
            break
    assert threading.active_count() == before


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        DataLoader(np.zeros((4, 8, 8, 3), np.float32), numbered_captions, tokenize, 2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(np.zeros((4, 8, 8, 3), np.uint8), numbered_captions, tokenize, 8)


def test_label_captions():
    captions = label_captions(np.array([0, 1, 1]), ["cat", "dog"], ["a photo of a {}.", "a {}."])
    texts = captions(np.array([2, 0]), np.random.default_rng(0))
    assert texts[0] in ("a photo of a dog.", "a dog.") and texts[1] in ("a photo of a cat.", "a cat.")
