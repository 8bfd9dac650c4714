"""The strict device: a TEST device, not a GPU. NumPy computes; CuPy's manners at the border.

    MINICLIP_DEVICE=strict python -m pytest -q      # the device tests, and a run, under it
    model.to("strict"); x = backend.to_device(images, "strict")

Why: CuPy refuses what NumPy silently allows, and almost every CuPy bug in a
NumPy codebase is one of these refusals. On a machine with no GPU the CuPy
path never runs, so those bugs hide. This module makes them visible on any
CPU: `strict.ndarray` wraps a NumPy array and behaves like `cupy.ndarray`
where a device array meets the host:

- `numpy.asarray(x)` (any implicit conversion to a host array) raises
  TypeError, CuPy's message word for word;
- a host array (numpy.ndarray, any shape) mixed into an operation on device
  arrays raises TypeError: `x + host`, `host * x`, `xp.where(c, x, host)`,
  `np.concatenate([x, host])`. Python numbers and NumPy scalars are fine, as
  in CuPy (they are passed as kernel arguments, no copy);
- NumPy functions and ufuncs called *on* device arrays dispatch to this
  module (NEP 13/18, as CuPy does): `np.exp(x)` is a device array;
- reductions and scalar indexing give 0-d device arrays, not host scalars;
- the only ways across are explicit: `asarray` / `array` (host -> device),
  `x.get()` / `asnumpy(x)` (device -> host), and reading a Python value
  with `float(x)`, `int(x)`, `bool(x)`, `x.item()`, `x.tolist()` (each one a
  synchronising read on a GPU).

Every crossing is counted (`counts`, `counting()`): uploads ('h2d', including
the implicit ones CuPy also performs: a host index array, a host value
assigned into a device array, a Python number made into a device array),
downloads ('d2h') and synchronising scalar reads ('sync'). Tests use the
counts to show the training loop's traffic per step is small and constant.

What it does not model: speed, memory, asynchrony, or CuPy's own gaps
(functions CuPy lacks still run here); dtype rules are NumPy's.
"""
import contextlib
import os
import sys
import types

import numpy as _np

IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. "
                       "Please use `.get()` to construct a NumPy array explicitly.")

counts = {"h2d": 0, "d2h": 0, "sync": 0}
_trace = None                    # a list of (kind, where) while counting(trace=True)
_HERE = os.path.abspath(__file__)


def _where():
    """'file:line in function' of the first caller outside this module."""
    frame = sys._getframe(2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) == _HERE:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def _count(kind):
    counts[kind] += 1
    if _trace is not None:
        _trace.append((kind, _where()))


class Transfers:
    """What crossed between host and strict device inside a `counting()` block."""

    def __init__(self):
        self.h2d = self.d2h = self.sync = 0
        self.log = []            # (kind, 'file:line in function'), when trace=True

    def total(self):
        return self.h2d + self.d2h + self.sync

    def __repr__(self):
        return f"Transfers(h2d={self.h2d}, d2h={self.d2h}, sync={self.sync})"


@contextlib.contextmanager
def counting(trace=False):
    """with counting() as t: ...  -> t.h2d, t.d2h, t.sync (and t.log of call sites if trace)."""
    global _trace
    before, result = dict(counts), Transfers()
    previous = _trace
    if trace:
        _trace = result.log
    try:
        yield result
    finally:
        _trace = previous
        result.h2d, result.d2h, result.sync = (counts[k] - before[k] for k in ("h2d", "d2h", "sync"))


# ---- crossing the boundary ---------------------------------------------------------

def _refuse(value):
    return TypeError(f"Unsupported type {type(value)}: a host array (numpy.ndarray) met a "
                     f"strict device array. Move it explicitly first: "
                     f"backend.to_device(array, device) (cupy.asarray on a GPU).")


