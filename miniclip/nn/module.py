"""Module and Parameter: the containers that hold a model's weights.

    class MLP(Module):
        def __init__(self):
            super().__init__()
            self.c_fc = Linear(4, 16)        # a sub-Module: its parameters become "c_fc.weight", ...
            self.scale = Parameter(np.ones(16, dtype=np.float32))

        def forward(self, x):
            return self.c_fc(x) * self.scale

A Module finds its parameters by watching attribute assignment: setting an
attribute to a Parameter or to a Module records its name. The names are
dotted paths, and the order is PyTorch's: a module's own parameters first (in
the order they were assigned), then each sub-module's (in the order they were
assigned). That makes a miniclip CLIP's `named_parameters()` produce exactly
the keys and order of OpenAI's state dict.

Parameters also carry their names, for debugging (print_graph, Tensor repr,
detect_anomaly's messages): assigning a Parameter sets its `.name` to the
attribute name, and assigning a Module prefixes the names of all the
parameters below it, so once a model is built each parameter's name is its
dotted path, `visual.transformer.resblocks.0.ln_1.weight`.

Buffers (`register_buffer`) are arrays a module computes with but does not
train, such as the causal attention mask; `to()` and `astype()` move and cast
them along with the parameters. A persistent buffer (`persistent=True`, e.g.
BatchNorm's running statistics) is also part of `state_dict()`, right after
its module's own parameters, as in PyTorch.
"""
import numpy as np

from miniclip import backend
from miniclip.autograd.tensor import Tensor, as_array


