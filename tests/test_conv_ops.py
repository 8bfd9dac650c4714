"""The ResNet tower's ops (conv2d, batch_norm, avg_pool2d): float64 gradcheck, equal to
plain-loop references written straight from the definitions, and to their *_composed twins;
on both tiers (the plain ops and the fast ones, autograd/switch.py)."""
import numpy as np
import pytest

import miniclip.functional as F
from miniclip import Tensor
from miniclip.autograd import gradcheck, switch
from miniclip.autograd.conv_ops import avg_pool2d_composed, batch_norm_composed, conv2d_composed

RNG = np.random.default_rng(0)


@pytest.fixture(params=["plain", "fast"])
def tier(request):
    """Run the test with the plain ops, then with the fast ones."""
    switch.use_plain(request.param == "plain")
    yield request.param
    switch.use_plain(None)


def t64(*shape):
    return Tensor(RNG.standard_normal(shape), requires_grad=True)


# ---- plain-loop references: one output number at a time ----------------------------------
def conv2d_loops(x, w, b, stride, padding):
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    out = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    out[n, o, i, j] = (window * w[o]).sum() + (0 if b is None else b[o])
    return out


def batch_norm_loops(x, weight, bias, eps=1e-5):
    """Train mode: per channel, batch mean and biased variance over (N, H, W)."""
    N, C, H, W = x.shape
    out = np.zeros_like(x)
    means, variances = np.zeros(C), np.zeros(C)
    for c in range(C):
        values = [x[n, c, h, w] for n in range(N) for h in range(H) for w in range(W)]
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        means[c], variances[c] = mean, var
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    out[n, c, h, w] = (x[n, c, h, w] - mean) / np.sqrt(var + eps) * weight[c] + bias[c]
    return out, means, variances


