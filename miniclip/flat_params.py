"""Flat parameter and gradient buffers: every Parameter a view into one array.

    flat = FlatParameters(params)      # params' values move into flat.data, in order
    params[1].data.base is flat.data   # True: a (shape)-view of flat.data[o1:o2]
    # backward writes params[i]'s gradient into flat.grad[o_i:o_i+1] (Tensor._grad_buffer)

A model has ~60 weight arrays of very different sizes. An optimiser written
per parameter (optim.py's AdamW) runs ~10 whole-array ops on each, one after
another, each a pass over memory. With the values, gradients and the
optimiser's moments each in one contiguous array, the update is the same ~10
ops on a few big arrays, cut into cache-sized blocks that run on all cores
(autograd/parallel.py): each element gets the very same arithmetic, so the
result is bit-for-bit the per-parameter one.

The views stay valid as long as nobody replaces `param.data` (Module.to,
astype) or `param.grad`; `intact()` checks that, and the optimiser falls back
to its per-parameter update when it is not.
"""
import numpy as np

from miniclip import backend


class FlatParameters:
    """Parameters packed in order into flat `data` and `grad` arrays (one dtype, one device)."""

    def __init__(self, params):
        xp = backend.get_array_module(params[0].data)
        dtype = params[0].data.dtype
        self.params = list(params)
        self.offsets = np.cumsum([0] + [p.size for p in self.params]).tolist()
        self.data = xp.empty(self.offsets[-1], dtype=dtype)
        self.grad = xp.zeros(self.offsets[-1], dtype=dtype)
        self.views, self.grad_views = [], []
        for i, param in enumerate(self.params):
            view = self.view(self.data, i)
            view[...] = param.data
            param.data = view
            param._grad_buffer = self.view(self.grad, i)
            if param.grad is not None:
                param._grad_buffer[...] = param.grad
                param.grad = param._grad_buffer
            self.views.append(view)
            self.grad_views.append(param._grad_buffer)

    @staticmethod
    def possible(params):
        """True when params can share flat arrays: one floating dtype, one device, no repeats."""
        if not params or len({id(p) for p in params}) != len(params):
            return False
        first = params[0].data
        return first.dtype.kind == "f" and all(
            p.data.dtype == first.dtype and p.device == params[0].device for p in params)

    def view(self, flat, i):
        """Parameter i's part of a flat array, in the parameter's shape."""
        return flat[self.offsets[i]:self.offsets[i + 1]].reshape(self.params[i].shape)

    def span(self, first, stop):
        """The slice of the flat arrays that holds parameters first .. stop-1."""
        return slice(self.offsets[first], self.offsets[stop])

    def intact(self):
        """True when every parameter still computes with its view and has its gradient there."""
        return all(p.data is v and p.grad is g
                   for p, v, g in zip(self.params, self.views, self.grad_views))
