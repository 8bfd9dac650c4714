"""Fast versions of conv2d's 1×1 case and of batch_norm (miniclip/autograd/conv_ops.py).

A 1×1 convolution with stride 1 and no padding (most of a Bottleneck) needs no
windows: each image is already its own cols matrix, x_n (C, H·W), and
out_n = W x_n is a matrix product per image, batched (one matmul call, no
copy, output already NCHW) — when the grid is large enough (H·W ≥ 64) for those
per-image products to be real GEMMs. Every other convolution runs the plain op.
Same math as the plain im2col, summed in another order: equal to rounding.

BatchNorm2d (train mode) sums per channel with BLAS and needs two sums in its
backward instead of four (see the class).
"""
from miniclip.backend import get_array_module
from miniclip.autograd import conv_ops


class Conv2d(conv_ops.Conv2d):
    """conv_ops.Conv2d, with the pointwise case as a batched matmul."""

    @staticmethod
    def forward(ctx, x, weight, bias=None, stride=1, padding=0):
        N, C, H, W = x.shape
        O, C2, kh, kw = weight.shape
        ctx.pointwise = (kh == kw == 1 and C2 == C and stride == 1 and not padding
                         and H * W >= 64)
        if not ctx.pointwise:
            return conv_ops.Conv2d.forward(ctx, x, weight, bias, stride, padding)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = weight.reshape(O, C) @ x.reshape(N, C, H * W)         # (N, O, H·W)
        if bias is not None:
            out += bias.reshape(1, O, 1)
        return out.reshape(N, O, H, W)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.pointwise:
            return conv_ops.Conv2d.backward(ctx, grad)
        x, weight = ctx.saved
        N, C, H, W = x.shape
        O = weight.shape[0]
        g = grad.reshape(N, O, H * W)
        grad_x = (weight.reshape(O, C).T @ g).reshape(x.shape)         # dL/dx_n = Wᵀ g_n
        xs = x.reshape(N, C, H * W)
        grad_weight = (g @ xs.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)   # Σ_n g_n x_nᵀ
        grad_bias = g.sum(axis=(0, 2)) if ctx.has_bias else None
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
