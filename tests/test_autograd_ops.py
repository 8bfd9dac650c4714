"""Every op: float64 finite-difference gradcheck, fused == composed, float32 ≈ float64.

The gradchecks and the fused == composed checks run on both tiers of ops (the plain
ones in miniclip/autograd/, the fast ones in miniclip/fast/), chosen by the switch."""
import functools
import math

import numpy as np
import pytest

import miniclip.functional as F
from miniclip import Tensor
from miniclip.autograd import gradcheck, switch
from miniclip.autograd.nn_ops import (attention_composed, cross_entropy_composed, embedding_composed,
                                      gelu_composed, gelu_tanh_composed, layer_norm_composed,
                                      linear_composed, log_softmax_composed, logsumexp_composed,
                                      normalize_composed, quick_gelu_composed, softmax_composed)

RNG = np.random.default_rng(0)


@pytest.fixture(params=["plain", "fast"])
def tier(request):
    """Run the test with the plain ops, then with the fast ones (autograd/switch.py)."""
    switch.use_plain(request.param == "plain")
    yield request.param
    switch.use_plain(None)


def normal(*shape):
    return RNG.standard_normal(shape)


def positive(*shape):
    return RNG.uniform(0.5, 2.0, shape)


def transposed(*shape):
    """A non-contiguous array: the transpose of a (reversed-shape) array."""
    return RNG.standard_normal(shape[::-1]).T


def distinct(*shape):
    """Values far from each other and from 0 (no ties for max, no kink for relu)."""
    n = int(np.prod(shape))
    values = (RNG.permutation(n) + 1.0) * 0.37 * RNG.choice([-1, 1], n)
    return values.reshape(shape)


IDS = np.array([[1, 3, 3, 0], [2, 2, 4, 1]])          # repeated ids: gradients add up
TARGETS = np.array([2, 0, 1, 2, 4])
SOFT = np.array([[0.5, 0.5, 0, 0], [0, 1.0, 0, 0], [0.25, 0.25, 0.25, 0.25]])   # rows sum to 1
CAUSAL = np.triu(np.full((5, 5), -np.inf), k=1)
CUT = (slice(1, 3), slice(None, None, 2))
W43, W423, W32 = normal(4, 3), normal(4, 2, 3), normal(3, 2)

