"""clip_loss and batch_accuracy against plain NumPy."""
import numpy as np

from miniclip.autograd import gradcheck
from miniclip.autograd.tensor import Tensor
from miniclip.loss import batch_accuracy, clip_loss


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
