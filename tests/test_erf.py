"""erf (Cody's rational approximation) and the exact GELU against math.erf."""
import math

import numpy as np
import pytest

import miniclip.functional as F
from miniclip.autograd.erf import erf
from miniclip.autograd.gradcheck import gradcheck


def dense_grid():
    """Every interval and boundary of the approximation, both signs, tiny to huge."""
    linear = np.linspace(-8.0, 8.0, 400_001)                # steps of 4e-5 through all three intervals
    logs = np.geomspace(1e-300, 40.0, 50_001)
    edges = np.array([0.46875, 4.0, 26.543, 27.0, 5e-324])
    edges = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    x = np.concatenate([linear, logs, edges])
    return np.concatenate([x, -x, [0.0]])


def test_erf_matches_math_erf_to_1e15_relative():
    x = dense_grid()
    expected = np.array([math.erf(v) for v in x])
    got = erf(x)
    relative = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(float).tiny)
    worst = int(relative.argmax())
    assert relative[worst] <= 1e-15, f"erf({x[worst]!r}) = {got[worst]!r}, math.erf: {expected[worst]!r}"


def test_erf_special_values_and_dtype():
    got = erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan]))
    assert got[0] == 0 and np.signbit(got[1]) and got[2] == 1 and got[3] == -1 and np.isnan(got[4])
    assert erf(np.float32([0.5, -2.0])).dtype == np.float32


def test_gelu_is_x_times_the_normal_cdf():
    x = np.linspace(-10, 10, 20_001)
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])  # torch's formula
    # for x << 0, 1 + erf(x/√2) cancels: one ulp of erf near -1 is ~1e-16 absolute there
    np.testing.assert_allclose(F.gelu(x).data, expected, rtol=1e-15, atol=1e-15)


def test_gelu_derivative_is_cdf_plus_x_pdf():
    from miniclip.autograd.tensor import Tensor
    x = Tensor(np.linspace(-6, 6, 1201), requires_grad=True)
    F.gelu(x).sum().backward()
    v = x.data
    expected = 0.5 * (1 + np.array([math.erf(a / math.sqrt(2)) for a in v])) \
        + v * np.exp(-v * v / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_gelu_gradcheck(scale):
    from miniclip.autograd.tensor import Tensor
    x = Tensor(np.random.default_rng(0).standard_normal((4, 5)) * scale, requires_grad=True)
    assert gradcheck(F.gelu, x)
