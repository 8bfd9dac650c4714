"""Which array library does the math: NumPy on the CPU, CuPy on a CUDA GPU.

Every op is written once against an array module `xp` (the DeZero habit):
`xp = get_array_module(x)` returns `numpy` for a NumPy array and `cupy` for a
CuPy array, so the same line runs on either device.

The default device comes from the environment variable MINICLIP_DEVICE:
    cpu   NumPy, always available
    cuda  CuPy on a GPU; an error if CuPy or a GPU is missing
    auto  (default) CuPy when it imports and a GPU answers, else NumPy
    strict  a test device, not a GPU: NumPy arrays behind CuPy's refusals, every
          host<->device crossing counted (miniclip/strict.py)

Tensors never move between host and device behind your back: `to_device`,
`Tensor.to(...)` / `Tensor.numpy()` and `Module.to(...)` are the explicit ways,
and a Tensor on the wrong device is refused with an error. One convenience
copies: CLIP's `encode_image` / `encode_text` / forward also take plain arrays
(NumPy or CuPy) and copy them to the model's device with `to_device` (images
also cast to the model's dtype), so `model(numpy_images, ids)` works on a GPU
model; results stay on the model's device.
"""
import os

import numpy as np

from miniclip import strict

try:  # CuPy is optional: `pip install miniclip[gpu]`
    import cupy as cp
except Exception:  # ImportError, or a CUDA library that fails to load
    cp = None


def gpu_available():
    """True when CuPy imports and at least one CUDA device answers."""
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def default_device():
    """'cpu', 'cuda' or 'strict', from MINICLIP_DEVICE (cpu | cuda | auto | strict)."""
    choice = os.environ.get("MINICLIP_DEVICE", "auto").strip().lower()
    if choice not in DEVICES + ("auto",):
        raise ValueError(f"MINICLIP_DEVICE={choice!r}: use one of cpu, cuda, auto, strict")
    if choice == "auto":
        return "cuda" if gpu_available() else "cpu"
    if choice == "cuda":
        check_device("cuda")
    return choice


DEVICES = ("cpu", "cuda", "strict")


def check_device(device):
    """Raise a clear error unless `device` ('cpu', 'cuda' or 'strict') can be used."""
    if device in ("cpu", "strict"):
        return
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'strict' (a test device)")
    if cp is None:
        raise RuntimeError(
            "device 'cuda' asked for, but CuPy is not installed: "
            "`pip install -e .[cuda12]` (or .[cuda11] for CUDA 11), or use MINICLIP_DEVICE=cpu")
    if not gpu_available():
        raise RuntimeError(
            "device 'cuda' asked for, but CuPy sees no GPU: "
            "check `nvidia-smi`, or use MINICLIP_DEVICE=cpu")


def get_array_module(x):
    """numpy, cupy or strict, whichever owns array `x` (numpy for anything else)."""
    if cp is not None and isinstance(x, cp.ndarray):
        return cp
    if isinstance(x, strict.ndarray):
        return strict
    return np


def xp_for(device):
    """The array module for a device name."""
    check_device(device)
    return {"cpu": np, "cuda": cp, "strict": strict}[device]


def device_of(x):
    """'cuda' for a CuPy array, 'strict' for a strict one, 'cpu' otherwise."""
    xp = get_array_module(x)
    return "cuda" if xp is cp and cp is not None else "strict" if xp is strict else "cpu"


def to_device(x, device):
    """Copy an array to 'cpu' (NumPy), 'cuda' (CuPy) or 'strict'; no copy if already there."""
    source = device_of(x)
    if device == source:
        return x if source != "cpu" else np.asarray(x)
    check_device(device)
    if source != "cpu":                               # device -> host first
        x = cp.asnumpy(x) if source == "cuda" else x.get()
    if device == "cpu":
        return x
    return cp.asarray(x) if device == "cuda" else strict.asarray(x)


def to_numpy(x):
    """A NumPy array from a NumPy, CuPy or strict array (copies from the device)."""
    return to_device(x, "cpu")
