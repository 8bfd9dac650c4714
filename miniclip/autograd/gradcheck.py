"""gradcheck: compare backward() with finite differences, in float64.

For inputs x₁..xₙ and a random fixed weighting v of the output,
L(x) = Σ v · fn(x). Backward gives dL/dxᵢ; central differences give
(L(x + eps·eᵢ) − L(x − eps·eᵢ)) / 2eps, one element at a time. They must
agree to |analytic − numeric| ≤ atol + rtol·|numeric| everywhere.
"""
import numpy as np

from miniclip.backend import get_array_module, to_numpy
from miniclip.autograd.tensor import no_grad


class GradcheckError(AssertionError):
    pass


def _weighted_sum(out, weights):
    return float(to_numpy((out.data * weights).sum()))


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-6, rtol=1e-5, seed=0):
    """True if fn's backward matches finite differences; else raises naming the worst element.

    fn: Tensors -> Tensor. inputs: Tensors; those with requires_grad are checked
    (they should be float64: float32 finite differences are too coarse).
    """
    for i, t in enumerate(inputs):
        if t.requires_grad and t.dtype != np.float64:
            raise TypeError(f"gradcheck input {i} is {t.dtype}: use float64 "
                            f"(finite differences in float32 are too coarse)")
    out = fn(*inputs)
    xp = get_array_module(out.data)
    weights = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))
    for t in inputs:
        t.grad = None
    out.backward(weights)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            continue
        analytic = to_numpy(t.grad) if t.grad is not None else np.zeros(t.shape)
        numeric = np.zeros(t.shape)
        with no_grad():
            for j in np.ndindex(t.shape):       # nudge one element at a time, in place
                original = t.data[j].item()
                t.data[j] = original + eps
                plus = _weighted_sum(fn(*inputs), weights)
                t.data[j] = original - eps
                minus = _weighted_sum(fn(*inputs), weights)
                t.data[j] = original
                numeric[j] = (plus - minus) / (2 * eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if (error > 0).any():
            worst = tuple(int(i) for i in np.unravel_index(np.argmax(error), t.shape))
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {t.shape}) at index {worst}: "
                f"backward gives {analytic[worst]:.10g}, finite differences "
                f"{numeric[worst]:.10g}")
    return True
