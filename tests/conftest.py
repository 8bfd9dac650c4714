"""Shared test set-up: the one place that finds the shared files, and the NumPy / strict /
CuPy backends.

The reference fixtures, OpenAI's vocabulary and CIFAR live outside the repo
(../shared, or the folders MINICLIP_FIXTURES, MINICLIP_ASSETS, MINICLIP_DATA
name). A test that needs one asks `shared_file(kind, *parts)`, which skips it,
saying which variable to set, when the file is absent (a fresh clone).
`ctrl_c_during_step` stops a training run the way a user's Ctrl-C does.
"""
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from miniclip import backend

REPO = Path(__file__).resolve().parent.parent


def shared_path(env, default):
    """A folder from an env var, else the default relative to the repo (../shared/...)."""
    return Path(os.environ.get(env, REPO / default)).resolve()


FIXTURES = shared_path("MINICLIP_FIXTURES", "../shared/fixtures")
ASSETS = shared_path("MINICLIP_ASSETS", "../shared/assets")
DATA = shared_path("MINICLIP_DATA", "../shared/data")
_SHARED = {"fixtures": ("MINICLIP_FIXTURES", FIXTURES), "assets": ("MINICLIP_ASSETS", ASSETS),
           "data": ("MINICLIP_DATA", DATA)}


def shared_file(kind, *parts):
    """The path of a shared file ('fixtures' | 'assets' | 'data', then path parts),
    or skip the calling test with the reason when it is absent."""
    env, root = _SHARED[kind]
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (shared {kind}: set {env} to the folder holding it)")
    return path

_BACKENDS = [pytest.param("numpy", id="numpy"),
             pytest.param("strict", id="strict"),
             pytest.param("cupy", id="cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=_BACKENDS)
def xp(request):
    """The array module under test: numpy and strict (miniclip/strict.py: NumPy behind
    CuPy's refusals, a test device) always, cupy when a GPU is present."""
    if request.param == "cupy":
        if not backend.gpu_available():
            pytest.skip("CuPy with a CUDA GPU is not available")
        return backend.cp
    return backend.strict if request.param == "strict" else np


@pytest.fixture
def device(xp):
    """The same backends as device names, for Module.to and load(device=): cpu, strict, cuda."""
    return backend.device_of(xp.zeros(1))


@pytest.fixture
def fixtures_dir():
    return shared_file("fixtures")


def ctrl_c_during_step(monkeypatch, step):
    """Make the next miniclip.train run get a Ctrl-C (SIGINT) during its step `step` (counted from
    1 at the gradient clipping of each step); returns the function that undoes it."""
    import miniclip.train as train_module
    calls, real_clip = {"n": 0}, train_module.clip_grad_norm

    def clip_then_ctrl_c(params, max_norm):
        calls["n"] += 1
        if calls["n"] == step:
            signal.raise_signal(signal.SIGINT)           # stop after this step, save, return
        return real_clip(params, max_norm)

    monkeypatch.setattr(train_module, "clip_grad_norm", clip_then_ctrl_c)
    return lambda: monkeypatch.setattr(train_module, "clip_grad_norm", real_clip)
