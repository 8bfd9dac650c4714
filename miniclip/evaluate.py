"""How we know what a CLIP learned: zero-shot classification, retrieval, linear and
few-shot probes.

Zero-shot: turn each class name into text ('a photo of a {}.' for many
templates), embed the texts, average per class -> a classifier with no
training at all. Retrieval: for each image, is its own caption among the K
most similar texts (and the other way round)? Linear probe: how much a
logistic regression on frozen image features can read out; a few-shot probe
does it from k labelled examples per class.

Features are computed on the model's device, batch by batch, under no_grad,
and come back as NumPy arrays: the metrics themselves are cheap.
"""
import numpy as np
from PIL import Image

from miniclip import backend
from miniclip.autograd import no_grad
from miniclip.data.transforms import normalize_batch
from miniclip.tokenizer import tokenize


# Published zero-shot top-1 (%) on CIFAR-10 / CIFAR-100 with OpenAI's class names and 18
# templates (DESIGN §9): the CLIP paper's Table 11, and CLIP_benchmark's reproduction
# (OpenCLIP's docs/openclip_classification_results.csv). Only the models DESIGN lists.
PUBLISHED_ZERO_SHOT = {
    ("ViT-B/32", "cifar10"): {"paper": 91.3, "clip_benchmark": 89.8},
    ("ViT-B/32", "cifar100"): {"paper": 65.1, "clip_benchmark": 64.2},
    ("RN50", "cifar10"): {"paper": 75.6, "clip_benchmark": 71.6},
    ("RN50", "cifar100"): {"paper": 41.6, "clip_benchmark": 40.3},
}


def model_device(model):
    """'cpu' or 'cuda': where the model's parameters live."""
    return next(iter(model.parameters())).device


def _l2_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@no_grad()
def encode_images(model, images, batch_size=256, preprocess=None):
    """Normalised image features (N, E), NumPy.

    images: uint8 (N, S, S, 3) pixels (normalised here with OpenAI's mean/std)
            or float32 (N, 3, S, S) already preprocessed.
    preprocess: None, or a callable PIL.Image -> float32 (3, R, R) (the `preprocess` that
            miniclip.load returns: bicubic resize to R, center crop, normalise) applied to
            each uint8 image, one batch at a time (CIFAR's 32 x 32 become R x R).
    """
    device = model_device(model)
    dtype = next(iter(model.parameters())).dtype
    features = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        if preprocess is not None:
            batch = np.stack([preprocess(Image.fromarray(np.asarray(image))) for image in batch])
        elif batch.dtype == np.uint8:
            batch = normalize_batch(batch)
        x = backend.to_device(batch.astype(dtype, copy=False), device)
        features.append(backend.to_numpy(model.encode_image(x).data))
    return _l2_normalize(np.concatenate(features).astype(np.float32))


@no_grad()
def encode_texts(model, texts, tokenizer=None, batch_size=256):
    """Normalised text features (N, E), NumPy. tokenizer: None for OpenAI's vocabulary."""
    features = []
    for start in range(0, len(texts), batch_size):
        ids = tokenize(texts[start:start + batch_size], model.config.context_length,
                       truncate=True, tokenizer=tokenizer)
        # host ids: the model checks their range on the host, then copies them to its device
        features.append(backend.to_numpy(model.encode_text(ids).data))
    return _l2_normalize(np.concatenate(features).astype(np.float32))


def zero_shot_classifier(model, classnames, templates, tokenizer=None):
    """Class weights (num_classes, E): per class, the mean of the normalised text
    embeddings of every template, renormalised (OpenCLIP's recipe)."""
    texts = [template.format(name) for name in classnames for template in templates]
    features = encode_texts(model, texts, tokenizer)                  # (C·T, E)
    per_class = features.reshape(len(classnames), len(templates), -1).mean(axis=1)
    return _l2_normalize(per_class)                                   # (C, E)


