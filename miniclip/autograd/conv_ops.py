"""The convolutional ops of the ResNet image tower: conv2d, batch_norm, avg_pool2d.

Layout is NCHW, as in OpenAI's weights: images x (N, C, H, W), convolution
weights (O, C, kh, kw).

conv2d as one matrix product (im2col). Every output pixel (n, ho, wo) looks at
a C×kh×kw window of the padded input. Lay each window out as one row,

    cols[(n, ho, wo), (c, i, j)] = x_pad[n, c, ho·s + i, wo·s + j]     (N·Ho·Wo, C·kh·kw)

and the convolution is a single GEMM with the flattened weights:

    out[(n, ho, wo), o] = Σ_(c,i,j) cols[(n, ho, wo), (c, i, j)] · W[o, (c, i, j)]

(miniclip stores cols transposed, (C·kh·kw, N·Ho·Wo), and computes outᵀ = W colsᵀ:
the same product, in the memory order that copies and adds fastest.)

The windows are read with a strided view (no Python loop): the view
x_pad[n, c, i + s·ho, j + s·wo] is the array x_pad with two more axes whose
strides are those of H and W again (times s for the output axes). The backward
of "copy each pixel into every window it falls in" is "add each window's
gradient back onto its pixels" (col2im): a loop over the kh×kw kernel
offsets, each one strided slice-add over the whole batch at once.

A 1×1 convolution with stride 1 (most of a Bottleneck) needs no windows; the
fast tier (miniclip/fast/conv_ops.py) computes it as one batched matrix product
per image. Here it goes through the same im2col as every other convolution.

Beside each op, a `*_composed` function builds the same math from primitive
Tensor ops (tests/test_conv_ops.py checks the op against it).
"""
from numpy.lib.stride_tricks import as_strided

from miniclip.backend import get_array_module
from miniclip.autograd.function import Function
from miniclip.autograd import ops


