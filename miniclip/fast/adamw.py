"""The fast AdamW step: optim.AdamW's update on flat buffers, in blocks, on every core.

optim.AdamW.step asks the switch (autograd/switch.py) for "AdamW.step"; with the
fast tier on it gets `flat_adamw_step` below. The parameters are packed once
into one flat array (flat_params.py: each `param.data` becomes a view of it),
the gradients are copied into a second one, the moments m and v live in two
more, and the update runs group by group on those spans, one cache-sized
block at a time on the thread pool. Every element gets optim.AdamW.update_one's
arithmetic in its order, so the result is bit-for-bit the plain update
(tests/test_fast.py).
"""
import math

import numpy as np

from miniclip import backend
from miniclip.fast.flat_params import FlatParameters
from miniclip.fast.parallel import for_row_blocks


def flat_adamw_step(optimizer):
    """One AdamW update of every parameter on flat buffers; True when done.

    False (nothing done: the caller runs the per-parameter update) when some
    parameter has no gradient, or one of another dtype or shape, or when the
    parameters cannot share one flat array (FlatParameters.possible).
    If `param.data` was replaced since the last step, the parameters are packed again.
    """
    params = optimizer.all_params()
    if any(param.grad is None or param.grad.dtype != param.dtype or param.grad.shape != param.shape
           or backend.device_of(param.grad) != param.device for param in params):
        return False
    flat = optimizer.flat
    if flat is None or not flat.intact():
        if not FlatParameters.possible(params):
            return False
        flat = optimizer.flat = FlatParameters(params)
        xp = backend.get_array_module(flat.data)
        flat.moments = {}                       # kind -> (flat array, its per-parameter views)
        for kind in ("exp_avg", "exp_avg_sq"):
            array = xp.zeros_like(flat.data)
            flat.moments[kind] = array, [flat.view(array, i) for i in range(len(params))]
    flat.gather_grads()
    m_all, v_all = flat_moments(optimizer, flat)
    xp = backend.get_array_module(flat.data)
    t, first = optimizer.steps, 0
    for group in optimizer.param_groups:
        stop = first + len(group["params"])
        span = flat.span(first, stop)
        first = stop
        update = adamw_block(flat.data[span], flat.grad[span], m_all[span], v_all[span], group, t, xp)
        for_row_blocks(span.stop - span.start, update, span.stop - span.start, on_gpu=xp is not np)
    return True


def adamw_block(data, grad, exp_avg, exp_avg_sq, group, t, xp):
    """The function for_row_blocks runs: AdamW on rows `r` of one group's flat spans."""
    lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    bias2, step_size = math.sqrt(1 - beta2 ** t), lr / (1 - beta1 ** t)

    def block(r):
        pr, gr, mr, vr = data[r], grad[r], exp_avg[r], exp_avg_sq[r]
        if wd:
            pr *= 1 - lr * wd
        mr *= beta1
        mr += (1 - beta1) * gr
        vr *= beta2
        vr += (1 - beta2) * (gr * gr)
        denom = xp.sqrt(vr)
        denom /= bias2
        denom += eps
        pr -= step_size * mr / denom
    return block


def flat_moments(optimizer, flat):
    """The flat m and v of `flat`; optimizer.state's "exp_avg/i" entries become views of
    them (state restored by load_state_dict, or made by the per-parameter update, is
    copied in first)."""
    for kind, (array, views) in flat.moments.items():
        for i, view in enumerate(views):
            key = f"{kind}/{i}"
            current = optimizer.state.get(key)
            if current is not view:
                view[...] = 0 if current is None else current
                optimizer.state[key] = view
    return flat.moments["exp_avg"][0], flat.moments["exp_avg_sq"][0]

