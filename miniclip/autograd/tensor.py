"""Tensor: an array that remembers the op that made it, and backward().

    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()         # y.grad_fn is <Sum>, whose input was made by <Mul>
    y.backward()              # x.grad == 2 * x.data

`.data` is a NumPy (or CuPy) array; `.grad` is an array of the same shape,
filled by backward() for leaf tensors that require grad.
"""
import contextlib

import numpy as np

from miniclip import backend

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Build no graph inside this block (evaluation, optimiser updates).

    Works as `with no_grad():` and as a decorator `@no_grad()`.
    """
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def _as_array(data, dtype=None):
    """An ndarray from data; Python floats and lists become float32 (torch's default)."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.get_array_module(data)
    if isinstance(data, (np.ndarray, np.generic)) or xp is not np:
        return data if dtype is None else data.astype(dtype, copy=False)
    array = np.asarray(data)
    if dtype is None and array.dtype == np.float64:
        dtype = np.float32
    return array if dtype is None else array.astype(dtype)


class Tensor:
    """An n-d array plus what autograd needs: requires_grad, grad, grad_fn."""

    def __init__(self, data, requires_grad=False, name=None, dtype=None, grad_fn=None):
        self.data = _as_array(data, dtype)
        self.requires_grad = requires_grad
        self.grad = None          # filled by backward() for leaves
        self.grad_fn = grad_fn    # the Function node that made this tensor (None: a leaf)
        self.name = name
        self._hooks = []

    # ---- what it is -------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        parts = [f"shape={self.shape}", f"dtype={self.dtype}", f"device={self.device}"]
        if self.grad_fn is not None:
            parts.append(f"grad_fn={self.grad_fn!r}")
        elif self.requires_grad:
            parts.append("requires_grad=True")
        if self.name:
            parts.insert(0, f"name={self.name!r}")
        values = ""
        if self.data.size <= 16:
            values = np.array2string(backend.to_numpy(self.data), separator=", ",
                                     precision=4) + ", "
        return f"Tensor({values}{', '.join(parts)})"

    # ---- leaving autograd ---------------------------------------------------
    def numpy(self):
        """The values as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """A copy on 'cpu' or 'cuda' (a leaf: the graph does not cross devices)."""
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad)

    def astype(self, dtype):
        return ops.Cast.apply(self, dtype=np.dtype(dtype))

    def zero_grad(self):
        self.grad = None

    # ---- the backward pass ----------------------------------------------------
    def register_hook(self, fn):
        """fn(grad) -> new grad or None, called when this tensor's gradient is known.

        A new grad must be an array of grad's shape and dtype (else backward raises,
        naming the hook)."""
        self._hooks.append(fn)
        return fn

    def backward(self, grad=None, retain_graph=False):
        """Fill `.grad` of every leaf this tensor depends on.

        grad: dL/d(self); may be omitted when self holds a single value (then 1).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: "
                               "no input had requires_grad=True (or it ran under no_grad)")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without grad needs a single value, "
                                   f"got shape {self.shape}: pass grad= or call .sum() first")
            grad = xp.ones_like(self.data)
        grad = _as_array(grad, self.dtype)
        if grad.shape != self.data.shape:
            raise ValueError(f"grad has shape {grad.shape}, tensor has {self.shape}")

        grads = {id(self): grad}                   # tensor id -> dL/d(tensor) so far
        for tensor in _reverse_topological_order(self):
            g = grads.pop(id(tensor), None)
            if g is None:                          # no gradient flowed here
                continue
            for hook in tensor._hooks:
                g = _run_hook(hook, tensor, g)
            if tensor.grad_fn is None:             # a leaf: accumulate into .grad
                # a copy the leaf owns (backward may hand one array to several inputs)
                tensor.grad = xp.array(g) if tensor.grad is None else tensor.grad + g
                continue
            ctx = tensor.grad_fn
            if ctx.freed:
                raise RuntimeError("backward through a graph a second time: its saved "
                                   "arrays were freed; use backward(retain_graph=True) "
                                   "the first time")
            input_grads = type(ctx).backward(ctx, g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if anomaly.enabled():
                anomaly.check_backward(type(ctx).__name__, input_grads, ctx.inputs)
            for parent, pg in zip(ctx.inputs, input_grads):
                if pg is None or not parent.requires_grad:
                    continue
                pg = unbroadcast(pg, parent.shape)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                ctx.saved, ctx.freed = (), True

    # ---- operators (each is a Function in ops.py) ------------------------------
    def __add__(self, other):
        return ops.Add.apply(self, other)

    def __radd__(self, other):
        return ops.Add.apply(other, self)

    def __sub__(self, other):
        return ops.Sub.apply(self, other)

    def __rsub__(self, other):
        return ops.Sub.apply(other, self)

    def __mul__(self, other):
        return ops.Mul.apply(self, other)

    def __rmul__(self, other):
        return ops.Mul.apply(other, self)

    def __truediv__(self, other):
        return ops.Div.apply(self, other)

    def __rtruediv__(self, other):
        return ops.Div.apply(other, self)

    def __neg__(self):
        return ops.Neg.apply(self)

    def __pow__(self, exponent):
        return ops.Pow.apply(self, exponent=exponent)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __getitem__(self, index):
        return ops.GetItem.apply(self, index=_unwrap_index(index))

    # comparisons give boolean tensors outside the graph (masks for where())
    def __lt__(self, other):
        return Tensor(self.data < as_array(other))

    def __le__(self, other):
        return Tensor(self.data <= as_array(other))

    def __gt__(self, other):
        return Tensor(self.data > as_array(other))

    def __ge__(self, other):
        return Tensor(self.data >= as_array(other))

    # ---- methods, NumPy names ---------------------------------------------------
    def sum(self, axis=None, keepdims=False):
        return ops.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.Mean.apply(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.Max.apply(self, axis=axis, keepdims=keepdims)

    def exp(self):
        return ops.Exp.apply(self)

    def log(self):
        return ops.Log.apply(self)

    def sqrt(self):
        return ops.Sqrt.apply(self)

    def tanh(self):
        return ops.Tanh.apply(self)

    def sigmoid(self):
        return ops.Sigmoid.apply(self)

    def relu(self):
        return ops.ReLU.apply(self)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.Transpose.apply(self, axes=axes or None)

    @property
    def T(self):
        return ops.Transpose.apply(self, axes=None)

    def argmax(self, axis=None):
        """Indices of the largest values (an integer array: no gradient)."""
        return self.data.argmax(axis=axis)


def as_array(x):
    """The array inside a Tensor, or `x` itself (an ndarray, a number): the one unwrap."""
    return x.data if isinstance(x, Tensor) else x


def _unwrap_index(index):
    """Tensors used as indices become their integer arrays."""
    if isinstance(index, tuple):
        return tuple(as_array(i) for i in index)
    return as_array(index)


def as_tensor(x, like=None):
    """x as a Tensor; numbers take the dtype of `like` so float32 stays float32."""
    if isinstance(x, Tensor):
        return x
    if like is not None and not hasattr(x, "shape"):
        # a NumPy scalar of like's dtype: on a GPU a kernel argument, not an upload per op
        return Tensor(like.dtype.type(x))
    return Tensor(x)


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    grad: (2, 3, 4) and shape (3, 1) -> sum over axis 0 (added), then axis 2 (was 1).
    """
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _run_hook(hook, tensor, grad):
    """hook(grad), checked: None keeps grad; an array must have grad's shape, dtype and device."""
    new_grad = hook(grad)
    if new_grad is None:
        return grad
    xp = backend.get_array_module(grad)
    same = (backend.get_array_module(new_grad) is xp and hasattr(new_grad, "shape")
            and new_grad.shape == grad.shape and new_grad.dtype == grad.dtype)
    if not same:
        got = (f"{type(new_grad).__name__} of shape {getattr(new_grad, 'shape', '?')}, "
               f"dtype {getattr(new_grad, 'dtype', '?')}")
        who = f"tensor {tensor.name!r}" if tensor.name else f"a tensor of shape {tensor.shape}"
        raise ValueError(f"hook {getattr(hook, '__qualname__', hook)!r} on {who} returned a {got}; "
                         f"it must return None or a {xp.__name__} array of shape {grad.shape}, "
                         f"dtype {grad.dtype} (the gradient it was given)")
    return new_grad


def _reverse_topological_order(root):
    """Tensors from `root` back to the leaves, each after every tensor that uses it.

    An iterative depth-first search (no recursion, so a 10,000-op chain works):
    a tensor is appended once all of its parents are done; reversing that
    post-order puts every consumer before the tensors it consumed.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, parents_done = stack.pop()
        if parents_done:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor.grad_fn is not None:
            for parent in tensor.grad_fn.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return reversed(order)


from miniclip.autograd import anomaly, ops  # noqa: E402  (ops need Tensor defined first)
