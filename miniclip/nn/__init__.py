"""Neural-network building blocks: Module, Parameter and the layers CLIP is made of."""
from miniclip.nn.module import Module, ModuleList, Parameter
from miniclip.nn.layers import NO_INIT, GELU, Embedding, LayerNorm, Linear, PatchEmbedding, QuickGELU
from miniclip.nn.attention import MultiheadAttention
from miniclip.nn.transformer import MLP, ResidualAttentionBlock, Transformer
from miniclip.nn.conv import AvgPool2d, BatchNorm2d, Conv2d, Identity, ReLU, Sequential
from miniclip.nn.resnet import AttentionPool2d, Bottleneck, ModifiedResNet

__all__ = ["Module", "ModuleList", "Parameter", "Linear", "LayerNorm", "Embedding",
           "QuickGELU", "GELU", "NO_INIT", "PatchEmbedding", "MultiheadAttention", "MLP",
           "ResidualAttentionBlock", "Transformer", "Conv2d", "BatchNorm2d",
           "AvgPool2d", "ReLU", "Identity", "Sequential", "Bottleneck", "AttentionPool2d",
           "ModifiedResNet"]
