"""Flat parameter and gradient buffers: every Parameter a view into one array.

    flat = FlatParameters(params)      # params' values move into flat.data, in order
    params[1].data.base is flat.data   # True: params[1].data is flat.data[o1:o2] in its shape
    flat.gather_grads()                # copy each params[i].grad into flat.grad[o_i:o_(i+1)]

where o_i = flat.offsets[i] = the sizes of params 0 .. i-1 added up.

A model has ~60 weight arrays of very different sizes. An optimiser written
per parameter (optim.py's AdamW) runs ~10 whole-array ops on each, one after
another, each a pass over memory. With the values, gradients and the
optimiser's moments each in one contiguous array, the update is the same ~10
ops on a few big arrays, cut into cache-sized blocks that run on all cores
(parallel.py): each element gets the very same arithmetic, so the result is
bit-for-bit the per-parameter one.

The views stay valid as long as nobody replaces `param.data` (Module.to,
astype, an assignment); `intact()` checks that, and the fast AdamW packs the
parameters again when it is not (adamw.py).
"""
import numpy as np

from miniclip import backend


class FlatParameters:
    """Parameters packed in order into flat `data` and `grad` arrays (one dtype, one device)."""

    def __init__(self, params):
        xp = backend.get_array_module(params[0].data)
        dtype = params[0].data.dtype
        self.params = list(params)
        self.offsets = np.cumsum([0] + [param.size for param in self.params]).tolist()
        self.data = xp.empty(self.offsets[-1], dtype=dtype)
        self.grad = xp.zeros(self.offsets[-1], dtype=dtype)
        self.views = []
        for i, param in enumerate(self.params):
            view = self.view(self.data, i)
            view[...] = param.data
            param.data = view
            self.views.append(view)

    @staticmethod
    def possible(params):
        """True when params can share flat arrays: one floating dtype, one device, no repeats."""
        if not params or len({id(param) for param in params}) != len(params):
            return False
        first = params[0].data
        return first.dtype.kind == "f" and all(
            param.data.dtype == first.dtype and param.device == params[0].device for param in params)

    def view(self, flat, i):
        """Parameter i's part of a flat array, in the parameter's shape."""
        return flat[self.offsets[i]:self.offsets[i + 1]].reshape(self.params[i].shape)

    def span(self, first, stop):
        """The slice of the flat arrays that holds parameters first .. stop-1."""
        return slice(self.offsets[first], self.offsets[stop])

    def intact(self):
        """True when every parameter still computes with its view of `data`."""
        return all(param.data is view for param, view in zip(self.params, self.views))

    def gather_grads(self):
        """Copy every parameter's gradient into its part of `grad`."""
        for i, param in enumerate(self.params):
            self.view(self.grad, i)[...] = param.grad
