"""Fast version of conv2d (miniclip/autograd/conv_ops.py) for the 1×1 case.

A 1×1 convolution with stride 1 and no padding (most of a Bottleneck) needs no
windows: each image is already its own cols matrix, x_n (C, H·W), and
out_n = W x_n is a matrix product per image, batched (one matmul call, no
copy, output already NCHW) — when the grid is large enough (H·W ≥ 64) for those
per-image products to be real GEMMs. Every other convolution runs the plain op.
Same math as the plain im2col, summed in another order: equal to rounding.
"""
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
