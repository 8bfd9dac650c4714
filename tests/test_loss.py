"""clip_loss and batch_accuracy against plain NumPy; siglip_loss and log_sigmoid against
OpenCLIP's own outputs (fixtures/siglip)."""
import os

import numpy as np
import pytest

import miniclip.functional as F
from miniclip.autograd import gradcheck
from miniclip.autograd.nn_ops import log_sigmoid_composed
from miniclip.autograd.tensor import Tensor
from miniclip.loss import batch_accuracy, clip_loss, siglip_loss


def numpy_cross_entropy(logits):
    """Mean of −log softmax(row i)[i]."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(log_p))


def test_clip_loss_is_the_mean_of_both_cross_entropies():
    logits = np.random.default_rng(0).standard_normal((5, 5)) * 4
    loss = clip_loss(Tensor(logits), Tensor(logits.T))
    expected = (numpy_cross_entropy(logits) + numpy_cross_entropy(logits.T)) / 2
    assert abs(float(loss.data) - expected) < 1e-12


def test_clip_loss_gradient():
    logits = Tensor(np.random.default_rng(1).standard_normal((4, 4)), requires_grad=True)
    assert gradcheck(lambda x: clip_loss(x, x.T), logits)


def test_perfect_and_uniform_logits():
    assert float(clip_loss(Tensor(np.eye(3) * 100), Tensor(np.eye(3) * 100)).data) < 1e-10
    uniform = Tensor(np.zeros((8, 8)))
    assert abs(float(clip_loss(uniform, uniform).data) - np.log(8)) < 1e-12


def test_batch_accuracy_reads_rows_and_columns():
    logits = np.array([[5.0, 1.0, 0.0],     # image 0 -> caption 0 (right)
                       [6.0, 2.0, 0.0],     # image 1 -> caption 0 (wrong)
                       [0.0, 1.0, 3.0]])    # image 2 -> caption 2 (right)
    # caption 0 -> image 1 (wrong), caption 1 -> image 1 (right), caption 2 -> image 2 (right)
    image_to_text, text_to_image = batch_accuracy(Tensor(logits))
    assert abs(image_to_text - 2 / 3) < 1e-12 and abs(text_to_image - 2 / 3) < 1e-12
    assert batch_accuracy(np.eye(4)) == (1.0, 1.0)
    assert batch_accuracy(np.array([[0.0, 1.0], [0.0, 1.0]])) == (0.5, 0.5)


def test_soft_positives():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((4, 4)) * 3
    groups = np.array([0, 1, 0, 2])                      # pairs 0 and 2 mean the same
    same = (groups[:, None] == groups[None, :]).astype(float)
    positives = same / same.sum(axis=1, keepdims=True)

    def soft_ce(x):
        shifted = x - x.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -(positives * log_p).sum(axis=1).mean()

    loss = clip_loss(Tensor(logits), Tensor(logits.T), positives)
    assert abs(float(loss.data) - (soft_ce(logits) + soft_ce(logits.T)) / 2) < 1e-12
    identity = clip_loss(Tensor(logits), Tensor(logits.T), np.eye(4))
    assert abs(float(identity.data) - float(clip_loss(Tensor(logits), Tensor(logits.T)).data)) < 1e-12
    x = Tensor(logits, requires_grad=True)
    assert gradcheck(lambda x: clip_loss(x, x.T, positives), x)


# ---- log_sigmoid and SigLIP's sigmoid loss -----------------------------------------------

def test_log_sigmoid_gradcheck_and_composed_twin():
    x = np.random.default_rng(2).standard_normal((4, 6)) * 4
    assert gradcheck(F.log_sigmoid, Tensor(x, requires_grad=True))
    results = []
    for fn in (F.log_sigmoid, log_sigmoid_composed):
        t = Tensor(x, requires_grad=True)
        y = fn(t)
        y.backward(np.random.default_rng(3).standard_normal(x.shape))
        results.append((y.data, t.grad))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_sigmoid_extremes_do_not_overflow(dtype):
    x = Tensor(np.array([-1000.0, -100.0, 0.0, 40.0, 1000.0], dtype=dtype), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # no inf, no nan
        y = F.log_sigmoid(x)
        y.backward(np.ones(5, dtype=dtype))
    assert y.dtype == dtype and x.grad.dtype == dtype
    np.testing.assert_allclose(y.data, [-1000.0, -100.0, -np.log(2), -np.exp(-40.0), 0.0], rtol=1e-6)
    # the gradient σ(−x): 1 for very negative x, ½ at 0, e^−40 (not 0) at 40
    np.testing.assert_allclose(x.grad, [1.0, 1.0, 0.5, np.exp(-40.0), 0.0], rtol=1e-6)


def test_siglip_loss_by_hand(xp):
    logits = np.random.default_rng(4).standard_normal((3, 3)) * 3
    z = 2 * np.eye(3) - 1
    expected = np.log1p(np.exp(-z * logits)).sum() / 3
    assert abs(float(siglip_loss(Tensor(xp.asarray(logits))).data) - expected) < 1e-12
    positives = xp.asarray(np.eye(3))
    assert abs(float(siglip_loss(Tensor(xp.asarray(logits)), positives=positives).data) - expected) < 1e-12
    block = np.random.default_rng(5).standard_normal((2, 4))       # rank 1 of 2: columns 2, 3
    z = -np.ones((2, 4))
    z[0, 2] = z[1, 3] = 1
    expected = np.log1p(np.exp(-z * block)).sum() / 2
    assert abs(float(siglip_loss(Tensor(xp.asarray(block)), offset=2).data) - expected) < 1e-12


def _siglip_case(fixtures_dir, case):
    path = os.path.join(fixtures_dir, "siglip", "siglip_loss.npz")
    if not os.path.exists(path):
        pytest.skip(f"SigLIP reference outputs not found: {path} (set MINICLIP_FIXTURES)")
    with np.load(path) as f:
        return {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(case + "/")}


@pytest.mark.parametrize("case", ["square", "block", "init"])
def test_siglip_loss_matches_openclip(fixtures_dir, case):
    ref = _siglip_case(fixtures_dir, case)
    image = Tensor(ref["image_features"], requires_grad=True)
    text = Tensor(ref["text_features"], requires_grad=True)
    t = Tensor(np.asarray(ref["t"], dtype=np.float64), requires_grad=True)
    b = Tensor(np.asarray(ref["b"], dtype=np.float64), requires_grad=True)
    logits = t.exp() * (image @ text.T) + b
    loss = siglip_loss(logits, offset=int(ref["offset"]))
    loss.backward()

    def close(actual, expected):
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())
    close(logits.data, ref["logits"])
    close(loss.data, ref["loss"])
    close(image.grad, ref["grad_image_features"])
    close(text.grad, ref["grad_text_features"])
    close(t.grad, ref["grad_t"])
    close(b.grad, ref["grad_b"])
