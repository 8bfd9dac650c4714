"""Fused ops: whole neural-network pieces with a hand-derived backward.

Composing these from primitives (exp, sum, div, ...) would be correct but
slow and memory-hungry: every intermediate array would be kept for backward.
A fused op computes the forward in a few array calls, keeps only what the
backward formula needs, and writes that formula out. Beside each one, a
`*_composed` function builds the same math from primitive Tensor ops: what
the fused op replaces, and the reference tests/test_autograd_ops.py checks
it against (values and gradients).
"""
import math

import numpy as np

from miniclip.backend import get_array_module
from miniclip.autograd.erf import erf
from miniclip.autograd.function import Function
from miniclip.autograd.parallel import for_row_blocks

SQRT_HALF = math.sqrt(0.5)                    # 1/√2
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _softmax(x, axis):
    """The plain two-line softmax (the reference `_softmax_last_axis_` is checked against)."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))   # shift by the max: no overflow
    return e / e.sum(axis=axis, keepdims=True)


def _rows(x):
    """x viewed as 2-d rows (..., D) -> (R, D), with the pool's arguments for it."""
    return x.reshape(-1, x.shape[-1])


def _split_rows(x, fn):
    """Run fn(rows) over blocks of the rows of 2-d `x` on the thread pool (parallel.py)."""
    for_row_blocks(x.shape[0], fn, x.size, on_gpu=get_array_module(x) is not np)


def _softmax_last_axis_(x):
    """softmax over the last axis of `x`, computed in place (x is overwritten); returns x.

    The same ufuncs as `_softmax`, in the same order, one block of rows at a time.
    """
    xp = get_array_module(x)
    rows = _rows(x)

    def block(r):
        e = rows[r]
        e -= e.max(axis=-1, keepdims=True)          # shift by the max: no overflow
        xp.exp(e, out=e)
        e /= e.sum(axis=-1, keepdims=True)
    _split_rows(rows, block)
    return x


def _logsumexp(x, axis):
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)                 # a row of -inf stays -inf
    return m + xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True))


class Softmax(Function):
    """y = exp(x) / Σ exp(x) along `axis`."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        if axis in (-1, x.ndim - 1):
            y = _softmax_last_axis_(x.copy())      # a copy: the input stays as it was
        else:
            y = _softmax(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        # dL/dx = y ⊙ (g − Σ g·y): the Jacobian diag(y) − y yᵀ applied to g
        return y * (grad - (grad * y).sum(axis=ctx.axis, keepdims=True))


def softmax_composed(x, axis=-1):
    """Softmax from primitive ops (x: a Tensor): every intermediate is kept for backward."""
    e = (x - x.max(axis=axis, keepdims=True)).exp()   # shifted: exp cannot overflow
    return e / e.sum(axis=axis, keepdims=True)


class LogSoftmax(Function):
    """y = x − logsumexp(x) along `axis`."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        y = x - _logsumexp(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        xp = get_array_module(y)
        # dL/dx = g − softmax(x) · Σ g
        return grad - xp.exp(y) * grad.sum(axis=ctx.axis, keepdims=True)


class LogSumExp(Function):
    """y = log Σ exp(x) along `axis`."""

    @staticmethod
    def forward(ctx, x, axis=-1, keepdims=False):
        y = _logsumexp(x, axis)
        ctx.save_for_backward(x, y)
        ctx.axis, ctx.keepdims = axis, keepdims
        return y if keepdims else y.squeeze(axis)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved
        xp = get_array_module(x)
        if not ctx.keepdims:
            grad = xp.expand_dims(grad, ctx.axis)
        return grad * xp.exp(x - y)            # d lse / dx = softmax(x)


def logsumexp_composed(x, axis=-1, keepdims=False):
    """log Σ exp(x) from primitive ops (x: a Tensor); log_softmax = x − this (keepdims)."""
    m = x.max(axis=axis, keepdims=True)
    y = m + (x - m).exp().sum(axis=axis, keepdims=True).log()
    return y if keepdims else y.sum(axis=axis)        # a sum over a size-1 axis drops it