# (name, function of Tensors, input makers); each input is made in float64
CASES = [
    ("add", lambda xp, a, b: a + b, [normal(3, 4), normal(4)]),
    ("add_scalar", lambda xp, a: 2.5 + a, [normal(3, 4)]),
    ("sub", lambda xp, a, b: a - b, [normal(2, 3, 4), normal(3, 1)]),
    ("rsub", lambda xp, a: 1.0 - a, [normal(3)]),
    ("mul", lambda xp, a, b: a * b, [normal(2, 3, 4), normal(3, 1)]),
    ("mul_transposed", lambda xp, a, b: a * b, [transposed(4, 3), normal(4, 3)]),
    ("div", lambda xp, a, b: a / b, [normal(3, 4), positive(4)]),
    ("rdiv", lambda xp, a: 2.0 / a, [positive(3, 2)]),
    ("neg", lambda xp, a: -a, [normal(3, 4)]),
    ("pow", lambda xp, a: a ** 3, [normal(3, 4)]),
    ("pow_fractional", lambda xp, a: a ** -0.5, [positive(3, 4)]),
    ("exp", lambda xp, a: a.exp(), [normal(3, 4)]),
    ("log", lambda xp, a: a.log(), [positive(3, 4)]),
    ("sqrt", lambda xp, a: a.sqrt(), [positive(3, 4)]),
    ("tanh", lambda xp, a: a.tanh(), [normal(3, 4)]),
    ("sigmoid", lambda xp, a: a.sigmoid(), [normal(3, 4)]),
    ("relu", lambda xp, a: a.relu(), [distinct(3, 4)]),
    ("erf", lambda xp, a: F.erf(a), [normal(3, 4) * 2]),
    ("matmul", lambda xp, a, b: a @ b, [normal(3, 4), normal(4, 5)]),
    ("matmul_batched_broadcast", lambda xp, a, b: a @ b, [normal(2, 3, 4), normal(4, 5)]),
    ("matmul_batched_both", lambda xp, a, b: a @ b, [normal(2, 1, 3, 4), normal(3, 4, 2)]),
    ("matmul_vector", lambda xp, a, b: a @ b, [normal(3, 4), normal(4)]),
    ("matmul_transposed", lambda xp, a, b: a @ b, [transposed(3, 4), transposed(4, 2)]),
    ("sum_all", lambda xp, a: a.sum(), [normal(3, 4)]),
    ("sum_axis", lambda xp, a: a.sum(axis=1), [normal(2, 3, 4)]),
    ("sum_axes_keepdims", lambda xp, a: a.sum(axis=(0, 2), keepdims=True), [normal(2, 3, 4)]),
    ("mean_axis", lambda xp, a: a.mean(axis=-1), [normal(2, 3, 4)]),
    ("mean_all", lambda xp, a: a.mean(), [normal(2, 3)]),
    ("max_axis", lambda xp, a: a.max(axis=0), [distinct(3, 4)]),
    ("max_all_keepdims", lambda xp, a: a.max(keepdims=True), [distinct(3, 4)]),
    ("reshape", lambda xp, a: a.reshape(4, 3) * xp.asarray(W43, a.dtype), [normal(3, 4)]),
    ("transpose", lambda xp, a: a.transpose(2, 0, 1) * xp.asarray(W423, a.dtype), [normal(2, 3, 4)]),
    ("T", lambda xp, a: a.T @ xp.asarray(W32, a.dtype), [normal(3, 4)]),
    ("getitem_slice", lambda xp, a: a[CUT], [normal(4, 5)]),
    ("getitem_int_arrays", lambda xp, a: a[xp.asarray([0, 2, 2]), xp.asarray([1, 1, 3])], [normal(3, 4)]),
    ("concatenate", lambda xp, a, b: F.concatenate([a, b, a], axis=1), [normal(2, 3), normal(2, 1)]),
    ("stack", lambda xp, a, b: F.stack([a, b], axis=1), [normal(2, 3), normal(2, 3)]),
    ("where", lambda xp, a, b: F.where(xp.arange(12).reshape(3, 4) % 3 == 0, a, b),
     [normal(3, 4), normal(4)]),
    ("softmax", lambda xp, a: F.softmax(a, axis=-1), [normal(3, 5)]),
    ("softmax_axis0", lambda xp, a: F.softmax(a, axis=0), [normal(3, 5)]),
    ("log_softmax", lambda xp, a: F.log_softmax(a), [normal(3, 5)]),
    ("logsumexp", lambda xp, a: F.logsumexp(a, axis=-1), [normal(3, 5)]),
    ("logsumexp_keepdims", lambda xp, a: F.logsumexp(a, axis=0, keepdims=True), [normal(3, 5)]),
    ("layer_norm", lambda xp, x, w, b: F.layer_norm(x, w, b), [normal(2, 3, 6), normal(6), normal(6)]),
    ("quick_gelu", lambda xp, a: F.quick_gelu(a), [normal(3, 4) * 2]),
    ("gelu", lambda xp, a: F.gelu(a), [normal(3, 4) * 2]),
    ("gelu_tails", lambda xp, a: F.gelu(a), [np.array([-9.0, -4.5, -1.0, -0.2, 0.3, 2.5, 5.0])]),
    ("gelu_tanh", lambda xp, a: F.gelu_tanh(a), [normal(3, 4) * 2]),
    ("linear", lambda xp, x, w, b: F.linear(x, w, b), [normal(2, 3, 4), normal(5, 4), normal(5)]),
    ("linear_no_bias", lambda xp, x, w: F.linear(x, w), [transposed(3, 4), normal(5, 4)]),
    ("cross_entropy", lambda xp, a: F.cross_entropy(a, xp.asarray(TARGETS)), [normal(5, 6)]),
    ("cross_entropy_soft", lambda xp, a: F.cross_entropy(a, xp.asarray(SOFT, a.dtype)), [normal(3, 4)]),
    ("attention", lambda xp, q, k, v: F.scaled_dot_product_attention(q, k, v),
     [normal(2, 2, 5, 4), normal(2, 2, 5, 4), normal(2, 2, 5, 3)]),
    ("attention_causal", lambda xp, q, k, v: F.scaled_dot_product_attention(q, k, v, mask=xp.asarray(CAUSAL)),
     [normal(2, 5, 4), normal(2, 5, 4), normal(2, 5, 4)]),
    ("embedding", lambda xp, w: F.embedding(xp.asarray(IDS), w), [normal(6, 3)]),
    ("normalize", lambda xp, a: F.normalize(a, axis=-1), [normal(4, 5)]),
    ("normalize_axis0", lambda xp, a: F.normalize(a, axis=0), [normal(4, 5)]),
    ("repeated_input", lambda xp, a: a * a + a.exp() * a, [normal(3, 4)]),
    ("diamond", lambda xp, a: (lambda h: h.tanh() * h.sigmoid() + h)(a * 2.0), [normal(3, 4)]),
]


