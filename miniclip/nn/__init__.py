"""Neural-network building blocks: Module, Parameter and the layers CLIP is made of."""
from miniclip.nn.module import Module, ModuleList, Parameter
from miniclip.nn.layers import NO_INIT, GELU, Embedding, LayerNorm, Linear, PatchEmbedding, QuickGELU
from miniclip.nn.attention import MultiheadAttention
from miniclip.nn.transformer import MLP, ResidualAttentionBlock, Transformer

__all__ = ["Module", "ModuleList", "Parameter", "Linear", "LayerNorm", "Embedding",
           "QuickGELU", "GELU", "NO_INIT", "PatchEmbedding", "MultiheadAttention", "MLP",
           "ResidualAttentionBlock", "Transformer"]
