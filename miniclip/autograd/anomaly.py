"""detect_anomaly(): find the first op whose forward or backward made NaN/Inf.

    with miniclip.autograd.detect_anomaly():
        loss = model(images, ids)
        loss.backward()        # raises FloatingPointError naming the op

Checking every array costs time, so it is off unless you ask for it.
"""
import contextlib

from miniclip.backend import get_array_module

_enabled = False


def enabled():
    return _enabled


@contextlib.contextmanager
def detect_anomaly():
    """Inside this block every op's output and every gradient is checked."""
    global _enabled
    previous, _enabled = _enabled, True
    try:
        yield
    finally:
        _enabled = previous


def _finite(array):
    xp = get_array_module(array)
    return bool(xp.isfinite(array).all())


def describe(i, tensor):
    """'input 1 (visual.ln_post.weight)': an input's position, and its name if it has one."""
    return f"input {i} ({tensor.name})" if tensor.name else f"input {i}"


def check_forward(op_name, out, inputs):
    """Raise if the forward of `op_name` produced NaN/Inf."""
    if _finite(out):
        return
    bad_inputs = [describe(i, t) for i, t in enumerate(inputs) if not _finite(t.data)]
    where = (f"its {', '.join(bad_inputs)} already held NaN/Inf" if bad_inputs
             else "all its inputs were finite, so this op made them")
    raise FloatingPointError(
        f"detect_anomaly: forward of {op_name} returned NaN/Inf "
        f"(output shape {tuple(out.shape)}); {where}")


def check_backward(op_name, grads, inputs):
    """Raise if the backward of `op_name` produced a NaN/Inf gradient for one of `inputs`."""
    for i, (grad, tensor) in enumerate(zip(grads, inputs)):
        if grad is not None and not _finite(grad):
            raise FloatingPointError(
                f"detect_anomaly: backward of {op_name} returned NaN/Inf "
                f"in the gradient of its {describe(i, tensor)} (shape {tuple(grad.shape)})")