def _pad(x, padding):
    if not padding:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def _windows(x_pad, kh, kw, stride):
    """A strided view (C, kh, kw, N, Ho, Wo) of x_pad (N, C, Hp, Wp), no copy:
    view[c, i, j, n, ho, wo] = x_pad[n, c, ho·s + i, wo·s + j].

    Flattened, it is colsᵀ: (C·kh·kw, N·Ho·Wo), one column per output pixel. This order
    (pixels innermost) makes the one copy into colsᵀ read rows of Wo neighbours, not
    runs of kw = 3 numbers, and lets col2im add contiguous blocks."""
    xp = get_array_module(x_pad)
    N, C, Hp, Wp = x_pad.shape
    Ho, Wo = (Hp - kh) // stride + 1, (Wp - kw) // stride + 1
    sN, sC, sH, sW = x_pad.strides
    shape = (C, kh, kw, N, Ho, Wo)
    strides = (sC, sH, sW, sN, sH * stride, sW * stride)
    if xp.__name__ == "numpy":
        return as_strided(x_pad, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(x_pad, shape=shape, strides=strides)


class Conv2d(Function):
    """out = conv(x, weight) + bias, cross-correlation as in PyTorch.

    x: (N, C, H, W), weight: (O, C, kh, kw), bias: (O,) or absent
    -> (N, O, Ho, Wo) with Ho = (H + 2·padding − kh) // stride + 1 (Wo alike).
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        O, C2, kh, kw = weight.shape
        if C2 != C:
            raise ValueError(f"conv2d: the input has {C} channels, the weight expects {C2}")
        x_pad = xp.ascontiguousarray(_pad(x, padding))
        windows = _windows(x_pad, kh, kw, stride)                   # (C, kh, kw, N, Ho, Wo) view
        Ho, Wo = windows.shape[4:]
        if Ho < 1 or Wo < 1:
            raise ValueError(f"conv2d: a {kh}×{kw} kernel does not fit an input of {H}×{W} "
                             f"with padding {padding}: pad more or use a larger image")
        cols_t = windows.reshape(C * kh * kw, N * Ho * Wo)          # im2col (transposed): the one copy
        w2 = weight.reshape(O, C * kh * kw)
        out = w2 @ cols_t                                           # the GEMM: (O, N·Ho·Wo)
        if bias is not None:
            out += bias.reshape(O, 1)
        ctx.save_for_backward(cols_t, weight)
        ctx.x_shape, ctx.pad_shape = x.shape, x_pad.shape
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        # (O, N, Ho, Wo) -> NCHW, contiguous so later reshapes stay views
        return xp.ascontiguousarray(out.reshape(O, N, Ho, Wo).transpose(1, 0, 2, 3))

    @staticmethod
    def backward(ctx, grad):
        cols_t, weight = ctx.saved
        stride, padding = ctx.stride, ctx.padding
        xp = get_array_module(grad)
        N, C, H, W = ctx.x_shape
        O, _, kh, kw = weight.shape
        Ho, Wo = grad.shape[2:]
        g_t = grad.transpose(1, 0, 2, 3).reshape(O, N * Ho * Wo)    # columns like cols_t
        grad_weight = (g_t @ cols_t.T).reshape(weight.shape)        # dL/dW = g · cols
        grad_bias = g_t.sum(axis=1) if ctx.has_bias else None       # dL/db = Σ g
        grad_cols = (weight.reshape(O, -1).T @ g_t).reshape(C, kh, kw, N, Ho, Wo)   # dL/dcols = Wᵀ g
        # col2im: each window's gradient goes back onto the pixels it was copied from,
        # accumulated in (C, N, Hp, Wp) order so that every add reads a contiguous block
        grad_pad = xp.zeros((C, N) + tuple(ctx.pad_shape[2:]), dtype=grad.dtype)
        span_h, span_w = stride * (Ho - 1) + 1, stride * (Wo - 1) + 1
        for di in range(kh):                    # kernel offsets only: each is one batched add
            for dj in range(kw):
                grad_pad[:, :, di:di + span_h:stride, dj:dj + span_w:stride] += grad_cols[:, di, dj]
        grad_x = xp.ascontiguousarray(
            grad_pad[:, :, padding:padding + H, padding:padding + W].transpose(1, 0, 2, 3))
        return grad_x, grad_weight, grad_bias


def conv2d_composed(x, weight, bias=None, stride=1, padding=0):
    """conv2d from primitive ops (Tensors): zero padding by concatenation, one strided
    slice per kernel offset (i, j) stacked into the columns, one matmul."""
    N, C, H, W = x.shape
    O, _, kh, kw = weight.shape
    if padding:
        xp = get_array_module(x.data)
        rows = xp.zeros((N, C, padding, W), dtype=x.dtype)
        x = ops.Concatenate.apply(rows, x, rows, axis=2)
        side = xp.zeros((N, C, H + 2 * padding, padding), dtype=x.dtype)
        x = ops.Concatenate.apply(side, x, side, axis=3)
    Ho, Wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    span_h, span_w = stride * (Ho - 1) + 1, stride * (Wo - 1) + 1
    shifted = [x[:, :, di:di + span_h:stride, dj:dj + span_w:stride]      # (N, C, Ho, Wo) each
               for di in range(kh) for dj in range(kw)]
    cols = ops.Stack.apply(*shifted, axis=2).reshape(N, C * kh * kw, Ho * Wo)
    out = (weight.reshape(O, C * kh * kw) @ cols).reshape(N, O, Ho, Wo)
    return out if bias is None else out + bias.reshape(1, O, 1, 1)


class BatchNorm2d(Function):
    """Per-channel normalisation of x (N, C, H, W); weight, bias, running stats: (C,).

    Train mode: μ, σ² = mean and biased variance of the current batch over
    (N, H, W), n = N·H·W numbers per channel:
        x̂ = (x − μ) / √(σ² + eps),   y = x̂ · weight + bias
    and, as a side effect, the running statistics move towards the batch's:
        running_mean ← (1 − m) running_mean + m μ
        running_var  ← (1 − m) running_var  + m σ² · n / (n − 1)   (unbiased)
    Eval mode: μ, σ² are the running statistics, constants.

    Backward in train mode (per channel, sums over the n positions, g = dL/dy):
        dL/dweight = Σ g·x̂,   dL/dbias = Σ g,   ĝ = g · weight = dL/dx̂.
    x̂ depends on x directly and through μ and σ²:
        ∂x̂_k/∂x_i = r (δ_ki − 1/n) − r x̂_k x̂_i / n      with r = 1/√(σ² + eps)
    (∂μ/∂x_i = 1/n; ∂σ²/∂x_i = 2 (x_i − μ) / n, the −2Σ(x−μ)/n² term is 0; and
    ∂r/∂σ² = −r³/2). Summing ĝ_k over k:
        dL/dx_i = r · (ĝ_i − mean(ĝ) − x̂_i · mean(ĝ·x̂))
    — the same form as LayerNorm's, over (N, H, W) instead of the last axis.
    Eval mode: μ and σ² are constants, so dL/dx = ĝ · r.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        if training:
            count = N * H * W                                           # n values per channel
            if count < 2:
                raise ValueError(f"batch_norm in train mode needs more than one value per channel "
                                 f"(input {tuple(x.shape)}): use a larger batch or model.eval()")
            mean = x.mean(axis=(0, 2, 3))                               # μ: (C,)
            centred = x - mean.reshape(1, C, 1, 1)
            var = (centred * centred).mean(axis=(0, 2, 3))              # biased σ²: (C,)
            if running_mean is not None:                                # in place: the module's buffers
                running_mean *= 1 - momentum
                running_mean += momentum * mean.astype(running_mean.dtype)
                running_var *= 1 - momentum
                running_var += momentum * (var * (count / (count - 1))).astype(running_var.dtype)
        else:
            centred = x - running_mean.astype(x.dtype).reshape(1, C, 1, 1)
            var = running_var.astype(x.dtype)
        rstd = (1.0 / xp.sqrt(var + eps)).reshape(1, C, 1, 1)          # r
        x_hat = centred * rstd
        ctx.save_for_backward(x_hat, rstd, weight)
        ctx.training = training
        return x_hat * weight.reshape(1, C, 1, 1) + bias.reshape(1, C, 1, 1)

    @staticmethod
    def backward(ctx, grad):
        x_hat, rstd, weight = ctx.saved
        C = weight.shape[0]
        axes = (0, 2, 3)
        grad_weight = (grad * x_hat).sum(axis=axes)                     # Σ g·x̂
        grad_bias = grad.sum(axis=axes)                                 # Σ g
        g_hat = grad * weight.reshape(1, C, 1, 1)                       # ĝ = dL/dx̂
        if ctx.training:                                                # r (ĝ − mean ĝ − x̂ mean(ĝ x̂))
            grad_x = rstd * (g_hat - g_hat.mean(axis=axes, keepdims=True)
                             - x_hat * (g_hat * x_hat).mean(axis=axes, keepdims=True))
        else:
            grad_x = g_hat * rstd
        return grad_x, grad_weight, grad_bias


def batch_norm_composed(x, weight, bias, running_mean=None, running_var=None, training=True,
                        eps=1e-5):
    """BatchNorm2d from primitive ops (Tensors; running statistics arrays, not updated)."""
    C = x.shape[1]
    if training:
        centred = x - x.mean(axis=(0, 2, 3), keepdims=True)
        var = (centred * centred).mean(axis=(0, 2, 3), keepdims=True)
    else:
        centred = x - running_mean.reshape(1, C, 1, 1)
        var = running_var.reshape(1, C, 1, 1)
    x_hat = centred / (var + eps) ** 0.5
    return x_hat * weight.reshape(1, C, 1, 1) + bias.reshape(1, C, 1, 1)


class AvgPool2d(Function):
    """Mean over non-overlapping k×k blocks (kernel = stride = k, no padding, like
    OpenAI's AvgPool2d(k)).  x: (N, C, H, W) -> (N, C, H // k, W // k); a remainder
    row/column that does not fill a block is dropped, as in PyTorch."""

    @staticmethod
    def forward(ctx, x, kernel_size=2):
        k = kernel_size
        N, C, H, W = x.shape
        Ho, Wo = H // k, W // k
        if Ho < 1 or Wo < 1:
            raise ValueError(f"avg_pool2d: a {k}×{k} pool does not fit an input of {H}×{W}")
        ctx.x_shape, ctx.k = x.shape, k
        blocks = x[:, :, :Ho * k, :Wo * k].reshape(N, C, Ho, k, Wo, k)
        return blocks.mean(axis=(3, 5))

    @staticmethod
    def backward(ctx, grad):
        (N, C, H, W), k = ctx.x_shape, ctx.k
        xp = get_array_module(grad)
        _, _, Ho, Wo = grad.shape
        # each input pixel of a block gets 1/k² of that block's gradient
        share = xp.broadcast_to((grad / (k * k))[:, :, :, None, :, None], (N, C, Ho, k, Wo, k))
        block_grad = share.reshape(N, C, Ho * k, Wo * k)
        if (Ho * k, Wo * k) == (H, W):
            return xp.ascontiguousarray(block_grad)
        grad_x = xp.zeros((N, C, H, W), dtype=grad.dtype)               # dropped pixels: 0
        grad_x[:, :, :Ho * k, :Wo * k] = block_grad
        return grad_x


def avg_pool2d_composed(x, kernel_size=2):
    """AvgPool2d from primitive ops (x: a Tensor): a reshape into blocks and a mean."""
    k = kernel_size
    N, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    return x[:, :, :Ho * k, :Wo * k].reshape(N, C, Ho, k, Wo, k).mean(axis=(3, 5))
