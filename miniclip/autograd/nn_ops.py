"""Fused ops: whole neural-network pieces with a hand-derived backward.

Composing these from primitives (exp, sum, div, ...) would be correct but
slow and memory-hungry: every intermediate array would be kept for backward.
A fused op computes the forward in a few array calls, keeps only what the
backward formula needs, and writes that formula out. Beside each one, a
`*_composed` function builds the same math from primitive Tensor ops: what
the fused op replaces, and the reference tests/test_autograd_ops.py checks
it against (values and gradients).

These are the plain ops: whole-array calls on one thread, the ones to read
and step through. miniclip/fast/nn_ops.py has faster versions of some of
them (same arithmetic, in blocks of rows on a thread pool), swapped in by
the switch in switch.py.
"""
import math

import numpy as np

from miniclip.backend import get_array_module
from miniclip.autograd.erf import erf
from miniclip.autograd.function import Function
from miniclip.autograd import ops

SQRT_HALF = math.sqrt(0.5)                    # 1/√2
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def softmax_array(x, axis=-1):
    """softmax of array x along `axis` (a new array)."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))   # shift by the max: no overflow
    return e / e.sum(axis=axis, keepdims=True)         # e / Σ e


def logsumexp_array(x, axis=-1):
    """log Σ exp(x) of array x along `axis`, keeping that axis (size 1)."""
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)                 # a row of -inf stays -inf
    return m + xp.log(xp.exp(x - m).sum(axis=axis, keepdims=True))   # m + log Σ e^(x−m)


class Softmax(Function):
    """y = exp(x) / Σ exp(x) along `axis`."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        y = softmax_array(x, axis)
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
        y = x - logsumexp_array(x, axis)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        xp = get_array_module(y)
        # dL/dx = g − softmax(x) · Σ g
        return grad - xp.exp(y) * grad.sum(axis=ctx.axis, keepdims=True)


def log_softmax_composed(x, axis=-1):
    """log softmax from primitive ops (x: a Tensor)."""
    return x - logsumexp_composed(x, axis=axis, keepdims=True)


class LogSumExp(Function):
    """y = log Σ exp(x) along `axis`."""

    @staticmethod
    def forward(ctx, x, axis=-1, keepdims=False):
        y = logsumexp_array(x, axis)
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
    """log Σ exp(x) from primitive ops (x: a Tensor)."""
    m = x.max(axis=axis, keepdims=True)
    y = m + (x - m).exp().sum(axis=axis, keepdims=True).log()
    return y if keepdims else y.sum(axis=axis)        # a sum over a size-1 axis drops it


class LayerNorm(Function):
    """y = (x − mean) / √(var + eps) · weight + bias over the last axis.

    x: (..., D), weight: (D,), bias: (D,)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        xp = get_array_module(x)
        centred = x - x.mean(axis=-1, keepdims=True)            # x − mean
        var = (centred * centred).mean(axis=-1, keepdims=True)  # biased variance, like torch
        rstd = 1.0 / xp.sqrt(var + eps)                         # 1 / √(var + eps): (..., 1)
        x_hat = centred * rstd                                  # x̂ = (x − mean) / √(var + eps)
        ctx.save_for_backward(x_hat, rstd, weight)
        return x_hat * weight + bias                            # y = x̂ · weight + bias

    @staticmethod
    def backward(ctx, grad):
        x_hat, rstd, weight = ctx.saved
        rows = tuple(range(grad.ndim - 1))                      # every axis but the last
        grad_weight = (grad * x_hat).sum(axis=rows)             # dL/dweight = Σ g·x̂
        grad_bias = grad.sum(axis=rows)                         # dL/dbias = Σ g
        g_hat = grad * weight                                   # ĝ = dL/dx̂ = g · weight
        # dL/dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂)): x̂ depends on x directly and
        # through the mean and the variance (derived in conv_ops.BatchNorm2d's docstring)
        projection = x_hat * (g_hat * x_hat).mean(axis=-1, keepdims=True)
        grad_x = (g_hat - g_hat.mean(axis=-1, keepdims=True) - projection) * rstd
        return grad_x, grad_weight, grad_bias


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
        sig = (xp.tanh(x * 0.851) + 1) * 0.5          # σ(1.702x) = (tanh(0.851x) + 1) / 2
        ctx.save_for_backward(x, sig)
        return x * sig                                # y = x · σ(1.702x)

    @staticmethod
    def backward(ctx, grad):
        x, sig = ctx.saved
        # dy/dx = σ + 1.702 x σ (1 − σ), since σ'(z) = σ (1 − σ)
        return (x * 1.702 * sig * (1 - sig) + sig) * grad


def quick_gelu_composed(x):
    """QuickGELU from primitive ops (x: a Tensor)."""
    return x * (x * 1.702).sigmoid()


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


def gelu_composed(x):
    """The exact GELU from primitive ops (x: a Tensor), with the Erf primitive."""
    return x * 0.5 * (ops.Erf.apply(x * SQRT_HALF) + 1.0)


class GELUTanh(Function):
    """y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), GELU's tanh approximation."""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        t = xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))   # t = tanh(u)
        ctx.save_for_backward(x, t)
        return 0.5 * x * (1 + t)

    @staticmethod
    def backward(ctx, grad):
        x, t = ctx.saved
        du_dx = SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
        # dy/dx = ½ (1 + t) + ½ x (1 − t²) du/dx
        return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du_dx)


def gelu_tanh_composed(x):
    """GELU's tanh approximation from primitive ops (x: a Tensor)."""
    return x * 0.5 * (((x + x ** 3 * 0.044715) * SQRT_2_OVER_PI).tanh() + 1.0)


