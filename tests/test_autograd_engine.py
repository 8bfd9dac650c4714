"""The backward engine: order, accumulation, freeing, hooks, no_grad, anomalies, printing."""
import numpy as np
import pytest

import miniclip
import miniclip.functional as F
from miniclip import Tensor, no_grad
from miniclip.autograd import GradcheckError, detect_anomaly, format_graph, gradcheck, ops
from miniclip.model import CLIP


def test_long_chain_needs_no_recursion():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_gradient_accumulates_where_a_tensor_is_used_twice():
    x = Tensor(np.array([3.0]), requires_grad=True)
    (x * x + x).backward()                     # d/dx (x² + x) = 2x + 1
    np.testing.assert_allclose(x.grad, [7.0])
    (x * 2.0).backward()                       # .grad adds up across backward calls
    np.testing.assert_allclose(x.grad, [9.0])


def test_unbroadcast_sums_over_broadcast_axes():
    a = Tensor(np.ones((2, 3, 4)), requires_grad=True)
    b = Tensor(np.ones((3, 1)), requires_grad=True)
    (a * b).sum().backward()
    assert b.grad.shape == (3, 1)
    np.testing.assert_allclose(b.grad, np.full((3, 1), 8.0))


def test_graph_is_freed_unless_retained():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).exp()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    y.backward()                               # allowed: the graph was retained
    np.testing.assert_allclose(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    assert y.grad_fn.saved == ()               # saved arrays released


def test_hooks_see_and_may_replace_the_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    seen = []
    h.register_hook(lambda g: seen.append(g.copy()))
    h.register_hook(lambda g: g * 0.0)         # a hook that returns a new gradient
    h.sum().backward()
    np.testing.assert_allclose(seen[0], [1.0, 1.0])
    np.testing.assert_allclose(x.grad, [0.0, 0.0])


def test_no_grad_builds_no_graph():
    x = Tensor(np.array([1.0]), requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert y.grad_fn is None and not y.requires_grad
    z = x * 2.0
    assert z.grad_fn is not None


def test_backward_errors_are_clear():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).backward()
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="single value"):
        (x * 2.0).backward()


def test_detect_anomaly_names_the_first_bad_op():
    x = Tensor(np.array([1.0, -1.0]), requires_grad=True)
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match="forward of Log"):
            x.log().sum()
        z = Tensor(np.array([0.0, 4.0]), requires_grad=True)
        y = (z * 1.0).sqrt().sum()             # forward is finite: sqrt(0) = 0 ...
        with pytest.raises(FloatingPointError, match="backward of Sqrt"):
            y.backward()                       # ... but d√z/dz = 1/(2√z) is inf at 0
    with np.errstate(invalid="ignore"):
        assert np.isnan(x.log().data[1])       # outside the block nothing is checked


def test_repr_shows_shape_dtype_device_and_op():
    x = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    text = repr(F.softmax(x))
    for part in ("shape=(2, 3)", "dtype=float32", "device=cpu", "grad_fn=<Softmax>"):
        assert part in text
    assert "requires_grad=True" in repr(x)


def test_python_numbers_become_float32_like_torch():
    assert miniclip.Tensor([1.0]).dtype == np.float32
    x = Tensor(np.ones(2, np.float32))
    assert (x * 2.5).dtype == np.float32       # numbers take the tensor's dtype


def test_cast_sends_the_gradient_back_in_the_input_dtype():
    x = Tensor(np.array([1.5, 2.0], np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [3.0, 4.0])


def test_print_graph_lists_every_op_once():
    w = Tensor(np.ones((3, 5)), requires_grad=True, name="w")
    x = Tensor(np.ones((4, 5)), name="x")
    h = F.linear(x, w)
    text = format_graph((h * h).sum())
    assert text.splitlines()[0].startswith("Sum ()")
    assert "Mul (4, 3)" in text and text.count("Linear") == 2   # once printed, once as (shared)
    assert "(shared)" in text and "w leaf (3, 5) float64, requires_grad" in text


def test_a_broken_backward_is_caught_by_gradcheck(monkeypatch):
    a = Tensor(np.random.default_rng(0).standard_normal(4), requires_grad=True)
    assert gradcheck(lambda t: t.tanh(), a)
    monkeypatch.setattr(ops.Tanh, "backward", staticmethod(lambda ctx, g: g * (1 - ctx.saved[0])))
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda t: t.tanh(), a)


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2.0, Tensor(np.ones(2, np.float32), requires_grad=True))


def test_a_hook_returning_the_wrong_shape_or_dtype_is_named():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")

    def halve_the_rows(g):
        return g[:1]
    h = x * 3.0
    h.register_hook(halve_the_rows)
    with pytest.raises(ValueError, match="hook 'test_a_hook_returning.*halve_the_rows' on a tensor "
                                         r"of shape \(2,\) returned a ndarray of shape \(1,\)"):
        h.sum().backward()
    x.register_hook(lambda g: g.astype(np.float32))
    with pytest.raises(ValueError, match=r"on tensor 'x' returned .*dtype float32.*dtype float64"):
        (x * 3.0).sum().backward()


def test_parameters_carry_their_names_into_graphs_and_anomalies():
    model = CLIP("micro")
    names = [name for name, _ in model.named_parameters()]
    assert [param.name for param in model.parameters()] == names
    assert model.visual.transformer.resblocks[0].ln_1.weight.name == "visual.transformer.resblocks.0.ln_1.weight"
    features = model.encode_text(np.array([[5, 6, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]))
    assert "Parameter(name='ln_final.weight'" in repr(model.ln_final.weight)
    assert "text_projection leaf" in format_graph(features, max_lines=1000)
    with detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"its input 2 \(ln.bias\) already held NaN"):
            F.layer_norm(Tensor(np.ones((2, 4))), np.ones(4), Tensor(np.full(4, np.nan), name="ln.bias"))
        w = Tensor(np.array([0.0, 4.0]), requires_grad=True, name="visual.proj")
        with pytest.raises(FloatingPointError, match=r"backward of Sqrt .* input 0 \(visual.proj\)"):
            w.sqrt().sum().backward()
