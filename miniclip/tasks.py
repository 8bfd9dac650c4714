"""Datasets as tasks: what to train on, and how to score a model on it.

    task = make_task("shapes")                  # or cifar10, cifar100, csv:PATH
    task.train_images, task.captions, task.groups     # what the training loop eats
    metrics = task.evaluate(model, tokenizer)   # {'test/colour': 0.99, ...,
                                                #  'zero_shot_accuracy': mean of the tasks}

Each dataset has its zero-shot tasks (`Task.zero_shot`, metric names in the
result of `evaluate`): for shapes the colour, shape, size and position of the
object in unseen test images; for CIFAR the class. `zero_shot_accuracy` is
the plain mean over all of them, so no favourable subset can stand for the
whole. A csv dataset has no classes: its headline is image->text recall@1 on
the held-out last 10 %.

The training loop (train.py) and `python -m miniclip eval` both use this
module; it knows the datasets and the evaluation, never the optimiser.
"""
from dataclasses import dataclass

import numpy as np

from miniclip.data.captions import all_captions
from miniclip.evaluate import (encode_images, encode_texts, recall_at_k, zero_shot_accuracy,
                               zero_shot_classifier)

DATASETS = "shapes, cifar10, cifar100, csv:PATH or karpathy:PATH (with an image folder)"
FIVE_CAPTION_IMAGES = 1000      # shapes' Flickr-style retrieval: 1,000 test images x 5 captions


@dataclass
class Task:
    """A dataset's training data and its evaluation recipe.

    The training fields are None when the task was made with train=False
    (evaluation only: nothing is generated or decoded for training).
    """
    name: str
    train_images: np.ndarray | None    # uint8 (N, S, S, 3)
    captions: object                   # (indices, rng) -> list of str
    groups: np.ndarray | None          # (N,) ints: equal = same meaning (class, same facts)
    evaluate: object                   # (model, tokenizer, limit=None) -> dict of metrics
    zero_shot: tuple                   # the zero-shot metrics; zero_shot_accuracy is their mean
    headline: str                      # the metric a run is summed up by
    pairs: tuple                       # (uint8 images (n, S, S, 3), n captions) held out, to plot


def make_task(dataset, seed=0, image_size=32, train_size=None, train=True, csv=None,
              preprocess=None, images=None, split="test"):
    """The Task for a dataset name: shapes | cifar10 | cifar100 | csv:PATH | karpathy:PATH.

    csv: for csv:PATH, CsvDataset's options (sep, img_key, caption_key); None: its defaults.
    images, split: for karpathy:PATH, the image folder and the split evaluated.
    preprocess: CIFAR only: a pretrained model's `preprocess` (miniclip.load), applied to
    every test image (None: the 32 x 32 pixels, normalised, as training sees them).
    """
    check_dataset(dataset)
    if dataset == "shapes":
        return shapes_task(seed, image_size, train_size, train)
    if dataset.startswith("csv:"):
        return csv_task(dataset[len("csv:"):], image_size, **(csv or {}))
    if dataset.startswith("karpathy:"):
        return karpathy_task(dataset[len("karpathy:"):], images, split, image_size, train)
    return cifar_task(dataset, train, preprocess)


def check_dataset(dataset):
    """Refuse an unknown dataset name before anything is loaded."""
    if not (dataset in ("shapes", "cifar10", "cifar100") or dataset.startswith(("csv:", "karpathy:"))):
        raise ValueError(f"unknown dataset {dataset!r}: use {DATASETS}")


def _mean_zero_shot(result, keys):
    result["zero_shot_accuracy"] = float(np.mean([result[k] for k in keys]))
    return result