def avg_pool_loops(x, k):
    N, C, H, W = x.shape
    out = np.zeros((N, C, H // k, W // k))
    for n in range(N):
        for c in range(C):
            for i in range(H // k):
                for j in range(W // k):
                    out[n, c, i, j] = x[n, c, i * k:(i + 1) * k, j * k:(j + 1) * k].mean()
    return out


# ---- conv2d ------------------------------------------------------------------------------
CONV_CASES = [  # (N, C, H, W, O, k, stride, padding, bias)
    (2, 3, 7, 6, 4, 3, 1, 1, True),
    (2, 3, 7, 7, 4, 3, 2, 1, False),        # the stem's strided conv, odd size
    (1, 4, 5, 5, 3, 1, 1, 0, False),        # 1×1, as in the Bottleneck
    (2, 2, 6, 5, 3, 2, 2, 0, True),         # patchify-like
    (1, 2, 4, 4, 2, 3, 1, 2, False),        # padding wider than half the kernel
    (2, 3, 8, 9, 4, 1, 1, 0, True),         # 1×1 on a grid of ≥ 64: the fast tier's batched matmul
]


@pytest.mark.parametrize("N,C,H,W,O,k,stride,padding,bias", CONV_CASES)
def test_conv2d_equals_loops_and_gradchecks(tier, N, C, H, W, O, k, stride, padding, bias):
    x, w = t64(N, C, H, W), t64(O, C, k, k)
    b = t64(O) if bias else None
    out = F.conv2d(x, w, b, stride=stride, padding=padding)
    expected = conv2d_loops(x.data, w.data, None if b is None else b.data, stride, padding)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    inputs = (x, w) + ((b,) if bias else ())
    assert gradcheck(lambda *t: F.conv2d(*t, stride=stride, padding=padding), *inputs)


def test_conv2d_float32_matches_float64():
    x, w = RNG.standard_normal((2, 3, 8, 8)), RNG.standard_normal((5, 3, 3, 3))
    out32 = F.conv2d(x.astype(np.float32), w.astype(np.float32), padding=1).data
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, F.conv2d(x, w, padding=1).data, rtol=1e-4, atol=1e-5)


def test_conv2d_clear_errors():
    with pytest.raises(ValueError, match="channels"):
        F.conv2d(np.zeros((1, 3, 4, 4)), np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="does not fit"):
        F.conv2d(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 3, 3)))


def assert_same_values_and_gradients(fused, composed, inputs):
    """fused(*Tensors) and composed(*Tensors): equal outputs and input gradients (float64)."""
    results = []
    for fn in (fused, composed):
        tensors = [Tensor(a.copy(), requires_grad=True) for a in inputs]
        out = fn(*tensors)
        out.backward(np.random.default_rng(1).standard_normal(out.shape))
        results.append([out.data] + [t.grad for t in tensors])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,C,H,W,O,k,stride,padding,bias", CONV_CASES)
def test_conv2d_equals_conv2d_composed(tier, N, C, H, W, O, k, stride, padding, bias):
    inputs = [RNG.standard_normal((N, C, H, W)), RNG.standard_normal((O, C, k, k))]
    inputs += [RNG.standard_normal(O)] if bias else []
    assert_same_values_and_gradients(lambda *t: F.conv2d(*t, stride=stride, padding=padding),
                                     lambda *t: conv2d_composed(*t, stride=stride, padding=padding),
                                     inputs)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_equals_batch_norm_composed(tier, training):
    running_mean, running_var = RNG.standard_normal(2), RNG.uniform(0.5, 1.5, 2)
    inputs = [RNG.standard_normal((3, 2, 2, 3)), RNG.standard_normal(2), RNG.standard_normal(2)]
    assert_same_values_and_gradients(
        lambda *t: F.batch_norm(*t, running_mean.copy(), running_var.copy(), training=training),
        lambda *t: batch_norm_composed(*t, running_mean, running_var, training=training), inputs)


@pytest.mark.parametrize("shape,k", [((2, 3, 4, 6), 2), ((1, 2, 5, 7), 2)])
def test_avg_pool2d_equals_avg_pool2d_composed(tier, shape, k):
    assert_same_values_and_gradients(lambda x: F.avg_pool2d(x, k), lambda x: avg_pool2d_composed(x, k),
                                     [RNG.standard_normal(shape)])


# ---- batch_norm --------------------------------------------------------------------------
def test_batch_norm_train_equals_loops_and_updates_running_stats():
    x = RNG.standard_normal((3, 4, 2, 3)) * 2 + 1
    weight, bias = RNG.standard_normal(4), RNG.standard_normal(4)
    running_mean, running_var = RNG.standard_normal(4), RNG.uniform(0.5, 1.5, 4)
    rm0, rv0 = running_mean.copy(), running_var.copy()
    out = F.batch_norm(x, weight, bias, running_mean, running_var, training=True)
    expected, means, variances = batch_norm_loops(x, weight, bias)
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    n = 3 * 2 * 3
    np.testing.assert_allclose(running_mean, 0.9 * rm0 + 0.1 * means, rtol=1e-14)
    np.testing.assert_allclose(running_var, 0.9 * rv0 + 0.1 * variances * n / (n - 1), rtol=1e-14)


def test_batch_norm_eval_uses_running_stats_and_leaves_them():
    x = RNG.standard_normal((2, 3, 2, 2))
    weight, bias = RNG.standard_normal(3), RNG.standard_normal(3)
    running_mean, running_var = RNG.standard_normal(3), RNG.uniform(0.5, 1.5, 3)
    before = running_mean.copy(), running_var.copy()
    out = F.batch_norm(x, weight, bias, running_mean, running_var, training=False)
    expected = np.zeros_like(x)
    for c in range(3):
        expected[:, c] = (x[:, c] - running_mean[c]) / np.sqrt(running_var[c] + 1e-5) * weight[c] + bias[c]
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(running_mean, before[0])
    np.testing.assert_array_equal(running_var, before[1])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_gradcheck(tier, training):
    x, weight, bias = t64(3, 2, 2, 3), t64(2), t64(2)
    running_mean, running_var = RNG.standard_normal(2), RNG.uniform(0.5, 1.5, 2)

    def fn(x, weight, bias):   # fresh copies: the running update must not drift between calls
        return F.batch_norm(x, weight, bias, running_mean.copy(), running_var.copy(), training=training)
    assert gradcheck(fn, x, weight, bias)


def test_batch_norm_train_needs_two_values():
    with pytest.raises(ValueError, match="more than one value"):
        F.batch_norm(np.zeros((1, 2, 1, 1)), np.ones(2), np.zeros(2), training=True)


# ---- avg_pool2d --------------------------------------------------------------------------
@pytest.mark.parametrize("shape,k", [((2, 3, 4, 6), 2), ((1, 2, 5, 7), 2), ((1, 2, 6, 6), 3)])
def test_avg_pool2d_equals_loops_and_gradchecks(tier, shape, k):
    x = t64(*shape)
    out = F.avg_pool2d(x, k)
    np.testing.assert_allclose(out.data, avg_pool_loops(x.data, k), rtol=1e-13, atol=1e-14)
    assert gradcheck(lambda x: F.avg_pool2d(x, k), x)