class Parameter(Tensor):
    """A Tensor that is a weight of a Module: requires_grad is always True."""

    def __init__(self, data, dtype=None, name=None):
        super().__init__(data, requires_grad=True, name=name, dtype=dtype)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of layers and models: subclasses set attributes in __init__ and define forward()."""

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist already
        object.__setattr__(self, "_parameters", {})   # name -> Parameter (own, not sub-modules')
        object.__setattr__(self, "_modules", {})      # name -> Module
        object.__setattr__(self, "_buffers", {})      # name -> array (not trained)
        object.__setattr__(self, "_persistent", set())  # names of buffers that state_dict() saves
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot set {name!r} before Module.__init__(): call "
                                 f"super().__init__() first in {type(self).__name__}.__init__")
        if isinstance(value, Parameter):
            registry = self._parameters
        elif isinstance(value, Module):
            registry = self._modules
        elif name in self._buffers:
            registry = self._buffers                # a buffer stays a buffer when reassigned
        else:
            registry = None                         # a plain attribute (a number, None, ...)
        for other in (self._parameters, self._modules, self._buffers):
            if other is not registry:
                other.pop(name, None)               # e.g. a parameter set to None is no longer one
        if registry is not None:
            registry[name] = value                  # replacing keeps the name's place in the order
        if isinstance(value, Parameter):
            value.name = name
        elif isinstance(value, Module):             # the path grows as modules are nested
            for path, param in value.named_parameters():
                param.name = f"{name}.{path}"
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array, persistent=False):
        """Keep `array` as self.<name>: moved by to(), cast by astype(), not a parameter;
        saved in state_dict() (and loaded back) only if persistent."""
        self._buffers[name] = array
        if persistent:
            self._persistent.add(name)
        setattr(self, name, array)

    def named_buffers(self, persistent_only=True):
        """(dotted name, array) of the buffers (the persistent ones by default)."""
        for prefix, module in self.named_modules():
            for name, array in module._buffers.items():
                if array is not None and (name in module._persistent or not persistent_only):
                    yield prefix + name, array

    # ---- running ------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def train(self, mode=True):
        """Training mode (the default); returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        """Evaluation mode; returns self."""
        return self.train(False)

    # ---- walking the tree ---------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(dotted name, module) for self ('') and every sub-module, depth first."""
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}{name}.")

    def modules(self):
        return [module for _, module in self.named_modules()]

    def named_parameters(self):
        """(dotted name, Parameter) pairs: own parameters first, then each sub-module's."""
        for prefix, module in self.named_modules():
            for name, param in module._parameters.items():
                yield prefix + name, param

    def parameters(self):
        return [param for _, param in self.named_parameters()]

    def num_parameters(self):
        """How many numbers the model learns."""
        return sum(param.size for param in self.parameters())

    def zero_grad(self):
        """Forget every parameter's gradient (backward() adds to .grad)."""
        for param in self.parameters():
            param.grad = None

    # ---- saving and loading -------------------------------------------------------------
    def state_dict(self):
        """{dotted name: NumPy array}: the parameters and persistent buffers, module by module
        (own parameters, then own buffers, then each sub-module's; PyTorch's order).
        Copies on the host, so later training leaves them unchanged."""
        return {name: np.array(backend.to_numpy(as_array(value))) for name, value in self._state_items()}

    def _state_items(self):
        for prefix, module in self.named_modules():
            for name, param in module._parameters.items():
                yield prefix + name, param
            for name in module._buffers:
                if name in module._persistent and module._buffers[name] is not None:
                    yield prefix + name, module._buffers[name]

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters, in place.

        Each array is cast to the parameter's dtype and copied onto its device.
        A wrong shape is always an error; with strict=True (the default) so is
        a missing or an unexpected key. All problems are listed in one error.
        """
        params = dict(self._state_items())          # parameters and persistent buffers
        problems = []
        if strict:
            problems += [f"missing key {name!r} (expected shape {params[name].shape})"
                         for name in params if name not in state_dict]
            problems += [f"unexpected key {name!r} (shape {tuple(np.shape(as_array(value)))}): "
                         f"this model has no such parameter"
                         for name, value in state_dict.items() if name not in params]
        for name, value in state_dict.items():
            if name in params and tuple(np.shape(as_array(value))) != params[name].shape:
                problems.append(f"wrong shape for {name!r}: the state dict has "
                                f"{tuple(np.shape(as_array(value)))}, the model expects {params[name].shape}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__} failed:\n  "
                             + "\n  ".join(problems))
        for name, value in state_dict.items():
            if name in params:
                param = params[name]
                if isinstance(param, Tensor):
                    param.data[...] = backend.to_device(as_array(value), param.device)  # casts to param.dtype
                else:                                                 # a buffer: its array, in place
                    param[...] = backend.to_device(as_array(value), backend.device_of(param))
        return self

    # ---- devices and dtypes ---------------------------------------------------------------
    def to(self, device):
        """Move every parameter, gradient and buffer to 'cpu' or 'cuda', in place; returns self."""
        backend.check_device(device)
        return self._apply(lambda array: backend.to_device(array, device))

    def astype(self, dtype):
        """Cast every floating parameter, gradient and buffer to `dtype`, in place; returns self."""
        dtype = np.dtype(dtype)
        return self._apply(lambda array: array.astype(dtype, copy=False)
                           if array.dtype.kind == "f" else array)

    def _apply(self, fn):
        for module in self.modules():
            for param in module._parameters.values():
                param.data = fn(param.data)
                if param.grad is not None:
                    param.grad = fn(param.grad)
            for name, array in list(module._buffers.items()):
                if array is not None:
                    module.register_buffer(name, fn(array))
        return self

    # ---- printing ----------------------------------------------------------------------------
    def extra_repr(self):
        """The settings shown in the module's line of repr(), e.g. 'in=4, out=16'."""
        return ""

    def __repr__(self):
        """The module tree, one line per module; a leaf layer's extra_repr stands for its parameters."""
        extra = self.extra_repr()
        lines = []
        if self._modules or not extra:
            lines += [f"({name}): Parameter{param.shape}" for name, param in self._parameters.items()]
        lines += [f"({name}): {module!r}" for name, module in self._modules.items()]
        head = f"{type(self).__name__}({extra}"
        if not lines:
            return head + ")"
        body = "\n".join("  " + line.replace("\n", "\n  ") for line in lines)
        return f"{head}\n{body}\n)"


class ModuleList(Module):
    """A list of Modules whose parameters are named by position: '0.weight', '1.weight', ..."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
