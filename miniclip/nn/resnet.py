"""OpenAI's ModifiedResNet image tower (clip/model.py), module for module.

    images (N, 3, R, R)
    -> stem: three 3×3 convs (stride 2, 1, 1), each + BatchNorm + ReLU, AvgPool2d(2)  (N, w, R/4, R/4)
    -> layer1..layer4: Bottlenecks, planes w, 2w, 4w, 8w (outputs ×4), layers 2-4 halve the grid
    -> AttentionPool2d over the (R/32)² positions                                     (N, E)

How it differs from the torchvision ResNet: three stem convolutions instead of
one 7×7, an average pool instead of a max pool, anti-aliased strided blocks
(no convolution has a stride > 1 after the stem: an AvgPool2d(stride) comes
before conv3 and before the shortcut's 1×1 convolution), and the final
global average pool replaced by one attention step whose only query is the
mean of all positions.
"""
import numpy as np

import miniclip.functional as F
from miniclip import backend
from miniclip.nn.conv import AvgPool2d, BatchNorm2d, Conv2d, Identity, ReLU, Sequential
from miniclip.nn.layers import NO_INIT, Linear
from miniclip.nn.module import Module, Parameter


class Bottleneck(Module):
    """x (N, inplanes, H, W) -> (N, 4·planes, H/stride, W/stride).

    out = relu(bn1(conv1 x)) [1×1] -> relu(bn2(conv2 ·)) [3×3] -> avgpool(stride) -> bn3(conv3 ·) [1×1]
    return relu(out + identity), identity = x or downsample(x) = bn(conv1×1(avgpool(x)))
    """
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, rng=None):
        super().__init__()
        self.conv1 = Conv2d(inplanes, planes, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(planes)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(planes)
        self.relu2 = ReLU()
        self.avgpool = AvgPool2d(stride) if stride > 1 else Identity()
        self.conv3 = Conv2d(planes, planes * self.expansion, 1, bias=False, rng=rng)
        self.bn3 = BatchNorm2d(planes * self.expansion)
        self.relu3 = ReLU()
        self.downsample = None
        self.stride = stride
        if stride > 1 or inplanes != planes * self.expansion:
            # the anti-aliased shortcut: average-pool, then a stride-1 1×1 convolution
            self.downsample = Sequential(
                ("-1", AvgPool2d(stride)),
                ("0", Conv2d(inplanes, planes * self.expansion, 1, bias=False, rng=rng)),
                ("1", BatchNorm2d(planes * self.expansion)))

    def forward(self, x):
        identity = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.avgpool(out)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu3(out + identity)


class AttentionPool2d(Module):
    """x (N, C, H, W) -> (N, output_dim): one attention step, the query the mean of all positions.

    tokens (N, HW, C) row-major; [mean; tokens] + positional_embedding (HW + 1, C);
    q from the mean token only, k and v from all HW + 1 tokens (separate projections),
    heads of C / heads, softmax(q kᵀ / √d) v, heads concatenated, then c_proj.
    """

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None, rng=None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        if embed_dim % num_heads:
            raise ValueError(f"attention-pool width {embed_dim} does not split into {num_heads} heads")
        self.num_heads = num_heads
        shape = (spacial_dim ** 2 + 1, embed_dim)
        if rng is NO_INIT:                                  # weights loaded next: no draw
            self.positional_embedding = Parameter(np.zeros(shape, dtype=np.float32))
        else:                                               # N(0, 1/C), as OpenAI
            self.positional_embedding = Parameter(
                rng.standard_normal(shape, dtype=np.float32) / np.float32(embed_dim ** 0.5))
        # OpenAI's order: k before q
        self.k_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.q_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.v_proj = Linear(embed_dim, embed_dim, rng=rng)
        self.c_proj = Linear(embed_dim, output_dim or embed_dim, rng=rng)

    def forward(self, x):
        N, C, H, W = x.shape
        T = H * W
        if self.positional_embedding.shape[0] != T + 1:
            side = round((self.positional_embedding.shape[0] - 1) ** 0.5)
            raise ValueError(f"the attention pool was made for a {side}×{side} grid, the input "
                             f"gives {H}×{W}: feed images of the model's image_resolution")
        tokens = x.reshape(N, C, T).transpose(0, 2, 1)                     # (N, HW, C), token h·W + w
        tokens = F.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)   # (N, HW + 1, C)
        tokens = tokens + self.positional_embedding
        Hh, D = self.num_heads, C // self.num_heads

        def heads(y, T_):                                                  # (N, T_, C) -> (N, H, T_, D)
            return y.reshape(N, T_, Hh, D).transpose(0, 2, 1, 3)

        q = heads(self.q_proj(tokens[:, :1]), 1)                           # the mean token asks
        k = heads(self.k_proj(tokens), T + 1)
        v = heads(self.v_proj(tokens), T + 1)
        out = F.scaled_dot_product_attention(q, k, v)                      # (N, H, 1, D)
        out = out.transpose(0, 2, 1, 3).reshape(N, C)                      # heads side by side
        return self.c_proj(out)                                            # (N, output_dim)


class ModifiedResNet(Module):
    """images (N, 3, R, R) -> features (N, output_dim); R a multiple of 32.

    layers: Bottlenecks per stage (4 numbers); width: the stem's output channels.
    """

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64, rng=None):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self.output_dim, self.input_resolution = output_dim, input_resolution
        # the 3-layer stem
        self.conv1 = Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(width // 2)
        self.relu1 = ReLU()
        self.conv2 = Conv2d(width // 2, width // 2, 3, padding=1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(width // 2)
        self.relu2 = ReLU()
        self.conv3 = Conv2d(width // 2, width, 3, padding=1, bias=False, rng=rng)
        self.bn3 = BatchNorm2d(width)
        self.relu3 = ReLU()
        self.avgpool = AvgPool2d(2)
        # residual stages
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0], 1, rng)
        self.layer2 = self._make_layer(width * 2, layers[1], 2, rng)
        self.layer3 = self._make_layer(width * 4, layers[2], 2, rng)
        self.layer4 = self._make_layer(width * 8, layers[3], 2, rng)
        embed_dim = width * 32                                   # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim, rng=rng)

    def _make_layer(self, planes, blocks, stride, rng):
        stage = [Bottleneck(self._inplanes, planes, stride, rng=rng)]
        self._inplanes = planes * Bottleneck.expansion
        stage += [Bottleneck(self._inplanes, planes, rng=rng) for _ in range(1, blocks)]
        return Sequential(*((str(i), block) for i, block in enumerate(stage)))

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)

    def initialize_parameters(self, rng):
        """OpenAI's CLIP.initialize_parameters for the ResNet tower: the attention pool's
        projections N(0, C^-1), each Bottleneck's bn3.weight 0 (a block starts as the identity)."""
        std = self.attnpool.c_proj.weight.shape[1] ** -0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            values = rng.standard_normal(proj.weight.shape, dtype=np.float32) * np.float32(std)
            proj.weight.data[...] = backend.to_device(values, proj.weight.device)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                block.bn3.weight.data[...] = 0
