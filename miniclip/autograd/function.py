"""Function: the base class of every differentiable op.

An op is a subclass with two static methods, side by side:

    class Mul(Function):
        @staticmethod
        def forward(ctx, x, y):          # arrays in, array out
            ctx.save_for_backward(x, y)
            return x * y

        @staticmethod
        def backward(ctx, grad):         # dL/d(out) in, dL/d(inputs) out
            x, y = ctx.saved
            return grad * y, grad * x

`Mul.apply(a, b)` unwraps the Tensors, runs `forward` on their arrays and
wraps the result in a Tensor whose `grad_fn` is `ctx`: the object that
remembers the inputs and whatever `forward` saved. During `loss.backward()`
the engine (tensor.py) calls `backward(ctx, grad)` on each such node.

Conventions:
- Positional arguments of `apply` are the differentiable inputs (Tensors,
  arrays or Python numbers); keyword arguments are constants (axis, eps,
  integer targets, masks) and receive no gradient.
- `backward` returns one gradient per positional input (a tuple, or a single
  array for a one-input op); None means "no gradient for this input".
  Gradients may have the broadcast shape of the output: the engine sums
  them back to each input's shape (see `unbroadcast`).
"""
from miniclip.autograd import anomaly
from miniclip.autograd.tensor import Tensor, as_tensor, is_grad_enabled


class Function:
    """Base class of ops. An instance is the `ctx` of one call: a graph node."""

    inputs = ()      # the input Tensors (parents in the graph), set by apply
    saved = ()       # arrays kept by forward for backward
    freed = False    # True once backward released `saved`

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @staticmethod
    def forward(ctx, *arrays, **constants):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **constants):
        """Run the op on Tensors (or arrays / numbers) and record it in the graph."""
        tensors = [x if isinstance(x, Tensor) else as_tensor(x, first_tensor(inputs)) for x in inputs]
        ctx = cls()
        out = cls.forward(ctx, *[t.data for t in tensors], **constants)
        if anomaly.enabled():
            anomaly.check_forward(cls.__name__, out, tensors)
        needs_grad = is_grad_enabled() and any(t.requires_grad for t in tensors)
        if not needs_grad:
            return Tensor(out)
        ctx.inputs = tuple(tensors)
        return Tensor(out, requires_grad=True, grad_fn=ctx)

    def __repr__(self):
        return f"<{type(self).__name__}>"


def first_tensor(inputs):
    """The first Tensor among `inputs` (numbers take its dtype), or None."""
    return next((x for x in inputs if isinstance(x, Tensor)), None)