def make_inputs(xp, arrays, dtype=np.float64):
    return [Tensor(xp.asarray(np.array(a, dtype=dtype)), requires_grad=True) for a in arrays]


@pytest.mark.parametrize("name, fn, arrays", CASES, ids=[c[0] for c in CASES])
def test_gradcheck_float64(xp, tier, name, fn, arrays):
    fn = functools.partial(fn, xp)
    assert gradcheck(fn, *make_inputs(xp, arrays), atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name, fn, arrays", CASES, ids=[c[0] for c in CASES])
def test_float32_matches_float64(xp, name, fn, arrays):
    fn = functools.partial(fn, xp)
    outputs, grads = [], []
    for dtype in (np.float64, np.float32):
        inputs = make_inputs(xp, arrays, dtype)
        out = fn(*inputs)
        assert out.dtype == dtype, f"{name} changed dtype {dtype} -> {out.dtype}"
        out.backward(xp.ones(out.shape, dtype=dtype))
        outputs.append(np.asarray(out.numpy(), dtype=np.float64))
        for i, t in enumerate(inputs):
            assert t.grad is not None, f"{name}: input {i} got no gradient ({dtype.__name__})"
        grads.append([np.asarray(_np(t.grad), np.float64) for t in inputs])
    scale = max(1.0, np.abs(outputs[0]).max())
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5 * scale)
    for g32, g64 in zip(grads[1], grads[0]):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(g64).max()))


def _np(a):
    from miniclip.backend import to_numpy
    return to_numpy(a)


# ---- fused ops against the same math built from primitive ops (the *_composed functions
#      beside each fused op in miniclip/autograd/nn_ops.py) ---------------------------------

GELU_C = math.sqrt(2 / math.pi)

