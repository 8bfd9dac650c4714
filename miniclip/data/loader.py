"""Batches for training: shuffle, augment, normalise, tokenize.

    loader = DataLoader(images, dataset.captions, tokenize, batch_size=256, seed=0)
    for epoch in range(epochs):
        for x, ids, idx in loader.iter_epoch(epoch):
            ...   # x: float32 (B, 3, S, S), ids: int64 (B, C), idx: int64 (B,)

Everything random in an epoch comes from numpy Generators seeded with
(seed, epoch) for the order and (seed, epoch, batch) for the augmentation and
caption choice of one batch. So a run resumed at epoch e, batch k
(`iter_epoch(e, start_batch=k)`) sees exactly the batches the first run would
have seen, and the background thread cannot change any result.

Batches are NumPy arrays on the host; the trainer moves them to the device.
"""
import queue
import threading

import numpy as np

from miniclip.data.transforms import MEAN, STD, normalize_batch, random_crop, random_flip


class DataLoader:
    """Iterate over (images, token ids, indices) batches of an in-memory dataset.

    images:     uint8 (N, S, S, 3)
    captions:   callable (indices (B,), rng) -> list of B strings; it may use
                rng to pick a different caption template every epoch
    tokenize:   callable (list of B strings) -> int array (B, C)
    batch_size: B
    shuffle:    a new order every epoch (from seed and epoch)
    drop_last:  leave out the last, smaller batch (True for training: the
                contrastive loss is sharper with equal batches)
    augment:    random crop (zero padding 4) and horizontal flip
    prefetch:   prepare the next batch in a background thread while the model
                works on this one
    mean, std:  normalisation; OpenAI's MEAN / STD by default, also used for
                from-scratch training
    rows:       a slice of each batch's rows to return (data-parallel training: one
                process's share). Order, augmentation and captions are still drawn for
                the whole batch, so the rows are exactly those a single process sees.
    """

    def __init__(self, images, captions, tokenize, batch_size, shuffle=True, seed=0,
                 drop_last=True, augment=False, prefetch=True, mean=MEAN, std=STD, rows=None):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"DataLoader wants uint8 images (N, S, S, 3), got "
                             f"{images.dtype} {images.shape}")
        if batch_size > len(images) and drop_last:
            raise ValueError(f"batch_size={batch_size} is larger than the training set "
                             f"({len(images)} images; a csv: dataset holds back its last "
                             f"tenth, at least one pair, for evaluation) and drop_last=True "
                             f"leaves no batch: use a smaller --batch-size or more data")
        self.images = images
        self.captions = captions
        self.tokenize = tokenize
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.augment = augment
        self.prefetch = prefetch
        self.mean, self.std = mean, std
        self.rows = slice(None) if rows is None else rows
        self.epoch = 0

    def __len__(self):
        """Number of batches in one epoch."""
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else (n + b - 1) // b

    def set_epoch(self, epoch):
        """Which epoch a plain `for batch in loader` runs (its order and augmentation)."""
        self.epoch = epoch

    def __iter__(self):
        return self.iter_epoch(self.epoch)

    def order(self, epoch):
        """The permutation of indices for `epoch`: int64 (N,)."""
        if not self.shuffle:
            return np.arange(len(self.images), dtype=np.int64)
        return np.random.default_rng((self.seed, epoch)).permutation(len(self.images))

    def make_batch(self, indices, epoch, batch):
        """Build batch number `batch` of `epoch` from its dataset indices (B,); returns its
        `rows` (all of them by default)."""
        rng = np.random.default_rng((self.seed, epoch, batch))
        images = self.images[indices]  # uint8 (B, S, S, 3), a copy
        if self.augment:
            images = random_flip(random_crop(images, rng), rng)
        captions = self.captions(indices, rng)  # every row's draw, whichever rows are kept
        rows = self.rows
        x = normalize_batch(images[rows], self.mean, self.std)  # float32 (b, 3, S, S)
        ids = np.asarray(self.tokenize(captions[rows]), dtype=np.int64)  # (b, C)
        return x, ids, indices[rows]

    def iter_epoch(self, epoch, start_batch=0):
        """Yield the batches of `epoch`, from batch number `start_batch` on."""
        order = self.order(epoch)
        jobs = [(order[k * self.batch_size:(k + 1) * self.batch_size], epoch, k)
                for k in range(start_batch, len(self))]
        if not self.prefetch:
            for job in jobs:
                yield self.make_batch(*job)
            return
        yield from _prefetched(self.make_batch, jobs)


def _prefetched(make, jobs):
    """Run make(*job) for each job in a background thread, one batch ahead.

    NumPy releases the interpreter lock during most array work, so the next
    batch is built while the caller computes on this one. An error in the
    thread is raised here, in the caller.
    """
    ready = queue.Queue(maxsize=2)
    stop = threading.Event()

    def work():
        try:
            for job in jobs:
                if stop.is_set():
                    return
                ready.put(("batch", make(*job)))
            ready.put(("done", None))
        except BaseException as err:  # hand every failure to the caller
            ready.put(("error", err))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = ready.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:  # the caller stopped early (break) or the loop ended: let the thread finish
        stop.set()
        while thread.is_alive():
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def label_captions(labels, classnames, templates):
    """A `captions` callable for a labelled dataset such as CIFAR.

    Each image gets `template.format(classname)` with a template drawn from rng,
    e.g. 'a blurry photo of a cat.'. labels: int (N,).
    """
    def captions(indices, rng):
        picks = rng.integers(0, len(templates), size=len(indices))
        return [templates[t].format(classnames[labels[i]]) for i, t in zip(indices, picks)]
    return captions
