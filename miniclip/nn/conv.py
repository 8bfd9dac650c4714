"""The convolutional layers: Conv2d, BatchNorm2d, AvgPool2d (plus Identity and Sequential).

Images are NCHW: x (N, C, H, W). The math lives in miniclip/autograd/conv_ops.py;
these modules hold the weights, under PyTorch's (and so OpenAI's) names.

BatchNorm2d is the one layer that behaves differently in `model.train()` and
`model.eval()`: in train mode it normalises with the statistics of the current
batch (and updates its running averages), in eval mode with those running
averages. Its buffers `running_mean`, `running_var` and `num_batches_tracked`
are part of `state_dict()`.
"""
import math

import numpy as np

import miniclip.functional as F
from miniclip.nn.layers import uniform
from miniclip.nn.module import Module, Parameter


class Conv2d(Module):
    """x (N, C, H, W) -> (N, O, Ho, Wo).  weight: (O, C, k, k); bias (O,) or None."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, rng=None):
        super().__init__()
        self.stride, self.padding = stride, padding
        bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)   # PyTorch's default init
        self.weight = Parameter(uniform(rng, bound, (out_channels, in_channels, kernel_size, kernel_size)))
        self.bias = Parameter(uniform(rng, bound, (out_channels,))) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        O, C, k, _ = self.weight.shape
        return f"{C} -> {O}, kernel={k}, stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"


class BatchNorm2d(Module):
    """Per-channel normalisation of x (N, C, H, W); train mode: batch statistics, eval: running ones.

    weight (C,) = 1, bias (C,) = 0; buffers running_mean (C,) = 0, running_var (C,) = 1,
    num_batches_tracked () int64 = 0 (counted, as in PyTorch; the update uses `momentum`).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype=np.float32))
        self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_mean", np.zeros(num_features, dtype=np.float32), persistent=True)
        self.register_buffer("running_var", np.ones(num_features, dtype=np.float32), persistent=True)
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64), persistent=True)

    def forward(self, x):
        if self.training:
            self.num_batches_tracked[...] += 1          # in place: the buffer's own array
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            training=self.training, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}, momentum={self.momentum}"


class AvgPool2d(Module):
    """Mean of each k×k block, stride k: x (N, C, H, W) -> (N, C, H // k, W // k). k = 1: identity."""

    def __init__(self, kernel_size):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x):
        return x if self.kernel_size == 1 else F.avg_pool2d(x, self.kernel_size)

    def extra_repr(self):
        return f"{self.kernel_size}"


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Identity(Module):
    def forward(self, x):
        return x


class Sequential(Module):
    """Modules applied in turn, named by the given names (OpenAI's downsample uses '-1', '0', '1')."""

    def __init__(self, *named_modules):
        super().__init__()
        for name, module in named_modules:
            setattr(self, name, module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)
