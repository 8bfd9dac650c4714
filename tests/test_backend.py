"""The device choice: MINICLIP_DEVICE, default_device(), check_device(), copies."""
import numpy as np
import pytest

from miniclip import backend


@pytest.mark.parametrize("value", ["cpu", "CPU", " cpu "])
def test_miniclip_device_cpu_is_cpu(monkeypatch, value):
    monkeypatch.setenv("MINICLIP_DEVICE", value)
    assert backend.default_device() == "cpu"


def test_auto_follows_the_gpu(monkeypatch):
    for env in ("auto", None):
        if env is None:
            monkeypatch.delenv("MINICLIP_DEVICE", raising=False)
        else:
            monkeypatch.setenv("MINICLIP_DEVICE", env)
        monkeypatch.setattr(backend, "gpu_available", lambda: False)
        assert backend.default_device() == "cpu"
        monkeypatch.setattr(backend, "gpu_available", lambda: True)
        assert backend.default_device() == "cuda"


def test_an_unknown_miniclip_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MINICLIP_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"MINICLIP_DEVICE='gpu'.*cpu, cuda, auto"):
        backend.default_device()


def test_cuda_without_cupy_says_how_to_install(monkeypatch):
    monkeypatch.setenv("MINICLIP_DEVICE", "cuda")
    monkeypatch.setattr(backend, "cp", None)
    with pytest.raises(RuntimeError, match=r"CuPy is not installed.*MINICLIP_DEVICE=cpu"):
        backend.default_device()


def test_cuda_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr(backend, "cp", object())            # CuPy "imports" ...
    monkeypatch.setattr(backend, "gpu_available", lambda: False)   # ... but sees no GPU
    with pytest.raises(RuntimeError, match="sees no GPU"):
        backend.check_device("cuda")


def test_check_device_refuses_unknown_names():
    backend.check_device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.check_device("tpu")


def test_to_device_cpu_keeps_numpy_arrays_and_converts_lists():
    a = np.arange(6.0).reshape(2, 3)
    assert backend.to_device(a, "cpu") is a                  # no copy when already there
    b = backend.to_numpy([[1, 2], [3, 4]])
    assert isinstance(b, np.ndarray) and b.shape == (2, 2)
    assert backend.device_of(a) == "cpu" and backend.get_array_module(a) is np
    assert backend.xp_for("cpu") is np
