"""Shared test set-up: fixture paths and the NumPy / CuPy / strict backends."""
import os
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
    if not FIXTURES.exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES} (set MINICLIP_FIXTURES)")
    return FIXTURES