def zero_shot_accuracy(image_features, labels, classifier, topk=(1, 5)):
    """Top-k accuracy and per-class top-1 accuracy of a zero-shot classifier.

    image_features: (N, E) normalised; labels: (N,) ints; classifier: (C, E).
    Returns {'top1': ..., 'top5': ..., 'per_class': (C,) array, 'predictions': (N,)}.
    """
    labels = np.asarray(labels)
    logits = image_features @ classifier.T                            # cosine similarity (N, C)
    ranked = np.argsort(-logits, axis=1)                              # best class first
    result = {}
    for k in topk:
        if k <= classifier.shape[0]:
            hit = (ranked[:, :k] == labels[:, None]).any(axis=1)
            result[f"top{k}"] = float(hit.mean())
    predictions = ranked[:, 0]
    correct = predictions == labels
    counts = np.bincount(labels, minlength=classifier.shape[0])
    per_class = np.bincount(labels, weights=correct, minlength=classifier.shape[0])
    result["per_class"] = per_class / np.maximum(counts, 1)
    result["predictions"] = predictions
    return result


def recall_at_k(image_features, text_features, ks=(1, 5, 10), image_of_text=None):
    """Retrieval recall@K both ways, as COCO / Flickr30k retrieval is scored (CLIP_benchmark).

    image_features: (N, E) normalised; text_features: (T, E) normalised.
    image_of_text: (T,) ints, the image each text describes (several texts may share
    one image, every image needs at least one); None means text i goes with image i (T = N).
    image->text R@K: the fraction of images with at least one of their texts among
    their K most similar texts. text->image R@K: the fraction of texts whose image
    is among their K most similar images.
    A tie counts against the right answer: a wrong candidate scoring the same ranks
    above it, so identical features (all scores equal) score 0, never 100 %; a NaN
    score counts as a miss.
    Returns {'image_to_text_R@1': ..., 'text_to_image_R@1': ..., ...}.
    """
    similarity = np.asarray(image_features) @ np.asarray(text_features).T   # (N, T)
    n, t = similarity.shape
    if image_of_text is None:
        if n != t:
            raise ValueError(f"recall_at_k: {n} images but {t} texts; pass image_of_text "
                             "(the image index of each text) when they are not paired one to one")
        image_of_text = np.arange(n)
    image_of_text = np.asarray(image_of_text)
    if (image_of_text.shape != (t,) or not np.issubdtype(image_of_text.dtype, np.integer)
            or t and not 0 <= image_of_text.min() <= image_of_text.max() < n):
        raise ValueError(f"recall_at_k: image_of_text must hold {t} image indices in "
                         f"0..{n - 1}, got {image_of_text.dtype} {image_of_text.shape}")
    if len(np.unique(image_of_text)) != n:
        raise ValueError("recall_at_k: every image needs at least one text in image_of_text")
    positive = np.zeros((n, t), dtype=bool)
    positive[image_of_text, np.arange(t)] = True                      # (N, T): text j describes image i
    # image -> text: the image's best-scoring own text; its rank = the wrong texts scoring
    # at least as high (not-below, so a tie or a NaN counts against the right answer)
    best = np.where(positive, similarity, -np.inf).max(axis=1)        # (N,)
    i2t_rank = (~(similarity < best[:, None]) & ~positive).sum(axis=1)
    # text -> image: its own image's score; rank = the other images scoring at least as high
    correct = similarity[image_of_text, np.arange(t)]                 # (T,)
    t2i_rank = (~(similarity < correct[None, :]) & ~positive).sum(axis=0)
    result = {}
    for k in ks:
        result[f"image_to_text_R@{k}"] = float((i2t_rank < k).mean())
        result[f"text_to_image_R@{k}"] = float((t2i_rank < k).mean())
    return result


def _fit_logistic(x, labels, num_classes, l2, steps=500):
    """Multinomial logistic regression by Nesterov-accelerated gradient descent.

    x: (N, E) features; minimises mean cross-entropy + l2/2 ‖W‖² (bias not decayed).
    Returns W (E+1, C), the last row being the bias.
    """
    n = len(x)
    xb = np.concatenate([x, np.ones((n, 1), x.dtype)], axis=1)        # (N, E+1): a bias column
    onehot = np.eye(num_classes, dtype=x.dtype)[labels]               # (N, C)
    # step 1/L, L = a bound on the curvature: ½ λmax(XᵀX / N) + l2
    lipschitz = 0.5 * np.linalg.norm(xb, ord=2) ** 2 / n + l2
    lr = 1.0 / lipschitz
    decay = np.ones((xb.shape[1], 1), x.dtype)
    decay[-1] = 0.0                                                   # do not decay the bias
    w = np.zeros((xb.shape[1], num_classes), x.dtype)
    w_prev = w.copy()
    for t in range(1, steps + 1):
        look = w + (t - 1) / (t + 2) * (w - w_prev)                  # Nesterov look-ahead
        logits = xb @ look
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = xb.T @ (p - onehot) / n + l2 * decay * look            # d loss / dW
        w_prev, w = w, look - lr * grad
    return w


