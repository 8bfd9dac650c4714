"""The transformer both CLIP towers use: pre-LayerNorm residual blocks.

    x = x + attn(ln_1(x))        every token looks at the others
    x = x + mlp(ln_2(x))         then each token is transformed on its own
"""
from miniclip.nn.attention import MultiheadAttention
from miniclip.nn.layers import LayerNorm, Linear, QuickGELU
from miniclip.nn.module import Module, ModuleList


class MLP(Module):
    """c_proj(QuickGELU(c_fc(x))): W -> 4W -> W, applied to each token."""

    def __init__(self, width, rng=None):
        super().__init__()
        self.c_fc = Linear(width, 4 * width, rng=rng)
        self.gelu = QuickGELU()
        self.c_proj = Linear(4 * width, width, rng=rng)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(Module):
    """x: (N, T, W) -> (N, T, W); mask: additive (T, T) or None."""

    def __init__(self, width, heads, rng=None):
        super().__init__()
        self.attn = MultiheadAttention(width, heads, rng=rng)
        self.ln_1 = LayerNorm(width)
        self.mlp = MLP(width, rng=rng)
        self.ln_2 = LayerNorm(width)

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask=mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(Module):
    """`layers` residual blocks of `width` with `heads` heads.  x: (N, T, W) -> (N, T, W)

    attn_mask: an additive (T, T) array used by every block (None: no mask).
    """

    def __init__(self, width, layers, heads, attn_mask=None, rng=None):
        super().__init__()
        self.width, self.layers, self.heads = width, layers, heads
        self.resblocks = ModuleList(ResidualAttentionBlock(width, heads, rng=rng) for _ in range(layers))
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x):
        for block in self.resblocks:
            x = block(x, mask=self.attn_mask)
        return x

    def extra_repr(self):
        return f"width={self.width}, layers={self.layers}, heads={self.heads}"