def _from_host(value, dtype=None, copy=True):
    """An upload: host data (array, list, number) -> a strict array that owns its copy."""
    if isinstance(value, ndarray):
        out = value._a if dtype is None else value._a.astype(dtype, copy=False)
        return ndarray(out.copy() if copy and out is value._a else out)
    if isinstance(value, (list, tuple)) and any(isinstance(v, ndarray) for v in value):
        # cupy.array([device array, device array, ...]) stays on the device
        return ndarray(_np.array([_unwrap(v) for v in value], dtype=dtype))
    _count("h2d")
    return ndarray(_np.array(value, dtype=dtype, copy=True))


def asarray(a, dtype=None, order=None):
    """Host -> device (counted), or the device array itself."""
    return _from_host(a, dtype, copy=False)


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    """Host -> device (counted), or a device copy."""
    out = _from_host(a, dtype, copy=copy)
    return out if out.ndim >= ndmin else ndarray(_np.array(out._a, ndmin=ndmin, copy=False))


ascontiguousarray = asanyarray = asarray


def asnumpy(a):
    """Device -> host (counted); host values pass through, like cupy.asnumpy."""
    if isinstance(a, ndarray):
        return a.get()
    return _np.asarray(a)


def get_array_module(*args):
    """This module if any argument is a strict array, else numpy (like cupy.get_array_module)."""
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


def _unwrap(x):
    """Arguments of a device function: strict arrays unwrapped, host arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        raise _refuse(x)
    if isinstance(x, list):
        return [_unwrap(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_unwrap(v) for v in x)
    return x


def _unwrap_index(index):
    """An index: strict arrays unwrapped; host index arrays are uploaded (CuPy copies them)."""
    if isinstance(index, tuple):
        return tuple(_unwrap_index(i) for i in index)
    if isinstance(index, ndarray):
        return index._a
    if isinstance(index, _np.ndarray) or (isinstance(index, list) and index
                                          and not isinstance(index[0], (slice, type(None)))):
        _count("h2d")
    return index


def _wrap(result):
    """Results of a device function: arrays and scalars stay on the device."""
    if isinstance(result, _np.ndarray):
        return ndarray(result)
    if isinstance(result, _np.generic):
        return ndarray(_np.asarray(result))
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    if isinstance(result, (_np.random.Generator, _np.random.RandomState)):
        return _Namespace(result)
    return result


def _is_scalar(x):
    return isinstance(x, (int, float, complex, bool, _np.generic))


def _ufunc_operand(x):
    if isinstance(x, ndarray):
        return x._a
    if _is_scalar(x):
        return x
    if isinstance(x, _np.ndarray):
        raise _refuse(x)
    raise TypeError(f"Unsupported type {type(x)} for a strict device ufunc "
                    f"(CuPy takes device arrays and scalars only)")


def _apply_ufunc(ufunc, method, inputs, kwargs):
    kwargs = dict(kwargs)
    out = kwargs.get("out")
    if out is not None:
        out = out if isinstance(out, tuple) else (out,)
        kwargs["out"] = tuple(_ufunc_operand(o) for o in out)
    if isinstance(kwargs.get("where"), (ndarray, _np.ndarray)):
        kwargs["where"] = _ufunc_operand(kwargs["where"])
    if method == "at":
        a, index, *rest = inputs
        args = (_ufunc_operand(a), _unwrap_index(index), *(_ufunc_operand(r) for r in rest))
        getattr(ufunc, "at")(*args, **kwargs)
        return None
    result = getattr(ufunc, method)(*(_ufunc_operand(x) for x in inputs), **kwargs)
    if out is not None:
        return out[0] if len(out) == 1 else out
    return _wrap(result)


class _Ufunc:
    """A NumPy ufunc that takes strict arrays and refuses host arrays (like cupy.exp)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *inputs, **kwargs):
        return _apply_ufunc(self._ufunc, "__call__", inputs, kwargs)

    def at(self, a, indices, b=None):
        return _apply_ufunc(self._ufunc, "at", (a, indices) + (() if b is None else (b,)), {})

    def reduce(self, *inputs, **kwargs):
        return _apply_ufunc(self._ufunc, "reduce", inputs, kwargs)

    def accumulate(self, *inputs, **kwargs):
        return _apply_ufunc(self._ufunc, "accumulate", inputs, kwargs)

    def outer(self, *inputs, **kwargs):
        return _apply_ufunc(self._ufunc, "outer", inputs, kwargs)

    def __getattr__(self, name):                 # nin, nout, identity, ...
        return getattr(self._ufunc, name)

    def __repr__(self):
        return f"<strict ufunc {self.__name__!r}>"


