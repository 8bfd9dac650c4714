"""Images with several captions each (COCO and Flickr30k have five): training draws one of
an image's captions per epoch, evaluation uses all of them.

    texts = [["a dog on grass", "a brown dog runs"], ["a red car"]]   # per image
    captions = one_caption_each(texts)       # the DataLoader's captions callable
    flat, image_of_text = all_captions(texts)
    # flat = ['a dog on grass', 'a brown dog runs', 'a red car'], image_of_text = [0, 0, 1]
    recall_at_k(image_features, encode_texts(model, flat), image_of_text=image_of_text)
"""
import numpy as np


def one_caption_each(texts):
    """A `captions` callable (indices (B,), rng) -> B strings for images with several captions.

    texts: one list of captions per image. rng None: each image's first caption; a numpy
    Generator: one caption per image drawn uniformly from rng. The DataLoader seeds that
    rng with (seed, epoch, batch), so each epoch draws afresh and a resumed run (same seed,
    epoch and batch) draws exactly the captions the first run drew.
    """
    counts = np.array([len(t) for t in texts], dtype=np.int64)          # (N,) captions per image

    def captions(indices, rng=None):
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if rng is None:
            picks = np.zeros(len(indices), dtype=np.int64)
        else:
            picks = rng.integers(0, counts[indices])                   # one draw per image
        return [texts[i][k] for i, k in zip(indices, picks)]
    return captions


def all_captions(texts):
    """Every caption once, image by image: (flat list of T strings, image_of_text int64 (T,))."""
    flat = [caption for per_image in texts for caption in per_image]
    image_of_text = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
    return flat, image_of_text.astype(np.int64)
