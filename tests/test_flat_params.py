"""Flat parameter/gradient buffers and the chunked thread pool: same numbers as without them."""
import numpy as np
import pytest

import miniclip.functional as F
from miniclip import Tensor
from miniclip.autograd import parallel
from miniclip.loss import clip_loss
from miniclip.model import CLIP, get_config
from miniclip.bench.workloads import random_batch
from miniclip.optim import AdamW, clip_grad_norm, param_groups_for_weight_decay


def train(flat, steps=3, clip=None, state=None, dtype=np.float32, first=0):
    config = get_config("micro")
    model = CLIP(config, seed=0).astype(dtype)
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-2, betas=(0.9, 0.98),
                      eps=1e-6, flat=flat)
    if state is not None:
        model.load_state_dict(state[0])
        optimizer.load_state_dict(state[1])
    for step in range(first, first + steps):
        images, ids = random_batch(config, 6, seed=step)
        loss = clip_loss(*model(images.astype(dtype), ids))
        optimizer.zero_grad()
        loss.backward()
        if clip:
            clip_grad_norm(model.parameters(), clip)
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_adamw_equals_the_per_parameter_update_bit_for_bit(dtype):
    flat_model, flat_opt = train(True, clip=0.5, dtype=dtype)
    each_model, each_opt = train(False, clip=0.5, dtype=dtype)
    assert flat_opt.flat is not None and flat_opt.flat.intact() and each_opt.flat is None
    for (name, a), b in zip(flat_model.state_dict().items(), each_model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    flat_state, each_state = flat_opt.state_dict(), each_opt.state_dict()
    assert flat_state.keys() == each_state.keys()
    for key in flat_state:
        np.testing.assert_array_equal(flat_state[key], each_state[key], err_msg=key)


def test_parameters_are_views_of_one_array_and_resume_is_exact():
    model, optimizer = train(True, steps=2)
    flat = optimizer.flat
    assert all(p.data.base is flat.data for p in model.parameters())
    assert all(p.grad.base is flat.grad for p in model.parameters())
    saved = (model.state_dict(), optimizer.state_dict())
    resumed, resumed_opt = train(True, steps=1, first=2, state=saved)
    straight, _ = train(True, steps=3)
    assert resumed_opt.steps == 3
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_parameter_without_gradient_falls_back_and_is_left_alone():
    model, optimizer = train(True, steps=1)
    frozen = model.logit_scale
    before = frozen.data.copy()
    config = get_config("micro")
    images, ids = random_batch(config, 6, seed=9)
    loss = clip_loss(*model(images, ids))
    optimizer.zero_grad()
    loss.backward()
    frozen.grad = None                                   # as if it had no gradient
    assert not optimizer.flat.intact()
    optimizer.step()
    np.testing.assert_array_equal(frozen.data, before)


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_thread_pool_gives_identical_results(monkeypatch, threads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 70, 32)).astype(np.float32)     # above MIN_ELEMENTS
    w, b = rng.standard_normal(32).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        outs = []
        for fn in (F.quick_gelu, F.softmax, lambda t: F.layer_norm(t, w, b)):
            t = Tensor(x, requires_grad=True)
            y = fn(t)
            y.backward(g)
            outs += [y.data, t.grad]
        return outs

    monkeypatch.setenv("MINICLIP_THREADS", "1")
    reference = run()
    monkeypatch.setenv("MINICLIP_THREADS", threads)
    for a, b2 in zip(reference, run()):
        np.testing.assert_array_equal(a, b2)


def test_bad_thread_count_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MINICLIP_THREADS", "two")
    with pytest.raises(ValueError, match="MINICLIP_THREADS"):
        parallel.num_threads()


def test_row_blocks_cover_every_row_once():
    blocks = parallel.row_blocks(1000, 1000 * 77, block_elements=5000)
    rows = np.concatenate([np.arange(1000)[r] for r in blocks])
    np.testing.assert_array_equal(rows, np.arange(1000))


@pytest.mark.parametrize("busy, expected", [(2.0, 1), (1.2, 1), (0.4, 2), (0.0, 2)])
def test_default_threads_leave_busy_cores_alone(monkeypatch, busy, expected):
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(parallel, "busy_cores_now", lambda: busy)
    assert parallel.idle_cores() == expected


@pytest.mark.parametrize("load, expected", [(13.0, 1), (2.2, 1), (1.0, 2), (0.1, 2)])
def test_without_proc_stat_the_load_average_decides(monkeypatch, load, expected):
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(parallel, "busy_cores_now", lambda: None)
    monkeypatch.setattr(parallel.os, "getloadavg", lambda: (load, load, load))
    assert parallel.idle_cores() == expected


def test_busy_cores_read_from_proc_stat(monkeypatch, tmp_path):
    """Two samples of /proc/stat: cpu0 busy 3/4 of the interval, cpu1 idle, cpu2 not ours."""
    samples = iter([
        "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n",
        "cpu  0 0 0 0 0 0 0 0\ncpu0 170 0 0 110 0 0 0 20\ncpu1 0 0 0 300 0 0 0 0\ncpu2 99 0 0 1 0 0 0 0\n",
    ])
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/stat":
            target = tmp_path / "stat"
            target.write_text(next(samples))
            return real_open(target, *args, **kwargs)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(parallel.time, "sleep", lambda seconds: None)
    assert parallel.busy_cores_now() == pytest.approx(0.9)   # cpu0: (70 user + 20 steal) / 100


def test_thread_count_from_the_environment_first(monkeypatch):
    for name in ("MINICLIP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.num_threads() == 3
    monkeypatch.setenv("MINICLIP_THREADS", "1")
    assert parallel.num_threads() == 1
