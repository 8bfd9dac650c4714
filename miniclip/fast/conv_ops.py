"""Fast versions of conv2d and batch_norm (miniclip/autograd/conv_ops.py).

Conv2d picks one of three lowerings, all the same math as the plain im2col
summed in another order (equal to rounding):

- pointwise: a 1×1 convolution with stride 1 and no padding (most of a
  Bottleneck) needs no windows: each image is already its own cols matrix,
  x_n (C, H·W), and out_n = W x_n is a matrix product per image, batched (one
  matmul call, no copy, output already NCHW) — when the grid is large enough
  (H·W ≥ 64) for those per-image products to be real GEMMs.
- channels-last: the padded input copied once to (N, Hp, Wp, C), so that each
  window row is kw·C contiguous numbers; the columns are rows (n, ho, wo) of
  (i, j, c), copied from a strided view in runs of kw·C, not the plain op's
  runs of Wo. Chosen for grids of at most 4×4 pixels with kw·C ≥ 2·Wo (the
  deep end of a ResNet), where it is up to twice as fast; col2im adds each
  kernel offset's gradient back as one strided slice of the channels-last
  gradient. (On 8×8 grids it gained ≤ 10 % and its larger temporaries raised
  the cifar-rn step's peak RSS by 8 MiB, through the allocator: left plain.)
- otherwise the plain op.

BatchNorm2d (train mode) sums per channel with BLAS and needs two sums in its
backward instead of four (see the class).
"""
from numpy.lib.stride_tricks import as_strided

from miniclip.backend import get_array_module
from miniclip.autograd import conv_ops


def padded_channels_last(x, padding):
    """x (N, C, H, W) -> a zero-padded channels-last copy (N, H + 2p, W + 2p, C), one pass;
    unpadded, a channels-last view (no copy: the columns are the one copy)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    if not padding:
        return x.transpose(0, 2, 3, 1)
    x_pad = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=x.dtype)
    x_pad[:, padding:padding + H, padding:padding + W, :] = x.transpose(0, 2, 3, 1)
    return x_pad


def windows_channels_last(x_pad, kh, kw, stride):
    """A strided view (N, Ho, Wo, kh, kw, C) of x_pad (N, Hp, Wp, C), no copy:
    view[n, ho, wo, i, j, c] = x_pad[n, ho·s + i, wo·s + j, c]."""
    xp = get_array_module(x_pad)
    N, Hp, Wp, C = x_pad.shape
    Ho, Wo = (Hp - kh) // stride + 1, (Wp - kw) // stride + 1
    sN, sH, sW, sC = x_pad.strides
    shape = (N, Ho, Wo, kh, kw, C)
    strides = (sN, sH * stride, sW * stride, sH, sW, sC)
    if xp.__name__ == "numpy":
        return as_strided(x_pad, shape=shape, strides=strides, writeable=False)
    return xp.lib.stride_tricks.as_strided(x_pad, shape=shape, strides=strides)


def lowering(x_shape, weight_shape, stride, padding):
    """"pointwise", "channels-last" or "plain": how Conv2d below computes this convolution."""
    N, C, H, W = x_shape
    O, C2, kh, kw = weight_shape
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    if C2 != C or Ho < 1 or Wo < 1:
        return "plain"                                      # the plain op says what is wrong
    if kh == kw == 1 and stride == 1 and not padding and H * W >= 64:
        return "pointwise"
    if H * W <= 16 and kw * C >= 2 * Wo:
        return "channels-last"
    return "plain"


class Conv2d(conv_ops.Conv2d):
    """conv_ops.Conv2d, pointwise as a batched matmul, deep small grids channels-last."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0):
        xp = get_array_module(x)
        N, C, H, W = x.shape
        O, _, kh, kw = weight.shape
        ctx.lowering = lowering(x.shape, weight.shape, stride, padding)
        ctx.has_bias = bias is not None
        if ctx.lowering == "plain":
            return conv_ops.Conv2d.forward(ctx, x, weight, bias, stride, padding)
        if ctx.lowering == "pointwise":
            ctx.save_for_backward(x, weight)
            out = weight.reshape(O, C) @ x.reshape(N, C, H * W)         # (N, O, H·W)
            if bias is not None:
                out += bias.reshape(1, O, 1)
            return out.reshape(N, O, H, W)
        windows = windows_channels_last(padded_channels_last(x, padding), kh, kw, stride)
        Ho, Wo = windows.shape[1:3]
        cols = windows.reshape(N * Ho * Wo, kh * kw * C)            # im2col: the one copy
        w2 = weight.transpose(0, 2, 3, 1).reshape(O, kh * kw * C)    # W[o, (i, j, c)]
        out = cols @ w2.T                                           # the GEMM: (N·Ho·Wo, O)
        if bias is not None:
            out += bias
        ctx.save_for_backward(cols, weight)          # the weight, not w2: no copy kept
        ctx.x_shape = x.shape
        ctx.stride, ctx.padding = stride, padding
        return xp.ascontiguousarray(out.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2))

    @staticmethod
    def backward(ctx, grad):
        if ctx.lowering == "plain":
            return conv_ops.Conv2d.backward(ctx, grad)
        xp = get_array_module(grad)
        if ctx.lowering == "pointwise":
            x, weight = ctx.saved
            N, C, H, W = x.shape
            O = weight.shape[0]
            g = grad.reshape(N, O, H * W)
            grad_x = (weight.reshape(O, C).T @ g).reshape(x.shape)         # dL/dx_n = Wᵀ g_n
            xs = x.reshape(N, C, H * W)
            grad_weight = (g @ xs.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)  # Σ_n g_n x_nᵀ
            grad_bias = g.sum(axis=(0, 2)) if ctx.has_bias else None
            return grad_x, grad_weight, grad_bias
        cols, weight = ctx.saved
        N, C, H, W = ctx.x_shape
        O, _, kh, kw = weight.shape
        stride, padding = ctx.stride, ctx.padding
        Ho, Wo = grad.shape[2:]
        g = xp.ascontiguousarray(grad.transpose(0, 2, 3, 1)).reshape(N * Ho * Wo, O)   # rows like cols
        grad_weight = xp.ascontiguousarray(                                 # dL/dW = gᵀ · cols
            (g.T @ cols).reshape(O, kh, kw, C).transpose(0, 3, 1, 2))
        grad_bias = g.sum(axis=0) if ctx.has_bias else None                 # dL/db = Σ g
        # dL/dcols = g · W, with W's own (c, i, j) order (no reordered copy of it)
        grad_cols = (g @ weight.reshape(O, C * kh * kw)).reshape(N, Ho, Wo, C, kh, kw)
        # col2im, channels-last: each kernel offset's gradient is one strided slice-add
        grad_pad = xp.zeros((N, H + 2 * padding, W + 2 * padding, C), dtype=grad.dtype)
        span_h, span_w = stride * (Ho - 1) + 1, stride * (Wo - 1) + 1
        for di in range(kh):
            for dj in range(kw):
                grad_pad[:, di:di + span_h:stride, dj:dj + span_w:stride, :] += grad_cols[..., di, dj]
        grad_x = xp.ascontiguousarray(
            grad_pad[:, padding:padding + H, padding:padding + W, :].transpose(0, 3, 1, 2))
        return grad_x, grad_weight, grad_bias


