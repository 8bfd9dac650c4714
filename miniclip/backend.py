"""Which array library does the math: NumPy on the CPU, CuPy on a CUDA GPU.

Every op is written once against an array module `xp` (the DeZero habit):
`xp = get_array_module(x)` returns `numpy` for a NumPy array and `cupy` for a
CuPy array, so the same line runs on either device.

The default device comes from the environment variable MINICLIP_DEVICE:
    cpu   NumPy, always available
    cuda  CuPy on a GPU; an error if CuPy or a GPU is missing
    auto  (default) CuPy when it imports and a GPU answers, else NumPy

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
    """'cpu' or 'cuda', from MINICLIP_DEVICE (cpu | cuda | auto)."""
    choice = os.environ.get("MINICLIP_DEVICE", "auto").strip().lower()
    if choice not in ("cpu", "cuda", "auto"):
        raise ValueError(f"MINICLIP_DEVICE={choice!r}: use one of cpu, cuda, auto")
    if choice == "auto":
        return "cuda" if gpu_available() else "cpu"
    if choice == "cuda":
        check_device("cuda")
    return choice


def check_device(device):
    """Raise a clear error unless `device` ('cpu' or 'cuda') can be used."""
    if device == "cpu":
        return
    if device != "cuda":
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    if cp is None:
        raise RuntimeError(
            "device 'cuda' asked for, but CuPy is not installed: "
            "`pip install -e .[gpu]` (CUDA 12), or use MINICLIP_DEVICE=cpu")
    if not gpu_available():
        raise RuntimeError(
            "device 'cuda' asked for, but CuPy sees no GPU: "
            "check `nvidia-smi`, or use MINICLIP_DEVICE=cpu")


def get_array_module(x):
    """numpy or cupy, whichever owns array `x` (numpy for anything else)."""
    if cp is not None and isinstance(x, cp.ndarray):
        return cp
    return np


def xp_for(device):
    """The array module for a device name."""
    check_device(device)
    return cp if device == "cuda" else np


def device_of(x):
    """'cuda' for a CuPy array, 'cpu' otherwise."""
    return "cuda" if get_array_module(x) is not np else "cpu"


def to_device(x, device):
    """Copy an array to 'cpu' (NumPy) or 'cuda' (CuPy); no copy if already there."""
    if device == "cpu":
        return cp.asnumpy(x) if device_of(x) == "cuda" else np.asarray(x)
    check_device(device)
    return cp.asarray(x)


def to_numpy(x):
    """A NumPy array from a NumPy or CuPy array (copies from the GPU)."""
    return to_device(x, "cpu")
