"""The transformer both CLIP towers use: pre-LayerNorm residual blocks.

    x = x + attn(ln_1(x))        every token looks at the others
    x = x + mlp(ln_2(x))         then each token is transformed on its own
"""
from miniclip.nn.attention import MultiheadAttention
from miniclip.nn.layers import GELU, LayerNorm, Linear, QuickGELU
from miniclip.nn.module import Module, ModuleList

ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": GELU}


class MLP(Module):
    """c_proj(act(c_fc(x))): W -> hidden (default 4W) -> W, applied to each token.

    activation: "quick_gelu" (OpenAI's CLIP) or "gelu" (exact, erf).
    """

    def __init__(self, width, rng=None, hidden=None, activation="quick_gelu"):
        super().__init__()
        hidden = 4 * width if hidden is None else hidden
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")
        self.c_fc = Linear(width, hidden, rng=rng)
        self.gelu = ACTIVATIONS[activation]()
        self.c_proj = Linear(hidden, width, rng=rng)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(Module):
    """x: (N, T, W) -> (N, T, W); mask: additive (T, T) or None."""

    def __init__(self, width, heads, rng=None, mlp_width=None, activation="quick_gelu", eps=1e-5):
        super().__init__()
        self.attn = MultiheadAttention(width, heads, rng=rng)
        self.ln_1 = LayerNorm(width, eps=eps)
        self.mlp = MLP(width, rng=rng, hidden=mlp_width, activation=activation)
        self.ln_2 = LayerNorm(width, eps=eps)

    def forward(self, x, mask=None):
        x = x + self.attn(self.ln_1(x), mask=mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(Module):
    """`layers` residual blocks of `width` with `heads` heads.  x: (N, T, W) -> (N, T, W)

    attn_mask: an additive (C, C) array used by every block (None: no mask); a
    sequence of T ≤ C tokens uses its top-left (T, T).
    mlp_width, activation, eps: each block's MLP hidden width (None: 4W), its
    activation, and the LayerNorm eps.
    """

    def __init__(self, width, layers, heads, attn_mask=None, rng=None, mlp_width=None,
                 activation="quick_gelu", eps=1e-5):
        super().__init__()
        self.width, self.layers, self.heads = width, layers, heads
        self.resblocks = ModuleList(
            ResidualAttentionBlock(width, heads, rng=rng, mlp_width=mlp_width, activation=activation, eps=eps)
            for _ in range(layers))
        self.register_buffer("attn_mask", attn_mask)

    def forward(self, x):
        T = x.shape[1]                 # T may be shorter than the mask: its top-left (T, T) applies
        mask = None if self.attn_mask is None else self.attn_mask[:T, :T]
        for block in self.resblocks:
            x = block(x, mask=mask)
        return x

    def extra_repr(self):
        return f"width={self.width}, layers={self.layers}, heads={self.heads}"
