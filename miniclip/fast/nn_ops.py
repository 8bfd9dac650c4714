"""Fast versions of the fused ops in miniclip/autograd/nn_ops.py.

Same arithmetic, same class names, arranged for speed: the elementwise work
runs one block of rows at a time (each block stays in the CPU cache while
several ufuncs run on it) on the thread pool of parallel.py, in place where an
array is not needed twice. Each block runs the plain op's ufuncs in the plain
op's order, so values and gradients equal the plain op's bit for bit except
the LayerNorm weight/bias gradients and Linear's bias gradient (sums over the
rows in another order: equal to rounding). tests/test_fast.py checks both.

The plain ops are the ones to read; this file only shows how they are made fast.
"""
import math

import numpy as np

from miniclip.backend import get_array_module
from miniclip.autograd import nn_ops
from miniclip.autograd.function import Function
from miniclip.fast.parallel import for_row_blocks


def as_rows(x):
    """x (..., D) viewed as 2-d rows (R, D)."""
    return x.reshape(-1, x.shape[-1])


def split_rows(x, fn):
    """Run fn(rows) over blocks of the rows of 2-d `x` on the thread pool (parallel.py)."""
    for_row_blocks(x.shape[0], fn, x.size, on_gpu=get_array_module(x) is not np)


def softmax_last_axis_(x):
    """softmax over the last axis of `x`, computed in place (x is overwritten); returns x.

    nn_ops.softmax_array's ufuncs, in the same order, one block of rows at a time.
    """
    xp = get_array_module(x)
    rows = as_rows(x)

    def block(r):
        e = rows[r]
        e -= e.max(axis=-1, keepdims=True)          # shift by the max: no overflow
        xp.exp(e, out=e)
        e /= e.sum(axis=-1, keepdims=True)
    split_rows(rows, block)
    return x


class Softmax(nn_ops.Softmax):
    """nn_ops.Softmax; over the last axis in place, in blocks of rows."""

    @staticmethod
    def forward(ctx, x, axis=-1):
        if axis not in (-1, x.ndim - 1):
            return nn_ops.Softmax.forward(ctx, x, axis)
        y = softmax_last_axis_(x.copy())           # a copy: the input stays as it was
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y


class LayerNorm(Function):
    """nn_ops.LayerNorm, in blocks of rows, in place. x: (..., D), weight, bias: (D,)"""

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        xp = get_array_module(x)
        x2 = as_rows(x)
        x_hat = xp.empty_like(x2)
        rstd = xp.empty((len(x2), 1), dtype=x2.dtype)
        y = xp.empty_like(x2)

        def block(r):
            c = x_hat[r]
            xp.subtract(x2[r], x2[r].mean(axis=-1, keepdims=True), out=c)   # x − mean
            var = (c * c).mean(axis=-1, keepdims=True)
            rstd[r] = 1.0 / xp.sqrt(var + eps)
            c *= rstd[r]                                  # x̂
            xp.multiply(c, weight, out=y[r])
            y[r] += bias                                  # y = x̂ · weight + bias
        split_rows(x2, block)
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
            xp.multiply(rows[r], weight, out=g_hat)                     # ĝ = g · weight
            projection = x_hat[r] * (g_hat * x_hat[r]).mean(axis=-1, keepdims=True)
            g_hat -= g_hat.mean(axis=-1, keepdims=True)
            g_hat -= projection
            g_hat *= rstd[r]                    # rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ·x̂))
        split_rows(x_hat, block)
        grad_weight = g_x_hat.sum(axis=0)                               # Σ g·x̂
        grad_bias = rows.sum(axis=0)                                    # Σ g
        return grad_x.reshape(grad.shape), grad_weight, grad_bias


class QuickGELU(Function):
    """nn_ops.QuickGELU, in blocks of rows, in place."""

    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        x2 = as_rows(x)
        sig, y = xp.empty_like(x2), xp.empty_like(x2)

        def block(r):
            sr = sig[r]
            xp.multiply(x2[r], 0.851, out=sr)
            xp.tanh(sr, out=sr)
            sr += 1
            sr *= 0.5                            # σ(1.702x) = (tanh(0.851x) + 1) / 2
            xp.multiply(x2[r], sr, out=y[r])     # y = x · σ(1.702x)
        split_rows(x2, block)
        ctx.save_for_backward(x2, sig)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2, sig = ctx.saved
        xp = get_array_module(x2)
        g2 = grad.reshape(x2.shape)
        out = xp.empty_like(x2)

        def block(r):
            o, sr = out[r], sig[r]
            xp.multiply(x2[r], 1.702, out=o)
            o *= sr
            o *= 1 - sr
            o += sr                              # σ + 1.702 x σ (1 − σ)
            o *= g2[r]
        split_rows(x2, block)
        return out.reshape(grad.shape)


class Linear(nn_ops.Linear):
    """nn_ops.Linear; the bias gradient Σ_rows g as 1ᵀ g, a matrix-vector product that
    runs on BLAS's threads."""

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        xp = get_array_module(grad)
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = (g2 @ weight).reshape(x.shape)
        grad_weight = g2.T @ x.reshape(-1, x.shape[-1])
        grad_bias = xp.ones(len(g2), dtype=g2.dtype) @ g2 if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


class ScaledDotProductAttention(nn_ops.ScaledDotProductAttention):
    """nn_ops.ScaledDotProductAttention; the softmax and its backward in place, in blocks."""

    @staticmethod
    def forward(ctx, q, k, v, mask=None):
        xp = get_array_module(q)
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = (q * scale) @ xp.swapaxes(k, -1, -2)
        if mask is not None:
            scores += mask
        probs = softmax_last_axis_(scores)                    # in place: scores is not kept
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale = scale
        return probs @ v

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs = ctx.saved
        xp = get_array_module(q)
        grad_v = xp.swapaxes(probs, -1, -2) @ grad
        grad_scores = grad @ xp.swapaxes(v, -1, -2)           # dL/dP, then in place dL/dS:
        g_rows, p_rows = as_rows(grad_scores), as_rows(probs)

        def block(r):                                         # (dP − Σ dP·P) ⊙ P / √D
            g = g_rows[r]
            g -= (g * p_rows[r]).sum(axis=-1, keepdims=True)
            g *= p_rows[r]
            g *= ctx.scale
        split_rows(g_rows, block)
        grad_q = grad_scores @ k
        grad_k = xp.swapaxes(grad_scores, -1, -2) @ q
        return grad_q, grad_k, grad_v
