"""Round four of bad inputs (issue 24: data, tokenizer, images, evaluation, zero-shot) and
retrieval recall with several captions per image (issue 26, item 1). Every test builds its
bad input itself; the memory-bound ones run in a subprocess under RLIMIT_AS."""
import numpy as np
import pytest

from miniclip.evaluate import recall_at_k


# ---- recall@K as CLIP_benchmark defines it --------------------------------------------

def reference_recall(image_features, text_features, image_of_text, k):
    """CLIP_benchmark's retrieval metric, written from its definition (no torch):
    scores (T, N) = texts @ images.T; positive[t, image_of_text[t]] = True;
    image retrieval: per text, is a positive among its top k images (mean over texts);
    text retrieval: per image, is any positive among its top k texts (mean over images).
    Ties go against the right answer: among equal scores the negatives come first."""
    scores = text_features @ image_features.T
    positive = np.zeros(scores.shape, dtype=bool)
    positive[np.arange(len(text_features)), image_of_text] = True

    def hits(scores, positive):
        found = []
        for row, pos in zip(scores, positive):
            order = np.lexsort((pos, -row))      # by score, best first; negatives before positives
            found.append(pos[order[:k]].sum() / pos.sum() > 0)
        return float(np.mean(found))
    return {f"image_to_text_R@{k}": hits(scores.T, positive.T),
            f"text_to_image_R@{k}": hits(scores, positive)}


@pytest.mark.parametrize("seed", range(4))
def test_recall_with_several_captions_matches_the_reference(seed):
    rng = np.random.default_rng(seed)
    n = 12
    image_of_text = np.repeat(np.arange(n), rng.integers(1, 6, n))   # 1-5 captions per image
    rng.shuffle(image_of_text)
    images = rng.standard_normal((n, 8))
    texts = images[image_of_text] + 1.5 * rng.standard_normal((len(image_of_text), 8))
    # ties: coarse rounding makes equal scores, and some texts are copies of others
    images, texts = np.round(images), np.round(texts)
    texts[1::4] = texts[0::4][:len(texts[1::4])]
    for k in (1, 3, 5, 10):
        got = recall_at_k(images, texts, ks=(k,), image_of_text=image_of_text)
        assert got == pytest.approx(reference_recall(images, texts, image_of_text, k))


def test_recall_one_to_one_matches_the_reference_with_ties():
    rng = np.random.default_rng(7)
    images, texts = np.round(rng.standard_normal((20, 4))), np.round(rng.standard_normal((20, 4)))
    texts[5:10] = texts[0]
    got = recall_at_k(images, texts, ks=(1, 5))
    for k in (1, 5):
        assert {key: v for key, v in got.items() if key.endswith(f"@{k}")} == pytest.approx(
            reference_recall(images, texts, np.arange(20), k))


def test_identical_features_score_zero_not_one_hundred_percent():
    # all-empty captions give identical text features: every score ties (was 100 %)
    features = np.ones((8, 4)) / 2.0
    result = recall_at_k(features, features, ks=(1, 5))
    assert result["image_to_text_R@1"] == 0.0 and result["text_to_image_R@1"] == 0.0
    assert result["image_to_text_R@5"] == 0.0


def test_recall_refuses_texts_without_a_pairing():
    with pytest.raises(ValueError, match="pass image_of_text"):
        recall_at_k(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="every image needs at least one text"):
        recall_at_k(np.ones((3, 2)), np.ones((4, 2)), image_of_text=[0, 0, 1, 1])