def shapes_task(seed=0, image_size=32, train_size=None, train=True):
    """Captioned shapes: zero-shot colour, shape, size and position on the test split
    (the headline is their mean), plus the never-seen colour-shape pairs of the
    heldout split and retrieval recall@K, reported beside it: one caption per test
    image (test/image_to_text_R@1, ...), and as Flickr30k is scored, five differently
    worded captions for each of the first 1,000 test images (test/5-caption/...)."""
    from miniclip.data.shapes import ShapesDataset, zero_shot_tasks
    splits = {s: ShapesDataset(s, seed=seed, image_size=image_size) for s in ("test", "heldout")}
    arrays = {s: d.arrays() for s, d in splits.items()}
    tasks = zero_shot_tasks()
    test_attrs = ("colour", "shape", "size", "position")
    zero_shot = tuple(f"test/{a}" for a in test_attrs)

    def evaluate(model, tokenizer, limit=None):
        result = {}
        for split, attrs in (("test", test_attrs), ("heldout", ("object", "colour", "shape"))):
            n = len(arrays[split]) if limit is None else min(limit, len(arrays[split]))
            feats = encode_images(model, arrays[split][:n])
            for attr in attrs:
                names, templates = tasks[attr]
                classifier = zero_shot_classifier(model, names, templates, tokenizer)
                acc = zero_shot_accuracy(feats, splits[split].labels(attr)[:n], classifier)
                result[f"{split}/{attr}"] = acc["top1"]
            if split == "test":
                texts = splits[split].captions(np.arange(n))
                result.update({f"test/{k}": v for k, v in recall_at_k(
                    feats, encode_texts(model, texts, tokenizer)).items()})
                # Flickr30k-style: 1,000 images, five differently worded captions each
                m = min(n, FIVE_CAPTION_IMAGES)
                texts, image_of_text = all_captions(splits[split].caption_set(np.arange(m), 5))
                result.update({f"test/5-caption/{k}": v for k, v in recall_at_k(
                    feats[:m], encode_texts(model, texts, tokenizer),
                    image_of_text=image_of_text).items()})
        return _mean_zero_shot(result, zero_shot)

    pairs = (arrays["test"][:12], splits["test"].captions(np.arange(12)))
    if not train:
        return Task("shapes", None, None, None, evaluate, zero_shot, "zero_shot_accuracy", pairs)
    data = ShapesDataset("train", seed=seed, image_size=image_size, size=train_size)
    # images whose objects agree in every attribute can swap captions: one group
    o = data.objects
    facts = np.concatenate([o[k] for k in test_attrs], axis=1)
    _, groups = np.unique(facts, axis=0, return_inverse=True)
    return Task("shapes", data.arrays(), data.captions, groups, evaluate, zero_shot,
                "zero_shot_accuracy", pairs)


def cifar_task(dataset="cifar10", train=True, preprocess=None):
    """CIFAR-10/100: zero-shot classification of the 10,000 test images with
    OpenAI's class names and 18 prompt templates, ensembled (zero_shot_classifier);
    top-1 is the headline, top-5 and per-class beside. preprocess: see make_task."""
    from miniclip.data.cifar import TEMPLATES, load_cifar
    from miniclip.data.loader import label_captions
    test_images, test_labels, classnames = load_cifar(dataset, "test")

    # a periodic evaluation's `limit` images: a fixed random sample, since an image-folder
    # archive lists the test images class by class (the first 1,000 would all be airplanes)
    sample_order = np.random.default_rng(0).permutation(len(test_images))

    def evaluate(model, tokenizer, limit=None):
        rows = slice(None) if limit is None else np.sort(sample_order[:limit])
        classifier = zero_shot_classifier(model, classnames, TEMPLATES, tokenizer)
        features = encode_images(model, test_images[rows], preprocess=preprocess)
        acc = zero_shot_accuracy(features, test_labels[rows], classifier)
        return {"test/class": acc["top1"], "zero_shot_accuracy": acc["top1"], "top5": acc.get("top5"),
                "per_class": dict(zip(classnames, np.round(acc["per_class"], 4).tolist()))}

    first = [int(np.flatnonzero(test_labels == c)[0]) for c in range(min(len(classnames), 12))]
    pairs = (test_images[first], [TEMPLATES[0].format(classnames[test_labels[i]]) for i in first])
    if not train:
        return Task(dataset, None, None, None, evaluate, ("test/class",), "zero_shot_accuracy", pairs)
    images, labels, _ = load_cifar(dataset, "train")
    return Task(dataset, images, label_captions(labels, classnames, TEMPLATES), labels, evaluate,
                ("test/class",), "zero_shot_accuracy", pairs)