def _device_function(fn):
    """A NumPy function made a device function: strict in, strict out, host arrays refused."""
    def device_fn(*args, **kwargs):
        args = tuple(_unwrap(a) for a in args)
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        return _wrap(fn(*args, **kwargs))
    device_fn.__name__ = getattr(fn, "__name__", "function")
    device_fn.__doc__ = getattr(fn, "__doc__", None)
    return device_fn


# host-only NumPy functions: not device functions (CuPy has none of these either)
_HOST_ONLY = {"save", "savez", "savez_compressed", "savetxt", "load", "loadtxt", "genfromtxt",
              "fromfile", "frombuffer", "array2string", "printoptions", "set_printoptions"}


# ndarray attributes that would read device memory from the host
_HOST_VIEWS = {"data", "ctypes", "flat", "tofile", "dump", "dumps"}


def _lookup(namespace, name):
    if name.startswith("__") or name in _HOST_ONLY:
        raise AttributeError(f"the strict device has no {name!r}")
    value = getattr(namespace, name)
    if isinstance(value, _np.ufunc):
        return _Ufunc(value)
    if isinstance(value, types.ModuleType):
        return _Namespace(value)
    if isinstance(value, type) or not callable(value):
        return value                      # dtypes (float32), classes (finfo), constants (pi)
    return _device_function(value)