class Linear(Function):
    """y = x @ weightᵀ + bias.  x: (..., in), weight: (out, in), bias: (out,)"""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        x2 = x.reshape(-1, x.shape[-1])             # one big matmul, not one per batch item
        y = x2 @ weight.T                           # (rows, in) @ (in, out)
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        g2 = grad.reshape(-1, grad.shape[-1])         # (rows, out)
        grad_x = (g2 @ weight).reshape(x.shape)       # dL/dx = g · W
        grad_weight = g2.T @ x.reshape(-1, x.shape[-1])   # dL/dW = gᵀ · x
        grad_bias = g2.sum(axis=0) if ctx.has_bias else None   # dL/db = Σ_rows g
        return grad_x, grad_weight, grad_bias


def linear_composed(x, weight, bias=None):
    """Linear from primitive ops (Tensors)."""
    y = x @ weight.T
    return y if bias is None else y + bias


class CrossEntropy(Function):
    """Mean over N of −Σ_c target[c] · log softmax(logits)[c].

    logits: (N, C); targets: (N,) class indices, or (N, C) probabilities
    (each row sums to 1, e.g. spread over several correct classes).

    This backward is where CLIP's contrastive loss gets its gradient: clip_loss
    is two cross-entropies over the similarity logits, so d loss / d logits is
    (softmax(logits) − target) / N, computed here.
    """

    @staticmethod
    def forward(ctx, logits, targets):
        xp = get_array_module(logits)
        log_probs = logits - logsumexp_array(logits, axis=-1)   # log softmax
        if targets.ndim == 1:                                 # indices -> one-hot rows
            targets = xp.eye(logits.shape[-1], dtype=logits.dtype)[targets]
        ctx.save_for_backward(log_probs, targets)
        return -(targets * log_probs).sum(axis=-1).mean()

    @staticmethod
    def backward(ctx, grad):
        log_probs, targets = ctx.saved
        xp = get_array_module(log_probs)
        return (xp.exp(log_probs) - targets) * (grad / len(targets))   # (softmax − target) / N


def cross_entropy_composed(logits, targets):
    """Cross-entropy from primitive ops: logits (N, C) Tensor, targets (N,) class indices
    or (N, C) probabilities (an array)."""
    log_probs = log_softmax_composed(logits)
    if targets.ndim == 2:
        return -(log_probs * targets).sum(axis=-1).mean()
    return -log_probs[np.arange(len(targets)), targets.tolist()].mean()


class ScaledDotProductAttention(Function):
    """softmax(q kᵀ / √D + mask) v.

    query q: (..., Tq, D), key k: (..., Tk, D), value v: (..., Tk, Dv),
    mask: additive, broadcastable to (..., Tq, Tk) (−inf hides a position).
    """

    @staticmethod
    def forward(ctx, query, key, value, mask=None):
        xp = get_array_module(query)
        scale = 1.0 / math.sqrt(query.shape[-1])
        scores = (query * scale) @ xp.swapaxes(key, -1, -2)    # S = q kᵀ / √D: (..., Tq, Tk)
        if mask is not None:
            scores += mask                                     # in place: keeps the dtype of q
        probs = softmax_array(scores)                          # P = softmax(S) over the keys
        ctx.save_for_backward(query, key, value, probs)
        ctx.scale = scale
        return probs @ value                                   # P v: (..., Tq, Dv)

    @staticmethod
    def backward(ctx, grad):
        query, key, value, probs = ctx.saved
        xp = get_array_module(query)
        grad_value = xp.swapaxes(probs, -1, -2) @ grad         # dL/dv = Pᵀ g
        grad_probs = grad @ xp.swapaxes(value, -1, -2)         # dL/dP = g vᵀ
        # dL/dS = P ⊙ (dP − Σ dP·P) (softmax's backward), times 1/√D for the scale
        grad_scores = (grad_probs - (grad_probs * probs).sum(axis=-1, keepdims=True)) * probs * ctx.scale
        grad_query = grad_scores @ key                         # dL/dq = dS k / √D
        grad_key = xp.swapaxes(grad_scores, -1, -2) @ query    # dL/dk = dSᵀ q / √D
        return grad_query, grad_key, grad_value


def attention_composed(query, key, value, mask=None):
    """Attention from primitive ops (Tensors): keeps the scores and the probabilities."""
    key_t = key.transpose(*range(key.ndim - 2), key.ndim - 1, key.ndim - 2)     # kᵀ
    scores = query @ key_t / math.sqrt(query.shape[-1])
    if mask is not None:
        scores = scores + mask
    return softmax_composed(scores) @ value


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


def embedding_composed(weight, ids):
    """Embedding from primitive ops: indexing the weight Tensor with the ids array."""
    return weight[ids]


class Normalize(Function):
    """y = x / max(‖x‖, eps) along `axis` (L2 normalisation)."""

    @staticmethod
    def forward(ctx, x, axis=-1, eps=1e-12):
        xp = get_array_module(x)
        norm = xp.sqrt((x * x).sum(axis=axis, keepdims=True))   # ‖x‖
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


def normalize_composed(x, axis=-1, eps=1e-12):
    """L2 normalisation from primitive ops (x: a Tensor): x / max(‖x‖, eps)."""
    norm = (x * x).sum(axis=axis, keepdims=True).sqrt()
    small = norm.data <= eps                              # where the floor eps applies
    return x / ops.Where.apply(eps, norm, cond=small)


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