def channel_sums(a):
    """Σ over (N, H, W) of a (N, C, H, W) -> (C,): one matrix-vector product per image
    with (1, …, 1) (BLAS), then a sum over the N images. NumPy's own reduction over the
    axes (0, 2, 3) walks the array in short strided runs and is several times slower."""
    xp = get_array_module(a)
    N, C = a.shape[:2]
    return (a.reshape(N, C, -1) @ xp.ones(a[0, 0].size, dtype=a.dtype)).sum(axis=0)


class BatchNorm2d(conv_ops.BatchNorm2d):
    """conv_ops.BatchNorm2d in train mode with per-channel sums as BLAS products, the
    output and x̂ written in place, and a backward that needs two sums (Σ g and Σ g·x̂),
    not four: mean(ĝ) = weight · Σ g / n and mean(ĝ·x̂) = weight · Σ g·x̂ / n.
    Eval mode runs the plain op. Equal to the plain op to rounding (the sums' order)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5):
        N, C, H, W = x.shape
        count = N * H * W
        if not training or count < 2:
            return conv_ops.BatchNorm2d.forward(ctx, x, weight, bias, running_mean, running_var,
                                                training, momentum, eps)
        xp = get_array_module(x)
        mean = channel_sums(x) / count                                  # μ: (C,)
        x_hat = x - mean.reshape(1, C, 1, 1)                            # x − μ, x̂ below
        y = xp.multiply(x_hat, x_hat)                                   # (x − μ)², in y for now
        var = channel_sums(y) / count                                   # biased σ²
        if running_mean is not None:                                    # the plain op's update
            running_mean *= 1 - momentum
            running_mean += momentum * mean.astype(running_mean.dtype)
            running_var *= 1 - momentum
            running_var += momentum * (var * (count / (count - 1))).astype(running_var.dtype)
        rstd = (1.0 / xp.sqrt(var + eps)).reshape(1, C, 1, 1)          # r
        x_hat *= rstd                                                   # x̂
        xp.multiply(x_hat, weight.reshape(1, C, 1, 1), out=y)
        y += bias.reshape(1, C, 1, 1)                                   # y = x̂ · weight + bias
        ctx.save_for_backward(x_hat, rstd, weight)
        ctx.training = True
        return y

    @staticmethod
    def backward(ctx, grad):
        if not ctx.training:
            return conv_ops.BatchNorm2d.backward(ctx, grad)
        x_hat, rstd, weight = ctx.saved
        xp = get_array_module(grad)
        C = weight.shape[0]
        count = grad.size // C
        grad_bias = channel_sums(grad)                                  # Σ g
        g_x_hat = xp.multiply(grad, x_hat)
        grad_weight = channel_sums(g_x_hat)                             # Σ g·x̂
        mean_g_hat = (weight * grad_bias / count).reshape(1, C, 1, 1)             # mean(ĝ)
        mean_g_hat_x_hat = (weight * grad_weight / count).reshape(1, C, 1, 1)     # mean(ĝ·x̂)
        grad_x = xp.multiply(grad, weight.reshape(1, C, 1, 1))          # ĝ
        grad_x -= mean_g_hat
        xp.multiply(x_hat, mean_g_hat_x_hat, out=g_x_hat)
        grad_x -= g_x_hat
        grad_x *= rstd                          # r (ĝ − mean ĝ − x̂ mean(ĝ x̂))
        return grad_x, grad_weight, grad_bias