FUSED = [
    ("softmax", lambda xp, x: F.softmax(x), lambda xp, x: softmax_composed(x), [normal(4, 7)]),
    ("softmax_axis0", lambda xp, x: F.softmax(x, axis=0), lambda xp, x: softmax_composed(x, axis=0), [normal(4, 7)]),
    ("log_softmax", lambda xp, x: F.log_softmax(x), lambda xp, x: log_softmax_composed(x), [normal(4, 7)]),
    ("logsumexp", lambda xp, x: F.logsumexp(x), lambda xp, x: logsumexp_composed(x), [normal(4, 7)]),
    ("layer_norm", lambda xp, *a: F.layer_norm(*a), lambda xp, *a: layer_norm_composed(*a), [normal(2, 3, 8), normal(8), normal(8)]),
    ("quick_gelu", lambda xp, x: F.quick_gelu(x), lambda xp, x: quick_gelu_composed(x), [normal(3, 4) * 3]),
    ("quick_gelu_by_hand", lambda xp, x: F.quick_gelu(x), lambda xp, x: x * (x * 1.702).sigmoid(), [normal(3, 4) * 3]),
    ("gelu", lambda xp, x: F.gelu(x), lambda xp, x: gelu_composed(x), [normal(3, 4) * 3]),
    ("gelu_tanh", lambda xp, x: F.gelu_tanh(x), lambda xp, x: gelu_tanh_composed(x), [normal(3, 4) * 3]),
    ("gelu_tanh_by_hand", lambda xp, x: F.gelu_tanh(x), lambda xp, x: x * 0.5 * ((x + x ** 3 * 0.044715) * GELU_C).tanh() + x * 0.5,
     [normal(3, 4) * 3]),
    ("linear", lambda xp, *a: F.linear(*a), lambda xp, *a: linear_composed(*a), [normal(2, 3, 4), normal(5, 4), normal(5)]),
    ("linear_no_bias", lambda xp, *a: F.linear(*a), lambda xp, *a: linear_composed(*a), [normal(3, 4), normal(5, 4)]),
    ("cross_entropy", lambda xp, x: F.cross_entropy(x, xp.asarray(TARGETS)),
     lambda xp, x: cross_entropy_composed(x, xp.asarray(TARGETS)), [normal(5, 6)]),
    ("cross_entropy_soft", lambda xp, x: F.cross_entropy(x, xp.asarray(SOFT)),
     lambda xp, x: cross_entropy_composed(x, xp.asarray(SOFT)), [normal(3, 4)]),
    ("attention", lambda xp, *a: F.scaled_dot_product_attention(*a),
     lambda xp, *a: attention_composed(*a),
     [normal(2, 3, 5, 4), normal(2, 3, 5, 4), normal(2, 3, 5, 2)]),
    ("attention_causal", lambda xp, q, k, v: F.scaled_dot_product_attention(q, k, v, xp.asarray(CAUSAL)),
     lambda xp, q, k, v: attention_composed(q, k, v, xp.asarray(CAUSAL)),
     [normal(3, 5, 4), normal(3, 5, 4), normal(3, 5, 4)]),
    ("embedding", lambda xp, w: F.embedding(xp.asarray(IDS), w), lambda xp, w: embedding_composed(w, xp.asarray(IDS)), [normal(6, 3)]),
    ("normalize", lambda xp, x: F.normalize(x), lambda xp, x: normalize_composed(x), [normal(4, 5)]),
    ("normalize_by_hand", lambda xp, x: F.normalize(x), lambda xp, x: x / (x * x).sum(axis=-1, keepdims=True).sqrt(),
     [normal(4, 5)]),
    ("normalize_tiny_row", lambda xp, x: F.normalize(x, eps=1e-3), lambda xp, x: normalize_composed(x, eps=1e-3),
     [np.concatenate([normal(2, 5), normal(1, 5) * 1e-5])]),
]


@pytest.mark.parametrize("name, fused, composed, arrays", FUSED, ids=[c[0] for c in FUSED])
def test_fused_equals_composed(xp, tier, name, fused, composed, arrays):
    results = []
    for fn in (fused, composed):
        inputs = make_inputs(xp, arrays)
        out = fn(xp, *inputs)
        out.backward(xp.asarray(np.random.default_rng(1).standard_normal(out.shape)))
        results.append((out.numpy(), [_np(t.grad) for t in inputs]))
    (out_f, grads_f), (out_c, grads_c) = results
    np.testing.assert_allclose(out_f, out_c, rtol=1e-12, atol=1e-12)
    for gf, gc in zip(grads_f, grads_c):
        np.testing.assert_allclose(gf, gc, rtol=1e-12, atol=1e-12)
