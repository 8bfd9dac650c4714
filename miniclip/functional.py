"""The ops as functions: `import miniclip.functional as F`.

Inputs may be Tensors or arrays. Each function is a thin call to one op
class; the math and its backward live in miniclip/autograd/ops.py
(primitives), miniclip/autograd/nn_ops.py (fused ops) and
miniclip/autograd/conv_ops.py (the ResNet tower's convolution, batch norm, pooling).

The fused ops are called as `op(nn_ops.LayerNorm).apply(...)`: `op` (autograd/switch.py)
returns the fast tier's version (miniclip/fast/) when that tier is on, else the plain
class itself. Under a debugger, or with MINICLIP_PLAIN=1, it is always the plain class.
"""
from miniclip.autograd import conv_ops, nn_ops, ops
from miniclip.autograd.switch import op
from miniclip.autograd.tensor import as_array, as_tensor

matmul = ops.matmul


def exp(x):
    return ops.Exp.apply(x)


def log(x):
    return ops.Log.apply(x)


def sqrt(x):
    return ops.Sqrt.apply(x)


def tanh(x):
    return ops.Tanh.apply(x)


def sigmoid(x):
    return ops.Sigmoid.apply(x)


def erf(x):
    """The error function, 2/√π ∫₀ˣ e^(−t²) dt, elementwise."""
    return ops.Erf.apply(x)


def log_sigmoid(x):
    """log σ(x), stable for any x (no overflow at |x| = 1000 in float32)."""
    return op(nn_ops.LogSigmoid).apply(x)


def relu(x):
    return ops.ReLU.apply(x)


def sum(x, axis=None, keepdims=False):  # noqa: A001 (NumPy's name)
    return ops.Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return ops.Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return ops.Max.apply(x, axis=axis, keepdims=keepdims)


def reshape(x, shape):
    return ops.Reshape.apply(x, shape=tuple(shape))


def transpose(x, axes=None):
    return ops.Transpose.apply(x, axes=axes)


def concatenate(tensors, axis=0):
    return ops.Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return ops.Stack.apply(*tensors, axis=axis)


def where(cond, a, b):
    """a where cond is True, else b. cond: a boolean array or Tensor (no gradient)."""
    a = as_tensor(a)
    return ops.Where.apply(a, b, cond=as_array(cond))


def softmax(x, axis=-1):
    return op(nn_ops.Softmax).apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return op(nn_ops.LogSoftmax).apply(x, axis=axis)


def logsumexp(x, axis=-1, keepdims=False):
    return op(nn_ops.LogSumExp).apply(x, axis=axis, keepdims=keepdims)


def layer_norm(x, weight, bias, eps=1e-5):
    """x: (..., D) normalised over D, then scaled by weight (D,) and shifted by bias (D,)."""
    return op(nn_ops.LayerNorm).apply(x, weight, bias, eps=eps)


def quick_gelu(x):
    return op(nn_ops.QuickGELU).apply(x)


def gelu(x):
    """The exact GELU, x · Φ(x) (erf form), as torch.nn.GELU()."""
    return op(nn_ops.GELU).apply(x)


def gelu_tanh(x):
    """GELU's tanh approximation (torch.nn.GELU(approximate="tanh"))."""
    return op(nn_ops.GELUTanh).apply(x)


def linear(x, weight, bias=None):
    """x: (..., in), weight: (out, in), bias: (out,) -> (..., out)"""
    if bias is None:
        return op(nn_ops.Linear).apply(x, weight)
    return op(nn_ops.Linear).apply(x, weight, bias)


def cross_entropy(logits, targets):
    """logits: (N, C); targets: (N,) class indices or (N, C) probabilities -> mean loss."""
    return op(nn_ops.CrossEntropy).apply(logits, targets=as_array(targets))


def scaled_dot_product_attention(q, k, v, mask=None):
    """q: (..., Tq, D), k: (..., Tk, D), v: (..., Tk, Dv); mask additive -> (..., Tq, Dv)"""
    return op(nn_ops.ScaledDotProductAttention).apply(q, k, v, mask=as_array(mask))


def embedding(ids, weight):
    """ids: (...) integers, weight: (V, D) -> (..., D)"""
    return op(nn_ops.Embedding).apply(weight, ids=as_array(ids))


def normalize(x, axis=-1, eps=1e-12):
    """x / ‖x‖ along axis (L2), with ‖x‖ floored at eps."""
    return op(nn_ops.Normalize).apply(x, axis=axis, eps=eps)


# ---- the ResNet image tower's ops (miniclip/autograd/conv_ops.py) ----------------------
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """x: (N, C, H, W), weight: (O, C, kh, kw), bias: (O,) -> (N, O, Ho, Wo), NCHW like PyTorch."""
    if bias is None:
        return op(conv_ops.Conv2d).apply(x, weight, stride=stride, padding=padding)
    return op(conv_ops.Conv2d).apply(x, weight, bias, stride=stride, padding=padding)


def batch_norm(x, weight, bias, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5):
    """x: (N, C, H, W) normalised per channel; training: batch statistics (and the running
    ones updated in place), else the running statistics. weight, bias, running_*: (C,)."""
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    return op(conv_ops.BatchNorm2d).apply(x, weight, bias, running_mean=as_array(running_mean),
                                      running_var=as_array(running_var), training=training,
                                      momentum=momentum, eps=eps)


def avg_pool2d(x, kernel_size):
    """x: (N, C, H, W) -> (N, C, H // k, W // k): the mean of each k×k block (stride k)."""
    return op(conv_ops.AvgPool2d).apply(x, kernel_size=kernel_size)
