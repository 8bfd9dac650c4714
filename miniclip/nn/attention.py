"""MultiheadAttention with OpenAI's (PyTorch's) packed weights.

One matrix `in_proj_weight` (3W, W) holds the query, key and value
projections stacked by rows: rows [0, W) make q, [W, 2W) make k, [2W, 3W)
make v. The heads are not separate weights: q, k and v are each split along
their last axis into H heads of D = W / H numbers, and all heads of all
sequences attend in one batched matmul.

q, k and v are three matmuls with row blocks of the packed weight rather
than one matmul cut in three afterwards: slicing a weight (W, W) costs
little in backward, slicing the big (N, T, 3W) activation would cost more.
"""
import math

import numpy as np

import miniclip.functional as F
from miniclip.nn.layers import Linear, uniform
from miniclip.nn.module import Module, Parameter


class MultiheadAttention(Module):
    """Self-attention: x (N, T, W) -> (N, T, W), batch first.

    mask: additive (T, T), e.g. −inf above the diagonal for a causal model.
    """

    def __init__(self, width, heads, rng=None):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} does not split into {heads} heads: "
                             f"choose heads that divide the width")
        self.width, self.heads = width, heads
        bound = math.sqrt(6 / (width + 3 * width))   # PyTorch's init: Xavier uniform
        self.in_proj_weight = Parameter(uniform(rng, bound, (3 * width, width)))
        self.in_proj_bias = Parameter(np.zeros(3 * width, dtype=np.float32))
        self.out_proj = Linear(width, width, rng=rng)
        self.out_proj.bias.data[...] = 0

    def forward(self, x, mask=None):
        N, T, W = x.shape
        H, D = self.heads, W // self.heads

        def heads(i):
            """Projection i (0: q, 1: k, 2: v) of x, split into heads: (N, H, T, D)."""
            rows = slice(i * W, (i + 1) * W)           # its block of rows in the packed weight
            y = F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows])   # (N, T, W)
            return y.reshape(N, T, H, D).transpose(0, 2, 1, 3)

        # softmax(q kᵀ / √D + mask) v for every sequence and head at once
        out = F.scaled_dot_product_attention(heads(0), heads(1), heads(2), mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(N, T, W)   # (N, H, T, D) -> heads side by side
        return self.out_proj(out)

    def extra_repr(self):
        return f"width={self.width}, heads={self.heads}"