def csv_task(path, image_size=32, sep="\t", img_key="filepath", caption_key="title"):
    """A user's images and captions: trains on the first 90 % of the images (one of an
    image's captions drawn per epoch), scores image->text and text->image recall@K on
    the last 10 % with all their captions (no classes, so no zero-shot task).
    sep, img_key, caption_key: the separator and column names (OpenCLIP's defaults)."""
    from miniclip.data.csv import CsvDataset
    data = CsvDataset(path, image_size=image_size, sep=sep, img_key=img_key,
                      caption_key=caption_key)
    n_test = max(1, len(data) // 10)                  # the last 10 % is held out
    if len(data) < 2:
        raise ValueError(f"{path}: {len(data)} readable image: the last tenth (at least one "
                         f"image) is held out for evaluation, so none is left to train on; "
                         f"list more images")
    images, texts = data.arrays(), data.texts_per_image

    def evaluate(model, tokenizer, limit=None):
        feats = encode_images(model, images[-n_test:])
        flat, image_of_text = all_captions(texts[-n_test:])
        return recall_at_k(feats, encode_texts(model, flat, tokenizer), image_of_text=image_of_text)

    # images with the same captions can swap them: one group
    _, groups = np.unique(["\n".join(sorted(t)) for t in texts[:-n_test]], return_inverse=True)
    pairs = (images[-n_test:][:12], data.texts[-n_test:][:12])
    return Task(f"csv:{path}", images[:-n_test], data.captions, groups, evaluate, (),
                "image_to_text_R@1", pairs)


def karpathy_task(path, images, split="test", image_size=32, train=True):
    """COCO / Flickr30k retrieval (Karpathy's split file + an image folder), scored as the
    CLIP paper's Table 13: image->text and text->image recall@1/5/10 on `split` with all
    five captions of each image. Trains on the 'train' and 'restval' images, one of each
    image's captions drawn per epoch."""
    from miniclip.data.karpathy import KarpathyDataset
    if images is None:
        raise ValueError(f"karpathy:{path}: give the image folder with --images (images= in "
                         f"Python), e.g. --images flickr30k-images")
    test = KarpathyDataset(path, images, split, image_size)

    def evaluate(model, tokenizer, limit=None):
        n = len(test) if limit is None else min(limit, len(test))
        texts, image_of_text = all_captions(test.texts_per_image[:n])
        return recall_at_k(encode_images(model, test.arrays()[:n]),
                           encode_texts(model, texts, tokenizer), image_of_text=image_of_text)

    pairs = (test.arrays()[:12], test.captions(np.arange(min(12, len(test)))))
    if not train:
        return Task(f"karpathy:{path}", None, None, None, evaluate, (), "image_to_text_R@1", pairs)
    data = KarpathyDataset(path, images, ("train", "restval"), image_size)
    return Task(f"karpathy:{path}", data.arrays(), data.captions, np.arange(len(data)),
                evaluate, (), "image_to_text_R@1", pairs)


def probe_data(dataset, seed=0, image_size=32, train_size=10000):
    """What a linear / few-shot probe of `dataset` fits and scores, and the zero-shot
    metric it is read beside: (train uint8 (n, S, S, 3), train labels (n,), test uint8,
    test labels, class names, zero-shot metric name). CIFAR: its class, train_size
    training images drawn at random (seeded), not the first ones: an image-folder archive
    lists them class by class, so the first 10,000 would be two classes of ten; shapes:
    the main object's shape (train_size images of the train split, the test split)."""
    if dataset in ("cifar10", "cifar100"):
        from miniclip.data.cifar import load_cifar
        train_images, train_labels, classnames = load_cifar(dataset, "train")
        test_images, test_labels, _ = load_cifar(dataset, "test")
        n = min(train_size, len(train_images))
        subset = np.sort(np.random.default_rng(seed).permutation(len(train_images))[:n])
        return (train_images[subset], train_labels[subset], test_images, test_labels,
                classnames, "test/class")
    if dataset == "shapes":
        from miniclip.data.shapes import SHAPES, ShapesDataset
        train = ShapesDataset("train", seed=seed, image_size=image_size, size=train_size)
        test = ShapesDataset("test", seed=seed, image_size=image_size)
        return (train.arrays(), train.labels("shape"), test.arrays(), test.labels("shape"),
                list(SHAPES), "test/shape")
    raise ValueError(f"--linear-probe / --few-shot: {dataset} has no classes; use cifar10, "
                     "cifar100 or shapes")
