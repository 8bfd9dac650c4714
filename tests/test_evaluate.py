"""Zero-shot, retrieval and linear probe on planted embeddings."""
import numpy as np
import pytest

from miniclip import Tensor
from miniclip.evaluate import (linear_probe, recall_at_k, zero_shot_accuracy,
                               zero_shot_classifier)
from miniclip.tokenizer import train_bpe

RNG = np.random.default_rng(0)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_zero_shot_is_perfect_when_embeddings_agree():
    classifier = unit(RNG.standard_normal((5, 16)))
    labels = RNG.integers(0, 5, 200)
    images = unit(classifier[labels] + 0.05 * RNG.standard_normal((200, 16)))
    result = zero_shot_accuracy(images, labels, classifier)
    assert result["top1"] == 1.0 and result["top5"] == 1.0
    np.testing.assert_array_equal(result["per_class"], np.ones(5))


def test_zero_shot_counts_mistakes_per_class():
    classifier = np.eye(3)
    images = np.eye(3)[[0, 0, 1, 2, 2]]
    labels = np.array([0, 1, 1, 2, 0])          # two of five are wrong: one in class 1, one in 0
    result = zero_shot_accuracy(images, labels, classifier, topk=(1, 2))
    assert result["top1"] == pytest.approx(0.6)
    np.testing.assert_allclose(result["per_class"], [0.5, 0.5, 1.0])


class BagOfTokensModel:
    """A stand-in CLIP whose text embedding is the sum of fixed per-token vectors."""

    class config:
        context_length = 16

    def __init__(self, vocab_size, dim=8):
        self.table = RNG.standard_normal((vocab_size, dim))

    def parameters(self):
        return iter([Tensor(self.table)])

    def encode_text(self, ids):
        return Tensor((self.table[ids] * (ids > 0)[..., None]).sum(axis=1))   # padding ignored


def test_zero_shot_classifier_averages_normalised_template_embeddings():
    tok = train_bpe(["a photo of a cat", "a dog", "a blurry photo"], num_merges=20)
    model = BagOfTokensModel(len(tok))
    templates = ["a photo of a {}.", "a blurry {}."]
    weights = zero_shot_classifier(model, ["cat", "dog"], templates, tokenizer=tok)
    assert weights.shape == (2, 8)
    for c, name in enumerate(["cat", "dog"]):
        rows = [unit(model.table[[tok.sot_token] + tok.encode(t.format(name)) + [tok.eot_token]]
                     .sum(axis=0)) for t in templates]
        np.testing.assert_allclose(weights[c], unit(np.mean(rows, axis=0)), rtol=1e-5, atol=1e-6)


def test_recall_at_k_on_planted_pairs():
    texts = unit(RNG.standard_normal((50, 32)))
    images = texts.copy()
    images[:10] = texts[np.roll(np.arange(10), 1)]   # the first 10 images match a neighbour's text
    result = recall_at_k(images, texts, ks=(1, 5, 50))
    assert result["image_to_text_R@1"] == pytest.approx(0.8)
    assert result["text_to_image_R@1"] == pytest.approx(0.8)
    assert result["image_to_text_R@50"] == 1.0


def test_linear_probe_separates_separable_data():
    centres = 4.0 * np.eye(6)[:4]
    labels = RNG.integers(0, 4, 600)
    features = unit(centres[labels] + 0.3 * RNG.standard_normal((600, 6)))
    # closed-form check: nearest class mean already classifies these perfectly
    means = np.stack([features[labels == c].mean(axis=0) for c in range(4)])
    assert ((features @ means.T).argmax(axis=1) == labels).mean() == 1.0
    result = linear_probe(features[:400], labels[:400], features[400:], labels[400:])
    assert result["accuracy"] == 1.0
    assert result["l2"] in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def test_linear_probe_is_near_chance_on_noise():
    features = unit(RNG.standard_normal((400, 8)))
    labels = RNG.integers(0, 4, 400)
    assert linear_probe(features[:300], labels[:300], features[300:], labels[300:])["accuracy"] < 0.5