def _predict(w, x):
    return (x @ w[:-1] + w[-1]).argmax(axis=1)


def _choose_l2(fit_x, fit_y, val_x, val_y, num_classes, l2_grid, steps):
    """(the l2 in l2_grid whose probe, fit on (fit_x, fit_y), scores best on the held-out
    (val_x, val_y), that score). The test set never enters: the paper's validation sweep."""
    scores = []
    for l2 in l2_grid:
        w = _fit_logistic(fit_x, fit_y, num_classes, l2, steps)
        scores.append(float((_predict(w, val_x) == val_y).mean()))
    best = int(np.argmax(scores))
    return l2_grid[best], scores[best]


def linear_probe(train_features, train_labels, test_features, test_labels,
                 l2_grid=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2), val_fraction=0.2, steps=500, seed=0):
    """Logistic regression on frozen, normalised image features.

    The L2 strength is chosen on a validation split carved from the training
    features, then the probe is refit on all of them and scored on the test set.
    Returns {'accuracy': test top-1, 'l2': chosen strength, 'val_accuracy': ...}.
    """
    train_features = np.asarray(train_features, np.float64)
    test_features = np.asarray(test_features, np.float64)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    order = np.random.default_rng(seed).permutation(len(train_features))
    n_val = max(1, int(len(order) * val_fraction))
    val, fit = order[:n_val], order[n_val:]
    l2, val_accuracy = _choose_l2(train_features[fit], train_labels[fit], train_features[val],
                                  train_labels[val], num_classes, l2_grid, steps)
    w = _fit_logistic(train_features, train_labels, num_classes, l2, steps)
    accuracy = float((_predict(w, test_features) == test_labels).mean())
    return {"accuracy": accuracy, "l2": l2, "val_accuracy": val_accuracy}


def few_shot_indices(labels, k, seed, draw):
    """k indices of each class, drawn without replacement (a class with fewer than k
    examples gives all it has); k=None: every index. The draw is a function of
    (seed, k, draw) alone. labels: (N,) ints -> sorted int64 indices."""
    labels = np.asarray(labels)
    if k is None:
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng((seed, k, draw))
    picks = [rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def few_shot_probe(train_features, train_labels, test_features, test_labels,
                   shots=(1, 2, 4, 8, 16, None), draws=5, seed=0,
                   l2_grid=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2), val_fraction=0.2, steps=500):
    """Linear probes from k labelled examples per class (the CLIP paper's Figure 6).

    A fixed part of the training examples (val_fraction, drawn by seed) is held out to
    choose the L2 strength; the k-shot examples are drawn from the rest, `draws` times
    per k (k=None: all of the rest, one draw). For each draw the probe is fit on its k
    shots with every l2 in l2_grid, the best on the held-out part is kept and scored on
    the test set, which no choice ever sees.
    Returns {k: {'mean': test top-1 averaged over the draws, 'std': their spread
    (population std), 'accuracies': [...], 'l2': [chosen per draw]}}.
    """
    train_features = np.asarray(train_features, np.float64)
    test_features = np.asarray(test_features, np.float64)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    order = np.random.default_rng(seed).permutation(len(train_features))
    n_val = max(1, int(len(order) * val_fraction))
    val, pool = np.sort(order[:n_val]), np.sort(order[n_val:])       # held out / to draw from
    result = {}
    for k in shots:
        accuracies, chosen = [], []
        for draw in range(1 if k is None else draws):
            fit = pool[few_shot_indices(train_labels[pool], k, seed, draw)]
            x, y = train_features[fit], train_labels[fit]
            l2, _ = _choose_l2(x, y, train_features[val], train_labels[val], num_classes,
                               l2_grid, steps)
            w = _fit_logistic(x, y, num_classes, l2, steps)
            accuracies.append(float((_predict(w, test_features) == test_labels).mean()))
            chosen.append(l2)
        result[k] = {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
                     "accuracies": accuracies, "l2": chosen}
    return result