class LayerNorm(Function):
    """y = (x − mean) / √(var + eps) · weight + bias over the last axis.

    x: (..., D), weight: (D,), bias: (D,)

    Both passes work one block of rows at a time (in the cache, on the thread
    pool), in place where an array is not needed twice; the math is line for
    line the composed version in the comments.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        xp = get_array_module(x)
        x2 = _rows(x)
        x_hat = xp.empty_like(x2)
        rstd = xp.empty((len(x2), 1), dtype=x2.dtype)
        y = xp.empty_like(x2)

        def block(r):
            c = x_hat[r]
            xp.subtract(x2[r], x2[r].mean(axis=-1, keepdims=True), out=c)   # x − mean
            var = (c * c).mean(axis=-1, keepdims=True)    # biased variance, like torch
            rstd[r] = 1.0 / xp.sqrt(var + eps)
            c *= rstd[r]                                  # x̂ = (x − mean) / √(var + eps)
            xp.multiply(c, weight, out=y[r])
            y[r] += bias                                  # y = x̂ · weight + bias
        _split_rows(x2, block)
        ctx.save_for_backward(x_hat, rstd, weight)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x_hat, rstd, weight = ctx.saved
        xp = get_array_module(x_hat)
        rows = grad.reshape(x_hat.shape)
        grad_x = xp.empty_like(x_hat)
        g_x_hat = xp.empty_like(x_hat)

        def block(r):
            xp.multiply(rows[r], x_hat[r], out=g_x_hat[r])             # g·x̂, summed below
            g_hat = grad_x[r]
            xp.multiply(rows[r], weight, out=g_hat)                     # ĝ = dL/dx̂ = g · weight
            # dL/dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))
            projection = x_hat[r] * (g_hat * x_hat[r]).mean(axis=-1, keepdims=True)
            g_hat -= g_hat.mean(axis=-1, keepdims=True)
            g_hat -= projection
            g_hat *= rstd[r]
        _split_rows(x_hat, block)
        grad_weight = g_x_hat.sum(axis=0)                               # Σ g·x̂
        grad_bias = rows.sum(axis=0)                                    # Σ g
        return grad_x.reshape(grad.shape), grad_weight, grad_bias


def layer_norm_composed(x, weight, bias, eps=1e-5):
    """LayerNorm from primitive ops (Tensors): five intermediates of x's size kept for backward."""
    centred = x - x.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / (var + eps).sqrt() * weight + bias


class QuickGELU(Function):
    """y = x · σ(1.702 x), OpenAI CLIP's activation."""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        x2 = _rows(x)
        s, y = xp.empty_like(x2), xp.empty_like(x2)

        def block(r):
            sr = s[r]
            xp.multiply(x2[r], 0.851, out=sr)
            xp.tanh(sr, out=sr)
            sr += 1
            sr *= 0.5                            # σ(1.702x) = (tanh(0.851x) + 1) / 2
            xp.multiply(x2[r], sr, out=y[r])     # y = x · σ(1.702x)
        _split_rows(x2, block)
        ctx.save_for_backward(x2, s)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, s = ctx.saved
        xp = get_array_module(x2)
        g2 = grad.reshape(x2.shape)
        out = xp.empty_like(x2)

        def block(r):
            o, sr = out[r], s[r]
            xp.multiply(x2[r], 1.702, out=o)
            o *= sr
            o *= 1 - sr
            o += sr                              # σ + 1.702 x σ (1 − σ)
            o *= g2[r]
        _split_rows(x2, block)
        return out.reshape(grad.shape)


class GELU(Function):
    """y = x · Φ(x) = ½ x (1 + erf(x / √2)): the exact GELU (torch.nn.GELU(), HF "gelu")."""

    @staticmethod
    def forward(ctx, x):
        cdf = 0.5 * (1.0 + erf(x * SQRT_HALF))      # Φ(x), the standard normal CDF
        ctx.save_for_backward(x, cdf)
        return x * cdf

    @staticmethod
    def backward(ctx, grad):
        x, cdf = ctx.saved
        xp = get_array_module(x)
        pdf = INV_SQRT_2PI * xp.exp(-0.5 * x * x)   # φ(x) = e^(−x²/2) / √(2π) = Φ'(x)
        return grad * (cdf + x * pdf)                # d(x Φ)/dx = Φ + x φ


class GELUTanh(Function):
    """y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), GELU's tanh approximation."""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        c = math.sqrt(2.0 / math.pi)
        t = xp.tanh(c * (x + 0.044715 * x ** 3))
        ctx.save_for_backward(x, t)
        return 0.5 * x * (1 + t)

    @staticmethod
    def backward(ctx, grad):
        x, t = ctx.saved
        c = math.sqrt(2.0 / math.pi)
        du_dx = c * (1 + 3 * 0.044715 * x * x)
        return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx)


class Linear(Function):
    """y = x @ weightᵀ + bias.  x: (..., in), weight: (out, in), bias: (out,)"""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        x2 = x.reshape(-1, x.shape[-1])             # one big matmul, not one per batch item
        y = x2 @ weight.T
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        xp = get_array_module(grad)
        g2 = grad.reshape(-1, grad.shape[-1])         # (rows, out)
        grad_x = (g2 @ weight).reshape(x.shape)       # dL/dx = g · W
        grad_weight = g2.T @ x.reshape(-1, x.shape[-1])   # dL/dW = gᵀ · x
        # dL/db = Σ_rows g, as 1ᵀ g: a matrix-vector product runs on BLAS's threads
        grad_bias = xp.ones(len(g2), dtype=g2.dtype) @ g2 if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


