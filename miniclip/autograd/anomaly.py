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


def check_forward(op_name, out, inputs):
    """Raise if the forward of `op_name` produced NaN/Inf."""
    if _finite(out):
        return
    bad_inputs = [i for i, t in enumerate(inputs) if not _finite(t.data)]
    where = (f"its input(s) {bad_inputs} already held NaN/Inf" if bad_inputs
             else "all its inputs were finite, so this op made them")
    raise FloatingPointError(
        f"detect_anomaly: forward of {op_name} returned NaN/Inf "
        f"(output shape {tuple(out.shape)}); {where}")


def check_backward(op_name, grads):
    """Raise if the backward of `op_name` produced a NaN/Inf gradient."""
    for i, g in enumerate(grads):
        if g is not None and not _finite(g):
            raise FloatingPointError(
                f"detect_anomaly: backward of {op_name} returned NaN/Inf "
                f"in the gradient of its input {i} (shape {tuple(g.shape)})")