class _Namespace:
    """strict.linalg, strict.random, a random Generator: every function a device function."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        value = _lookup(self._target, name)
        setattr(self, name, value)
        return value


def __getattr__(name):
    """Any other NumPy name: strict.zeros, strict.exp, strict.float32, strict.linalg ..."""
    value = _lookup(_np, name)
    globals()[name] = value
    return value


# ---- the array --------------------------------------------------------------------------

def _binary(ufunc, reflected=False):
    def op(self, other):
        if not (isinstance(other, (ndarray, _np.ndarray)) or _is_scalar(other)):
            return NotImplemented         # let the other type try (a Tensor, say)
        return _apply_ufunc(ufunc, "__call__", (other, self) if reflected else (self, other), {})
    return op


def _inplace(ufunc):
    def op(self, other):
        _apply_ufunc(ufunc, "__call__", (self, other), {"out": (self,)})
        return self
    return op


class ndarray:
    """A device array of the strict device. Make one with strict.asarray(host_array)."""

    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, array):
        if not isinstance(array, _np.ndarray):
            raise TypeError("strict.ndarray wraps a numpy.ndarray; use strict.asarray(data)")
        self._a = array

    # ---- what NumPy asks when it meets one ----------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        parts = func.__module__.split(".")[1:] if func.__module__ else []
        namespace = _np
        try:
            for part in parts:
                if part in ("core", "_core", "lib") or part.startswith("_"):
                    continue              # numpy.core.fromnumeric.sum -> numpy.sum
                namespace = getattr(namespace, part)
            device_fn = _lookup(namespace, func.__name__)
        except AttributeError:
            return NotImplemented
        return device_fn(*args, **kwargs)

    # ---- metadata: free, no transfer -------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def strides(self):
        return self._a.strides

    @property
    def T(self):
        return _wrap(self._a.T)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (_wrap(row) for row in self._a)

    # ---- leaving the device: explicit and counted ---------------------------------------------
    def get(self):
        """Device -> host: a NumPy copy (cupy.ndarray.get)."""
        _count("d2h")
        return self._a.copy()

    def set(self, host):
        """Host -> device, in place (cupy.ndarray.set)."""
        _count("h2d")
        self._a[...] = host

    def item(self):
        _count("sync")
        return self._a.item()

    def tolist(self):
        _count("sync")
        return self._a.tolist()

    def __float__(self):
        _count("sync")
        return float(self._a)

    def __int__(self):
        _count("sync")
        return int(self._a)

    def __index__(self):
        _count("sync")
        return self._a.__index__()

    def __complex__(self):
        _count("sync")
        return complex(self._a)

    def __bool__(self):
        _count("sync")
        return bool(self._a)

    def __format__(self, spec):
        _count("sync")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):                      # debugging output: not counted
        return "strict." + repr(self._a)

    def __str__(self):
        return str(self._a)

    def __reduce__(self):                    # pickling goes through the host, as in CuPy
        return asarray, (self.get(),)

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())

    def tobytes(self, order="C"):
        _count("d2h")
        return self._a.tobytes(order)

    # ---- indexing ------------------------------------------------------------------------------
    def __getitem__(self, index):
        return _wrap(self._a[_unwrap_index(index)])

    def __setitem__(self, index, value):
        if isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, (_np.ndarray, list)):
            _count("h2d")                   # CuPy copies a host value to the device
        elif not _is_scalar(value):
            raise TypeError(f"Unsupported type {type(value)} assigned into a strict device array")
        self._a[_unwrap_index(index)] = value

    # ---- every other method: computed on the device ---------------------------------------------
    def __getattr__(self, name):
        if name.startswith("__") or name == "_a":   # __array_interface__ & co.: no back doors
            raise AttributeError(name)
        if name in _HOST_VIEWS:
            raise AttributeError(f"strict device arrays have no host view {name!r}: "
                                 f"use .get() (backend.to_numpy) for a NumPy copy")
        value = getattr(self._a, name)
        return _device_function(value) if callable(value) else _wrap(value)

    # ---- operators: ufuncs ----------------------------------------------------------------------
    __add__, __radd__ = _binary(_np.add), _binary(_np.add, True)
    __sub__, __rsub__ = _binary(_np.subtract), _binary(_np.subtract, True)
    __mul__, __rmul__ = _binary(_np.multiply), _binary(_np.multiply, True)
    __truediv__, __rtruediv__ = _binary(_np.true_divide), _binary(_np.true_divide, True)
    __floordiv__, __rfloordiv__ = _binary(_np.floor_divide), _binary(_np.floor_divide, True)
    __mod__, __rmod__ = _binary(_np.remainder), _binary(_np.remainder, True)
    __pow__, __rpow__ = _binary(_np.power), _binary(_np.power, True)
    __matmul__, __rmatmul__ = _binary(_np.matmul), _binary(_np.matmul, True)
    __and__, __rand__ = _binary(_np.bitwise_and), _binary(_np.bitwise_and, True)
    __or__, __ror__ = _binary(_np.bitwise_or), _binary(_np.bitwise_or, True)
    __xor__, __rxor__ = _binary(_np.bitwise_xor), _binary(_np.bitwise_xor, True)
    __eq__, __ne__ = _binary(_np.equal), _binary(_np.not_equal)
    __lt__, __le__ = _binary(_np.less), _binary(_np.less_equal)
    __gt__, __ge__ = _binary(_np.greater), _binary(_np.greater_equal)
    __iadd__, __isub__ = _inplace(_np.add), _inplace(_np.subtract)
    __imul__, __itruediv__ = _inplace(_np.multiply), _inplace(_np.true_divide)
    __ipow__, __imatmul__ = _inplace(_np.power), _inplace(_np.matmul)
    __iand__, __ior__ = _inplace(_np.bitwise_and), _inplace(_np.bitwise_or)

    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(abs(self._a))

    def __invert__(self):
        return _wrap(~self._a)