class CrossEntropy(Function):
    """Mean over N of −Σ_c target[c] · log softmax(logits)[c].

    logits: (N, C); targets: (N,) class indices, or (N, C) probabilities
    (each row sums to 1, e.g. spread over several correct classes).
    """

    @staticmethod
    def forward(ctx, logits, targets):
        xp = get_array_module(logits)
        log_p = logits - _logsumexp(logits, axis=-1)
        if targets.ndim == 1:                                 # indices -> one-hot rows
            targets = xp.eye(logits.shape[-1], dtype=logits.dtype)[targets]
        ctx.save_for_backward(log_p, targets)
        return -(targets * log_p).sum(axis=-1).mean()

    @staticmethod
    def backward(ctx, grad):
        log_p, targets = ctx.saved
        xp = get_array_module(log_p)
        return (xp.exp(log_p) - targets) * (grad / len(targets))   # (softmax − target) / N


def cross_entropy_composed(logits, targets):
    """Cross-entropy from primitive ops: logits (N, C) Tensor, targets (N,) class indices."""
    log_p = logits - logsumexp_composed(logits, axis=-1, keepdims=True)
    return -log_p[np.arange(len(targets)), targets.tolist()].mean()


class ScaledDotProductAttention(Function):
    """softmax(q kᵀ / √D + mask) v.

    q: (..., Tq, D), k: (..., Tk, D), v: (..., Tk, Dv),
    mask: additive, broadcastable to (..., Tq, Tk) (−inf hides a position).
    """

    @staticmethod
    def forward(ctx, q, k, v, mask=None):
        xp = get_array_module(q)
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = (q * scale) @ xp.swapaxes(k, -1, -2)         # (..., Tq, Tk)
        if mask is not None:
            scores += mask                                    # in place: keeps the dtype of q
        p = _softmax_last_axis_(scores)                       # in place: scores is not kept
        ctx.save_for_backward(q, k, v, p)
        ctx.scale = scale
        return p @ v

    @staticmethod
    def backward(ctx, grad):
        q, k, v, p = ctx.saved
        xp = get_array_module(q)
        grad_v = xp.swapaxes(p, -1, -2) @ grad                # dL/dv = pᵀ g
        grad_s = grad @ xp.swapaxes(v, -1, -2)                # dL/dp = g vᵀ, then in place:
        g_rows, p_rows = _rows(grad_s), _rows(p)

        def block(r):                                         # dS = p ⊙ (dp − Σ dp·p) / √D
            g = g_rows[r]
            g -= (g * p_rows[r]).sum(axis=-1, keepdims=True)
            g *= p_rows[r]
            g *= ctx.scale
        _split_rows(g_rows, block)
        grad_q = grad_s @ k                                   # dL/dq = dS k / √D
        grad_k = xp.swapaxes(grad_s, -1, -2) @ q              # dL/dk = dSᵀ q / √D
        return grad_q, grad_k, grad_v


def attention_composed(q, k, v, mask=None):
    """Attention from primitive ops (Tensors): keeps the scores and the probabilities."""
    scores = q @ k.transpose(*range(k.ndim - 2), k.ndim - 1, k.ndim - 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask
    return softmax_composed(scores) @ v


class Embedding(Function):
    """Rows of `weight` picked by integer `ids`.  weight: (V, D), ids: (...) -> (..., D)"""

    @staticmethod
    def forward(ctx, weight, ids):
        ctx.shape, ctx.ids = weight.shape, ids
        return weight[ids]

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        grad_weight = xp.zeros(ctx.shape, dtype=grad.dtype)
        xp.add.at(grad_weight, ctx.ids.ravel(), grad.reshape(-1, ctx.shape[1]))   # sum per id
        return grad_weight


class Normalize(Function):
    """y = x / max(‖x‖, eps) along `axis` (L2 normalisation)."""

    @staticmethod
    def forward(ctx, x, axis=-1, eps=1e-12):
        xp = get_array_module(x)
        norm = xp.sqrt((x * x).sum(axis=axis, keepdims=True))
        denom = xp.maximum(norm, eps)
        y = x / denom
        ctx.save_for_backward(y, denom, norm > eps)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        y, denom, scaled = ctx.saved
        # where ‖x‖ > eps: dL/dx = (g − y Σ g·y) / ‖x‖ ; else y = x/eps: dL/dx = g / eps
        radial = y * (grad * y).sum(axis=ctx.axis, keepdims=True)
        return (grad - radial * scaled) / denom


class LogSigmoid(Function):
    """y = log σ(x) = −log(1 + e^−x), without overflow for any x (SigLIP's loss uses it).

    The stable form: log σ(x) = min(x, 0) − log(1 + e^−|x|); e^−|x| ≤ 1, so nothing overflows.
    """

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        y = xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        xp = get_array_module(y)
        # d log σ(x)/dx = 1 − σ(x) = σ(−x) = 1 − e^y, as −expm1(y): exact even where σ(−x) ≈ 1e−300
        return grad * -xp.expm1(y)


def log_sigmoid_composed(x):
    """log σ(x) from primitive ops (x: a Tensor): min(x, 0) − log(1 + e^−|x|), where
    min(x, 0) = −relu(−x) and |x| = relu(x) + relu(−x)."""
    negative_part = (-x).relu()
    return -negative_part - ((-(x.relu() + negative_part)).exp() + 1).log()
