"""The basic layers: Linear, LayerNorm, Embedding, QuickGELU, GELU, PatchEmbedding.

Parameters are float32 (call `model.astype(np.float64)` for float64) and
start from PyTorch's default initialisation, drawn from `rng` (a
np.random.Generator; None: a fresh, unseeded one). CLIP re-initialises some
of them its own way (see model.py). rng=NO_INIT allocates the parameters
without drawing them (zeros): for a model whose weights are loaded next.
"""
import math

import numpy as np

import miniclip.functional as F
from miniclip.nn.module import Module, Parameter


class NoInit:
    """Stands in for an rng when the values will be overwritten (a model built to load weights)."""

    def __repr__(self):
        return "NO_INIT"


NO_INIT = NoInit()


def uniform(rng, bound, shape):
    """A float32 array drawn from U(-bound, bound) (uninitialised for rng=NO_INIT)."""
    if rng is NO_INIT:
        return np.zeros(shape, dtype=np.float32)
    rng = np.random.default_rng() if rng is None else rng
    u = rng.random(shape, dtype=np.float32)            # U(0, 1)
    return (2 * u - 1) * np.float32(bound)


class Linear(Module):
    """y = x @ weightᵀ + bias.  x: (..., in) -> (..., out); weight: (out, in), bias: (out,)"""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)          # PyTorch's default: U(-1/√in, 1/√in)
        self.weight = Parameter(uniform(rng, bound, (out_features, in_features)))
        self.bias = Parameter(uniform(rng, bound, (out_features,))) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalise the last axis to mean 0, variance 1, then scale and shift.  x: (..., D)"""

    def __init__(self, width, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(width, dtype=np.float32))    # the gain
        self.bias = Parameter(np.zeros(width, dtype=np.float32))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Embedding(Module):
    """A lookup table: ids (...) ints -> weight[ids] (..., D).  weight: (V, D)"""

    def __init__(self, num_embeddings, dim, rng=None):
        super().__init__()
        if rng is NO_INIT:
            self.weight = Parameter(np.zeros((num_embeddings, dim), dtype=np.float32))
            return
        rng = np.random.default_rng() if rng is None else rng
        self.weight = Parameter(rng.standard_normal((num_embeddings, dim), dtype=np.float32))   # N(0, 1)

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class QuickGELU(Module):
    """x · σ(1.702 x): the activation OpenAI's CLIP was trained with."""

    def forward(self, x):
        return F.quick_gelu(x)


class GELU(Module):
    """x · Φ(x) = ½ x (1 + erf(x/√2)): the exact GELU (torch.nn.GELU())."""

    def forward(self, x):
        return F.gelu(x)


class PatchEmbedding(Module):
    """Cut images into P×P patches and map each to a W-vector (OpenAI's `conv1`).

    It is a Conv2d(C, W, kernel P, stride P, no bias), computed as one matmul
    on flattened patches: a patch is flattened in (channel, row, column)
    order, the order of `weight` (W, C, P, P) flattened to (W, C·P·P).

    images: (N, C, R, R) -> (N, G·G, W) with G = R / P, patches in row-major grid order.
    """

    def __init__(self, patch_size, width, in_channels=3, rng=None):
        super().__init__()
        self.patch_size = patch_size
        fan_in = in_channels * patch_size * patch_size
        bound = 1 / math.sqrt(fan_in)               # PyTorch's default Conv2d init
        self.weight = Parameter(uniform(rng, bound, (width, in_channels, patch_size, patch_size)))

    def forward(self, images):
        N, C, R, R2 = images.shape
        P = self.patch_size
        if R % P or R2 % P:
            raise ValueError(f"images of {R}×{R2} pixels do not split into {P}×{P} patches: "
                             f"resize them to a multiple of {P} (the model's image_resolution)")
        G, G2 = R // P, R2 // P
        # (N, C, G, P, G, P): pixel (c, gy·P + py, gx·P + px) -> (N, gy, gx, c, py, px)
        patches = images.reshape(N, C, G, P, G2, P).transpose(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(N, G * G2, C * P * P)
        W = self.weight.shape[0]
        return F.linear(patches, self.weight.reshape(W, C * P * P))   # (N, G·G, W)

    def extra_repr(self):
        W, C, P, _ = self.weight.shape
        return f"{C} -> {W}, patch={P}"
