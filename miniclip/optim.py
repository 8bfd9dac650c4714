"""Optimisers (SGD, AdamW), the learning-rate schedule, gradient clipping.

    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=5e-4)
    for step in range(total_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_schedule(step, total_steps, warmup_steps, 5e-4)
        loss = clip_loss(*model(images, ids))
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        clamp_logit_scale(model)

An optimiser takes a list of Parameters, or a list of groups like PyTorch's
{'params': [...], 'weight_decay': 0.0, ...} whose settings override the
defaults. `step()` updates the parameter arrays in place with plain array
math (no Tensors, so no graph): one vectorised update per parameter.

With the fast tier on (autograd/switch.py), AdamW's step runs the same
arithmetic in place, in blocks on every core (miniclip/fast/adamw.py):
bit-for-bit the per-parameter update below, on the same state arrays.
"""
import math

import numpy as np

from miniclip import backend
from miniclip.autograd import switch


class Optimizer:
    """What SGD and AdamW share: parameter groups, zero_grad, the step count."""

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError("the optimiser got an empty parameter list: pass model.parameters()")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.steps = 0                 # how many times step() has run
        self.state = {}                # "<kind>/<i>" -> array, i = position in all_params()

    def all_params(self):
        """Every parameter, group after group (the index i of the state names)."""
        return [param for group in self.param_groups for param in group["params"]]

    def zero_grad(self):
        for param in self.all_params():
            param.grad = None

    def _buffer(self, kind, i, param):
        """The state array kind/i, created as zeros like the parameter on first use."""
        key = f"{kind}/{i}"
        if key not in self.state:
            xp = backend.get_array_module(param.data)
            self.state[key] = xp.zeros_like(param.data)
        return self.state[key]

    def _groups_with_index(self):
        """(group, i, param) for every parameter that has a gradient."""
        i = 0
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    yield group, i, param
                i += 1

    def state_dict(self):
        """{'step': n, '<kind>/<i>': array}: flat, ready for np.savez (copies on the host)."""
        state = {"step": np.array(self.steps)}
        for key, array in self.state.items():
            state[key] = np.array(backend.to_numpy(array))
        return state

    def load_state_dict(self, state):
        """Restore what state_dict() gave (arrays go to each parameter's device and dtype)."""
        params = self.all_params()
        restored = {}
        for key, array in state.items():
            if key == "step":
                continue
            kind, _, index = key.partition("/")
            if not index.isdigit() or int(index) >= len(params):
                raise ValueError(f"optimiser state key {key!r} does not match this optimiser's "
                                 f"{len(params)} parameters: was it saved for another model?")
            param = params[int(index)]
            if tuple(np.shape(array)) != param.shape:
                raise ValueError(f"optimiser state {key!r} has shape {tuple(np.shape(array))}, "
                                 f"parameter {index} has {param.shape}")
            restored[key] = backend.to_device(backend.to_numpy(array), param.device).astype(param.dtype)
        self.steps = int(state["step"])
        self.state = restored
        return self


class SGD(Optimizer):
    """p ← p − lr · b, with b ← momentum · b + (g + weight_decay · p)  (PyTorch's SGD)."""

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self):
        self.steps += 1
        for group, i, param in self._groups_with_index():
            grad = param.grad
            if group["weight_decay"]:
                grad = grad + group["weight_decay"] * param.data      # L2 penalty's gradient
            if group["momentum"]:
                buffer = self._buffer("momentum_buffer", i, param)
                buffer *= group["momentum"]
                buffer += grad                                       # b ← μ b + g
                grad = buffer
            param.data -= group["lr"] * grad


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's AdamW):

        p ← p · (1 − lr · wd)
        m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
        p ← p − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + eps)
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    def step(self):
        """Update every parameter that has a gradient, one at a time (update_one).

        With the fast tier on, miniclip/fast/adamw.py does the same arithmetic in place,
        in blocks (it returns False, leaving it to the loop, when it cannot)."""
        self.steps += 1
        fast_step = switch.fast_version("AdamW.step")
        if fast_step is not None and fast_step(self):
            return
        for group, i, param in self._groups_with_index():
            self.update_one(group, i, param)

    def update_one(self, group, i, param):
        """The AdamW update of parameter i (in `group`); its m and v are self.state's arrays."""
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        xp = backend.get_array_module(param.data)
        t, grad = self.steps, param.grad
        m = self._buffer("exp_avg", i, param)
        v = self._buffer("exp_avg_sq", i, param)
        if wd:
            param.data *= 1 - lr * wd                               # decay, apart from the gradient
        m[...] = beta1 * m + (1 - beta1) * grad                     # running mean of g
        v[...] = beta2 * v + (1 - beta2) * (grad * grad)            # running mean of g²
        denom = xp.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps        # bias-corrected √v, + eps
        param.data -= (lr / (1 - beta1 ** t)) * m / denom           # bias-corrected m / denom


def excluded_from_weight_decay(name, param):
    """OpenCLIP's rule (gains, biases, logit_scale and SigLIP's logit_bias: anything under 2-d
    or named bn/ln/bias/logit_scale) plus the embeddings (token, positional, class), as minGPT
    excludes them."""
    return param.ndim < 2 or any(word in name for word in
                                 ("bn", "ln", "bias", "logit_scale", "embedding"))


def param_groups_for_weight_decay(model, weight_decay):
    """Two groups: the weight matrices (decayed) and the rest (weight_decay 0).

    Each group also lists the parameter names under 'names'. A parameter with
    requires_grad False (a fixed temperature) is left out: the optimiser never moves it.
    """
    decay, no_decay = {"params": [], "names": []}, {"params": [], "names": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:                  # frozen, as OpenCLIP leaves such out
            continue
        group = no_decay if excluded_from_weight_decay(name, param) else decay
        group["params"].append(param)
        group["names"].append(name)
    decay["weight_decay"], no_decay["weight_decay"] = weight_decay, 0.0
    return [decay, no_decay]


def cosine_schedule(step, total_steps, warmup_steps, base_lr, min_lr=0.0):
    """The learning rate at `step`: a linear warm-up from 0 to base_lr over warmup_steps,
    then half a cosine from base_lr down to min_lr at total_steps (and min_lr after)."""
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)   # 0 -> 1
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so their global L2 norm is at most max_norm.

    Returns the norm before clipping. Each gradient is replaced by a scaled copy
    (a gradient array you set yourself, perhaps shared, is never changed).
    """
    params = [param for param in params if param.grad is not None]
    # Σ over parameters stays on the device: one read of the total, not one per parameter
    total = math.sqrt(float(sum((param.grad * param.grad).sum().astype(np.float64) for param in params)))
    scale = max_norm / (total + 1e-6)                # PyTorch's clip_grad_norm_ formula
    if scale < 1:
        for param in params:
            param.grad = param.grad * scale
    return total


def clamp_logit_scale(model, max_value=math.log(100)):
    """Keep the temperature parameter in [0, ln 100] (OpenCLIP does this after every step)."""
    data = model.logit_scale.data
    data[...] = backend.get_array_module(data).clip(data, 0, max_value)
