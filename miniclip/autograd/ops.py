"""Primitive ops: elementwise math, reductions, shapes, indexing, matmul.

Each class is one op: `forward` computes with arrays, `backward` turns
dL/d(output) (`grad`) into dL/d(each input). Where broadcasting made an
input bigger, backward may return the big shape: the engine sums it back.
`xp` is numpy or cupy, whichever holds the data (see backend.py).
"""
import numpy as np

from miniclip.backend import get_array_module
from miniclip.autograd.erf import TWO_OVER_SQRT_PI, erf
from miniclip.autograd.function import Function

# ---- elementwise, two inputs ------------------------------------------------------


class Add(Function):
    @staticmethod
    def forward(ctx, x, y):
        return x + y

    @staticmethod
    def backward(ctx, grad):
        return grad, grad                      # d(x+y)/dx = d(x+y)/dy = 1


class Sub(Function):
    @staticmethod
    def forward(ctx, x, y):
        return x - y

    @staticmethod
    def backward(ctx, grad):
        return grad, -grad


class Mul(Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved
        return grad * y, grad * x              # d(xy)/dx = y, d(xy)/dy = x


class Div(Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x / y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved
        grad_x = grad / y                      # d(x/y)/dx = 1/y
        return grad_x, -grad_x * x / y         # d(x/y)/dy = -x/y²


# ---- elementwise, one input ---------------------------------------------------------


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    """x ** p for a constant exponent p."""

    @staticmethod
    def forward(ctx, x, exponent):
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return x ** exponent

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        power = ctx.exponent
        return grad * power * x ** (power - 1)  # d(x^p)/dx = p x^(p-1)


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y                        # d(e^x)/dx = e^x


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return get_array_module(x).log(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return grad / x                        # d(ln x)/dx = 1/x


class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad / (2 * y)                  # d(√x)/dx = 1/(2√x)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = get_array_module(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * (1 - y * y)              # d(tanh x)/dx = 1 - tanh²x


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        xp = get_array_module(x)
        y = 0.5 * (xp.tanh(0.5 * x) + 1)       # σ(x) = 1/(1+e^-x), overflow-free form
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y * (1 - y)              # dσ/dx = σ(1-σ)


class Erf(Function):
    """erf(x) = 2/√π ∫₀ˣ e^(−t²) dt (the exact GELU is built on it)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return erf(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        xp = get_array_module(x)
        return grad * TWO_OVER_SQRT_PI * xp.exp(-x * x)   # d erf/dx = 2/√π e^(−x²)


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x > 0)
        return x * (x > 0)

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved
        return grad * positive                 # 1 where x > 0, else 0


class Cast(Function):
    """Change dtype (float32 <-> float64); the gradient goes back in the input's dtype."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.input_dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.input_dtype)


# ---- reductions --------------------------------------------------------------------


def _expand_reduced(grad, shape, axis, keepdims):
    """Give `grad` of a reduction back the reduced axes (size 1) so it broadcasts to `shape`."""
    if keepdims:
        return grad
    if axis is None:                                   # a scalar: (1, 1, ..., 1)
        return grad.reshape((1,) * len(shape))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    xp = get_array_module(grad)
    return xp.expand_dims(grad, tuple(sorted(axis % len(shape) for axis in axes)))


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        grad = _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)
        return xp.broadcast_to(grad, ctx.shape)     # every summed element gets grad


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        y = x.mean(axis=axis, keepdims=keepdims)
        ctx.count = x.size // max(y.size, 1)
        return y

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        grad = _expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)
        return xp.broadcast_to(grad / ctx.count, ctx.shape)   # each element: 1/count


class Max(Function):
    """Largest value along `axis`; ties share the gradient equally (like torch.amax)."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axis, ctx.keepdims = axis, keepdims
        y = x.max(axis=axis, keepdims=True)
        ctx.save_for_backward(x == y)          # where the maximum sits
        return y if keepdims else y.reshape(x.max(axis=axis).shape)

    @staticmethod
    def backward(ctx, grad):
        (is_max,) = ctx.saved
        grad = _expand_reduced(grad, is_max.shape, ctx.axis, ctx.keepdims)
        count = is_max.sum(axis=ctx.axis, keepdims=True)
        return grad * is_max / count


# ---- shapes ------------------------------------------------------------------------


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.input_shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.input_shape)


class Transpose(Function):
    """Permute axes (all reversed when axes is None, like numpy.transpose)."""

    @staticmethod
    def forward(ctx, x, axes=None):
        xp = get_array_module(x)
        ctx.axes = None if axes is None else tuple(axis % x.ndim for axis in axes)
        return xp.transpose(x, ctx.axes)

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        if ctx.axes is None:
            return xp.transpose(grad)
        return xp.transpose(grad, tuple(np.argsort(ctx.axes).tolist()))  # inverse permutation


class GetItem(Function):
    """x[index] with slices or integer arrays; backward puts grad back where it came from."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return x[index]

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        grad_x = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_basic(ctx.index):
            grad_x[ctx.index] = grad           # slices pick each element at most once
        else:
            xp.add.at(grad_x, ctx.index, grad) # integer arrays may repeat: scatter-add
        return grad_x


def _is_basic(index):
    """True for indices of ints, slices, None and ... only (NumPy's basic indexing)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in parts)


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = get_array_module(arrays[0])
        ctx.axis = axis
        ctx.sizes = [array.shape[axis] for array in arrays]
        return xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        splits = np.cumsum(ctx.sizes[:-1]).tolist()
        return tuple(xp.split(grad, splits, axis=ctx.axis))   # each input gets its slice


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = get_array_module(arrays[0])
        ctx.axis = axis
        return xp.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        xp = get_array_module(grad)
        count = grad.shape[ctx.axis]
        return tuple(xp.take(grad, i, axis=ctx.axis) for i in range(count))


class Where(Function):
    """cond ? x : y elementwise; cond is a constant boolean array."""

    @staticmethod
    def forward(ctx, x, y, cond):
        xp = get_array_module(x)
        ctx.save_for_backward(cond)
        return xp.where(cond, x, y)

    @staticmethod
    def backward(ctx, grad):
        (cond,) = ctx.saved
        return grad * cond, grad * ~cond       # the gradient goes where the value came from


# ---- matrix product ---------------------------------------------------------------------


class MatMul(Function):
    """left @ right for left: (..., n, k), right: (..., k, m); leading axes broadcast."""

    @staticmethod
    def forward(ctx, left, right):
        ctx.save_for_backward(left, right)
        return left @ right

    @staticmethod
    def backward(ctx, grad):
        left, right = ctx.saved
        xp = get_array_module(grad)
        grad_left = grad @ xp.swapaxes(right, -1, -2)   # dL/dleft = dL/dy · rightᵀ
        grad_right = xp.swapaxes(left, -1, -2) @ grad   # dL/dright = leftᵀ · dL/dy
        return grad_left, grad_right


def matmul(left, right):
    """left @ right like numpy.matmul, 1-d operands included (made 2-d, then squeezed)."""
    from miniclip.autograd.tensor import as_tensor
    left, right = as_tensor(left), as_tensor(right, like=as_tensor(left))
    if left.ndim >= 2 and right.ndim >= 2:
        return MatMul.apply(left, right)
    left2 = left.reshape(1, -1) if left.ndim == 1 else left       # (k,) -> (1, k)
    right2 = right.reshape(-1, 1) if right.ndim == 1 else right   # (k,) -> (k, 1)
    y = MatMul.apply(left2, right2)
    shape = y.shape[:-2] + (y.shape[-2],) * (left.ndim != 1) + (y.shape[-1],) * (right.ndim != 1)
    return y.reshape(shape)
