"""The fast AdamW step: optim.AdamW.update_one's arithmetic, in place, in blocks, on every core.

optim.AdamW.step asks the switch (autograd/switch.py) for "AdamW.step"; with the
fast tier on it gets `adamw_step` below. The plain update_one makes ~6 temporary
arrays of the parameter's size and passes over memory ~10 times; here each
parameter is cut into cache-sized blocks that run on the thread pool, and each
block runs the same ufuncs, in the same order, in place. Every element gets the
same roundings, so the result is bit-for-bit the plain update
(tests/test_fast.py), and both use the optimiser's own state arrays
(optimizer.state["exp_avg/i"], ...): the tiers can take turns, step by step.
"""
import math

import numpy as np

from miniclip import backend
from miniclip.fast.parallel import for_row_blocks


def adamw_step(optimizer):
    """One AdamW update of every parameter that has a gradient; True when done.

    False (nothing done: the caller runs the per-parameter update) when some
    gradient differs from its parameter in dtype, shape or device: the plain
    update is the one that defines what mixed dtypes and broadcasting do.
    """
    chosen = list(optimizer._groups_with_index())
    if any(param.grad.dtype != param.dtype or param.grad.shape != param.shape
           or backend.device_of(param.grad) != param.device for _, _, param in chosen):
        return False
    for group, i, param in chosen:
        xp = backend.get_array_module(param.data)
        data, grad = param.data.reshape(-1), param.grad.reshape(-1)     # views, written in place
        exp_avg = optimizer._buffer("exp_avg", i, param).reshape(-1)
        exp_avg_sq = optimizer._buffer("exp_avg_sq", i, param).reshape(-1)
        update = adamw_block(data, grad, exp_avg, exp_avg_sq, group, optimizer.steps, xp)
        for_row_blocks(len(data), update, len(data), on_gpu=xp is not np)
    return True


def adamw_block(data, grad, exp_avg, exp_avg_sq, group, t, xp):
    """The function for_row_blocks runs: AdamW on elements `r` of one parameter (flat views)."""
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
