"""The fast tier (miniclip/fast/) against the plain one: the same numbers, by one switch.

Every fast op equals its plain op (float64 values and gradients, bit for bit where
fast/nn_ops.py says so), the fast AdamW equals the per-parameter one bit for bit,
the thread pool changes nothing, and the switch picks the tier (environment, function,
context manager, a debugger's trace function).
"""
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import miniclip
import miniclip.functional as F
from miniclip import Tensor
from miniclip.autograd import conv_ops, nn_ops, switch
from miniclip.fast import parallel, text
from miniclip.fast import conv_ops as fast_conv_ops
from miniclip.fast import nn_ops as fast_nn_ops
from miniclip.loss import clip_loss
from miniclip.config import get_config
from miniclip.model import CLIP, causal_mask
from miniclip.bench.workloads import random_batch
from miniclip.nn.module import Parameter
from miniclip.optim import AdamW, clip_grad_norm, param_groups_for_weight_decay

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def environment_choice():
    """Each test starts from the environment's choice of tier and leaves it so."""
    switch.use_plain(None)
    yield
    switch.use_plain(None)


def train(fast, steps=3, clip=None, state=None, dtype=np.float32, first=0):
    """`steps` AdamW steps of a micro CLIP, forward and backward by the fast ops;
    fast: the fast tier's AdamW step, else the plain per-parameter one."""
    switch.use_plain(False)
    config = get_config("micro")
    model = CLIP(config, seed=0).astype(dtype)
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-2, betas=(0.9, 0.98),
                      eps=1e-6)
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
        if fast:
            optimizer.step()
        else:
            with miniclip.plain_ops():
                optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_adamw_equals_the_per_parameter_update_bit_for_bit(dtype):
    fast_model, fast_opt = train(True, clip=0.5, dtype=dtype)
    each_model, each_opt = train(False, clip=0.5, dtype=dtype)
    for (name, a), b in zip(fast_model.state_dict().items(), each_model.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    fast_state, each_state = fast_opt.state_dict(), each_opt.state_dict()
    assert fast_state.keys() == each_state.keys()
    for key in fast_state:
        np.testing.assert_array_equal(fast_state[key], each_state[key], err_msg=key)


def test_the_fast_step_runs_and_resume_is_exact(monkeypatch):
    calls = []
    fast_step = switch._fast["AdamW.step"]
    monkeypatch.setitem(switch._fast, "AdamW.step", lambda opt: calls.append(1) or fast_step(opt))
    model, optimizer = train(True, steps=2)
    assert calls == [1, 1]                               # not the plain fallback
    saved = (model.state_dict(), optimizer.state_dict())
    resumed, resumed_opt = train(True, steps=1, first=2, state=saved)
    straight, _ = train(True, steps=3)
    assert resumed_opt.steps == 3
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_the_tiers_take_turns_on_the_same_state():
    """Steps alternating fast, plain, fast give the numbers of three plain steps."""
    config = get_config("micro")
    models = []
    for tiers in (("fast", "plain", "fast"), ("plain",) * 3):
        model = CLIP(config, seed=0)
        optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-2)
        for step, tier in enumerate(tiers):
            images, ids = random_batch(config, 6, seed=step)
            loss = clip_loss(*model(images, ids))
            optimizer.zero_grad()
            loss.backward()
            switch.use_plain(tier == "plain")
            optimizer.step()
            switch.use_plain(False)
        models.append(model)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_parameter_without_gradient_is_left_alone():
    model, optimizer = train(True, steps=1)
    frozen = model.logit_scale
    before = frozen.data.copy()
    config = get_config("micro")
    images, ids = random_batch(config, 6, seed=9)
    loss = clip_loss(*model(images, ids))
    optimizer.zero_grad()
    loss.backward()
    frozen.grad = None                                   # as if it had no gradient
    proj_before = model.visual.proj.data.copy()
    optimizer.step()
    np.testing.assert_array_equal(frozen.data, before)
    assert not np.array_equal(model.visual.proj.data, proj_before)   # the others moved


def test_a_gradient_of_another_dtype_takes_the_plain_update():
    """A float64 gradient for a float32 parameter: the plain update's float64 arithmetic."""
    results = []
    for fast in (True, False):
        switch.use_plain(not fast)
        param = Parameter(np.array([0.5, -1.0, 2.0], dtype=np.float32))
        optimizer = AdamW([param], lr=0.1)
        param.grad = np.array([1e-3, -2.0, 3.0])
        optimizer.step()
        results.append(param.data)
    switch.use_plain(False)
    np.testing.assert_array_equal(results[0], results[1])


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

    before = parallel.num_threads()
    monkeypatch.setenv("MINICLIP_THREADS", "1")
    parallel.set_num_threads(None)
    reference = run()
    monkeypatch.setenv("MINICLIP_THREADS", threads)
    parallel.set_num_threads(None)
    assert parallel.num_threads() == int(threads)
    results = run()
    parallel.set_num_threads(before)
    for a, b2 in zip(reference, results):
        np.testing.assert_array_equal(a, b2)


def test_bad_thread_count_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MINICLIP_THREADS", "two")
    with pytest.raises(ValueError, match="MINICLIP_THREADS"):
        parallel.threads_from_environment()


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


@pytest.mark.parametrize("own_cpu_seconds, expected", [(0.0, 0.9), (0.05, 0.4), (0.2, 0.0)])
def test_busy_cores_read_from_proc_stat(monkeypatch, tmp_path, own_cpu_seconds, expected):
    """Two samples of /proc/stat: cpu0 busy 9/10 of the interval, cpu1 idle, cpu2 not ours;
    this process's own CPU time in the 0.1 s (BLAS threads spinning) is not "others"."""
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
    own = iter([3.0, 3.0 + own_cpu_seconds])
    monkeypatch.setattr(parallel.time, "process_time", lambda: next(own))
    wall = iter([10.0, 10.1])
    monkeypatch.setattr(parallel.time, "monotonic", lambda: next(wall))
    # cpu0: (70 user + 20 steal) / 100, less own_cpu_seconds / 0.1 s
    assert parallel.busy_cores_now() == pytest.approx(expected)


def test_thread_count_from_the_environment_first(monkeypatch):
    for name in ("MINICLIP_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert parallel.threads_from_environment() == 3
    monkeypatch.setenv("MINICLIP_THREADS", "1")
    assert parallel.threads_from_environment() == 1
    monkeypatch.delenv("MINICLIP_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert parallel.threads_from_environment() is None


def test_the_thread_count_is_decided_once_and_not_at_import(monkeypatch):
    code = ("import miniclip, miniclip.functional as F, numpy as np\n"
            "from miniclip.fast import parallel\n"
            "assert parallel._threads is None, 'decided at import'\n"
            "F.softmax(np.ones((2, 3)))\n"
            "print(parallel._threads)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "MINICLIP_THREADS": "2", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    calls = []
    monkeypatch.setattr(parallel, "threads_from_environment", lambda: calls.append(1) or 2)
    monkeypatch.setattr(parallel, "_threads", None)
    monkeypatch.setattr(parallel, "configure_blas", lambda threads: threads)
    assert [parallel.num_threads() for _ in range(5)] == [2] * 5
    assert calls == [1]                                  # the environment read once, not per call


# ---- every fast op equals its plain op ----------------------------------------------------

RNG = np.random.default_rng(3)
X = RNG.standard_normal((300, 70, 32))            # above parallel.MIN_ELEMENTS: the pool runs
W32, B32 = RNG.standard_normal(32), RNG.standard_normal(32)
Q, K, V = (RNG.standard_normal((4, 3, 60, 16)) for _ in range(3))
CAUSAL = np.triu(np.full((60, 60), -np.inf), k=1)
IMAGES = RNG.standard_normal((3, 8, 9, 9))
POINTWISE = RNG.standard_normal((5, 8, 1, 1))
W8, B8 = RNG.standard_normal(8), RNG.standard_normal(8)
SMALL_GRID = RNG.standard_normal((3, 8, 4, 4))       # the fast conv's channels-last lowering

# (name, plain class, fast class, differentiable inputs, constants, bit-identical?)
OPS = [
    ("softmax", nn_ops.Softmax, fast_nn_ops.Softmax, [X], {}, True),
    ("softmax_axis0", nn_ops.Softmax, fast_nn_ops.Softmax, [X[:, :3]], {"axis": 0}, True),
    ("layer_norm", nn_ops.LayerNorm, fast_nn_ops.LayerNorm, [X, W32, B32], {}, False),
    ("quick_gelu", nn_ops.QuickGELU, fast_nn_ops.QuickGELU, [X], {}, True),
    ("linear", nn_ops.Linear, fast_nn_ops.Linear, [X[:20], RNG.standard_normal((7, 32)), RNG.standard_normal(7)], {}, False),
    ("attention", nn_ops.ScaledDotProductAttention, fast_nn_ops.ScaledDotProductAttention, [Q, K, V], {}, True),
    ("attention_causal", nn_ops.ScaledDotProductAttention, fast_nn_ops.ScaledDotProductAttention,
     [Q, K, V], {"mask": CAUSAL}, True),
    ("conv2d_pointwise", conv_ops.Conv2d, fast_conv_ops.Conv2d, [IMAGES, POINTWISE, RNG.standard_normal(5)], {}, False),
    ("conv2d_3x3", conv_ops.Conv2d, fast_conv_ops.Conv2d, [IMAGES, RNG.standard_normal((5, 8, 3, 3))],
     {"padding": 1}, True),
    ("conv2d_3x3_channels_last", conv_ops.Conv2d, fast_conv_ops.Conv2d,
     [SMALL_GRID, RNG.standard_normal((5, 8, 3, 3))], {"padding": 1}, False),
    ("conv2d_3x3_stride2_bias", conv_ops.Conv2d, fast_conv_ops.Conv2d,
     [SMALL_GRID, RNG.standard_normal((5, 8, 3, 3)), RNG.standard_normal(5)], {"stride": 2, "padding": 1},
     False),
    ("conv2d_2x3_unpadded", conv_ops.Conv2d, fast_conv_ops.Conv2d,
     [SMALL_GRID, RNG.standard_normal((4, 8, 2, 3))], {"stride": 2}, False),
    ("conv2d_1x1_small_grid", conv_ops.Conv2d, fast_conv_ops.Conv2d,
     [SMALL_GRID, RNG.standard_normal((6, 8, 1, 1)), RNG.standard_normal(6)], {}, False),
    ("batch_norm_train", conv_ops.BatchNorm2d, fast_conv_ops.BatchNorm2d, [IMAGES, W8, B8],
     {"running_mean": np.zeros(8), "running_var": np.ones(8)}, False),
    ("batch_norm_eval", conv_ops.BatchNorm2d, fast_conv_ops.BatchNorm2d, [IMAGES, W8, B8],
     {"running_mean": RNG.standard_normal(8), "running_var": RNG.random(8) + 0.5, "training": False},
     True),
]


@pytest.mark.parametrize("name, plain, fast, arrays, constants, identical", OPS, ids=[c[0] for c in OPS])
def test_fast_op_equals_plain_op(name, plain, fast, arrays, constants, identical):
    results = []
    for cls in (plain, fast):
        inputs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
        out = cls.apply(*inputs, **constants)
        assert type(out.grad_fn) is cls and repr(out.grad_fn) == f"<{plain.__name__}>"
        out.backward(np.random.default_rng(1).standard_normal(out.shape))
        results.append([out.data] + [t.grad for t in inputs])
    for a, b in zip(*results):
        if identical:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(a).max())


def test_fast_batch_norm_moves_the_running_statistics_like_the_plain_op():
    stats = []
    for cls in (conv_ops.BatchNorm2d, fast_conv_ops.BatchNorm2d):
        running_mean, running_var = np.full(8, 0.3), np.full(8, 2.0)
        cls.apply(Tensor(IMAGES), Tensor(W8), Tensor(B8), running_mean=running_mean,
                  running_var=running_var, momentum=0.2)
        stats.append((running_mean, running_var))
    for a, b in zip(*stats):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert not np.allclose(stats[0][0], 0.3)


def test_conv2d_lowerings_are_chosen_by_shape():
    assert fast_conv_ops.lowering((128, 64, 8, 8), (64, 64, 1, 1), 1, 0) == "pointwise"
    assert fast_conv_ops.lowering((128, 64, 4, 4), (64, 64, 3, 3), 1, 1) == "channels-last"
    assert fast_conv_ops.lowering((128, 8, 16, 16), (8, 8, 3, 3), 1, 1) == "plain"
    assert fast_conv_ops.lowering((1, 8, 2, 2), (8, 4, 3, 3), 1, 1) == "plain"   # channels differ
    assert fast_conv_ops.lowering((128, 32, 8, 8), (32, 32, 3, 3), 1, 1) == "plain"
    assert fast_conv_ops.lowering((128, 256, 2, 2), (128, 256, 1, 1), 1, 0) == "channels-last"
    tested = {"conv2d_3x3_channels_last", "conv2d_3x3_stride2_bias", "conv2d_2x3_unpadded",
              "conv2d_1x1_small_grid"}                  # the OPS cases above reach that lowering
    for name, _, _, arrays, constants, _ in OPS:
        if name in tested:
            images, weight = arrays[0], arrays[1]
            assert fast_conv_ops.lowering(images.shape, weight.shape, constants.get("stride", 1),
                                          constants.get("padding", 0)) == "channels-last", name


def test_every_fast_op_is_registered_under_its_plain_name():
    fast_ops = {fast for _, _, fast, *_ in OPS}
    for cls in fast_ops:
        assert switch._fast[cls.__name__] is cls
    assert set(switch._fast) == {cls.__name__ for cls in fast_ops} | {"AdamW.step", "CLIP.text_ids"}


def test_one_clip_step_gives_the_same_loss_and_gradients_in_both_tiers():
    config = get_config("micro")
    images, ids = random_batch(config, 6, seed=0)
    results = []
    for plain in (True, False):
        switch.use_plain(plain)
        model = CLIP(config, seed=0).astype(np.float64)
        loss = clip_loss(*model(images.astype(np.float64), ids))
        loss.backward()
        results.append([loss.data] + [p.grad for p in model.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


# ---- the text tower up to the batch's last end token (fast/text.py) ---------------------

def prompts(config, ends, seed=0):
    """ids (N, C): a start token, random words, the end token (the largest id) at `ends`, zeros."""
    rng = np.random.default_rng(seed)
    N, C, V = len(ends), config.context_length, config.vocab_size
    ids = rng.integers(1, V - 2, (N, C))
    ids[:, 0] = V - 2
    ids[np.arange(N), ends] = V - 1
    ids[np.arange(C)[None, :] > np.asarray(ends)[:, None]] = 0
    return ids


def test_trim_text_ids_keeps_up_to_the_last_end_token():
    config = get_config("micro")
    causal = causal_mask(config.context_length)
    ids = prompts(config, [3, 6, 2])
    assert text.trim_text_ids(ids, None, causal).shape == (3, 7)
    eos = ids.copy()
    eos[eos == config.vocab_size - 1] = 5                      # a config naming its end token
    eos[1, 9] = 5                                              # a second one: the first counts
    assert text.trim_text_ids(eos, 5, causal).shape == (3, 7)
    assert text.trim_text_ids(prompts(config, [15, 2]), None, causal).shape == (2, 16)
    on_device = miniclip.strict.asarray(ids)                   # a device: no synchronising read
    assert text.trim_text_ids(on_device, None, causal) is on_device
    # without a causal mask every position can reach the pooled row: nothing is cut
    assert text.trim_text_ids(ids, None, None) is ids
    leaky = causal.copy()
    leaky[0, 5] = 0.0                                          # token 0 may see token 5
    assert text.trim_text_ids(ids, None, leaky) is ids


@pytest.mark.parametrize("ends, masked", [([5, 7, 4, 6], True), ([5, 76, 3, 8], True),
                                          ([5, 7, 4, 6], False)],
                         ids=["padded", "one-fills-the-context", "no-mask"])
def test_text_features_and_gradients_equal_with_and_without_trimming(ends, masked):
    """Five-word prompts padded to 77, a batch where one caption fills the context, and a
    text tower whose causal mask was removed (every position then counts): the text
    features, the loss and every gradient are the same with the fast tier's trimming as
    with the whole context."""
    config = dataclasses.replace(get_config("micro"), context_length=77)
    images, _ = random_batch(config, len(ends), seed=0)
    ids = prompts(config, ends)
    switch.use_plain(False)
    seen, results = [], []
    for trim in (text.trim_text_ids, lambda ids, eos, mask: ids):
        switch.register_fast("CLIP.text_ids", lambda ids, eos, mask, trim=trim: seen.append(
            trim(ids, eos, mask).shape) or trim(ids, eos, mask))
        try:
            model = CLIP(config, seed=0).astype(np.float64)
            if not masked:
                model.transformer.attn_mask = None
            features = model.encode_text(ids)
            loss = clip_loss(*model(images.astype(np.float64), ids))
            loss.backward()
        finally:
            switch.register_fast("CLIP.text_ids", text.trim_text_ids)
        results.append([features.data, loss.data] + [p.grad for p in model.parameters()])
    assert seen[0] == (len(ends), max(ends) + 1 if masked else 77) and seen[-1] == (len(ends), 77)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


# ---- the switch ---------------------------------------------------------------------------

def test_the_switch_by_function_and_context_manager():
    switch.use_plain(False)
    assert switch.op(nn_ops.LayerNorm) is fast_nn_ops.LayerNorm
    assert switch.op(nn_ops.GELU) is nn_ops.GELU                # no fast version: the plain one
    t = Tensor(X[:2], requires_grad=True)
    assert type(F.layer_norm(t, W32, B32).grad_fn) is fast_nn_ops.LayerNorm
    with miniclip.plain_ops():
        assert switch.op(nn_ops.LayerNorm) is nn_ops.LayerNorm
        assert type(F.layer_norm(t, W32, B32).grad_fn) is nn_ops.LayerNorm
        assert switch.fast_version("AdamW.step") is None
    assert switch.op(nn_ops.LayerNorm) is fast_nn_ops.LayerNorm
    miniclip.use_plain(True)
    assert switch.op(nn_ops.Softmax) is nn_ops.Softmax
    miniclip.use_plain(False)
    assert switch.op(nn_ops.Softmax) is fast_nn_ops.Softmax


@pytest.mark.parametrize("value, plain", [("1", True), ("0", False), ("", False)])
def test_the_switch_by_environment(monkeypatch, value, plain):
    monkeypatch.setenv("MINICLIP_PLAIN", value)
    switch.use_plain(None)
    assert (switch.op(nn_ops.QuickGELU) is nn_ops.QuickGELU) == plain
    assert (switch.fast_version("AdamW.step") is None) == plain


def test_a_debugger_gets_the_plain_ops_and_one_notice(monkeypatch, capsys):
    """A trace function (what pdb, VS Code and PyCharm set) selects the plain tier."""
    switch.use_plain(False)
    monkeypatch.setattr(switch, "_told", False)
    picked = []
    previous = sys.gettrace()

    def tracer(frame, event, arg):
        return None
    sys.settrace(tracer)
    try:
        for _ in range(3):
            picked.append(switch.op(nn_ops.LayerNorm))
            picked.append(type(F.softmax(Tensor(X[:2], requires_grad=True)).grad_fn))
        step = switch.fast_version("AdamW.step")
    finally:
        sys.settrace(previous)
    assert picked == [nn_ops.LayerNorm, nn_ops.Softmax] * 3 and step is None
    assert capsys.readouterr().err.count("debugger attached") == 1
    if previous is None:                                        # not under coverage or a debugger
        assert switch.op(nn_ops.LayerNorm) is fast_nn_ops.LayerNorm


def test_asking_for_plain_prints_no_notice(monkeypatch, capsys):
    switch.use_plain(True)
    monkeypatch.setattr(switch, "_told", False)
    previous = sys.gettrace()
    sys.settrace(lambda frame, event, arg: None)
    try:
        switch.op(nn_ops.LayerNorm)
    finally:
        sys.settrace(previous)
    assert "debugger" not in capsys.readouterr().err


def test_the_plain_tier_imports_nothing_from_the_fast_tier():
    plain = list((REPO / "miniclip" / "autograd").glob("*.py")) + list((REPO / "miniclip" / "nn").glob("*.py"))
    plain += [REPO / "miniclip" / name for name in ("optim.py", "functional.py", "backend.py")]
    for path in plain:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.startswith("miniclip.fast") for name in names), path


def test_a_debugger_registered_with_sys_monitoring_gets_the_plain_ops(monkeypatch, capsys):
    """Python 3.12+ debuggers may use sys.monitoring instead of a trace function."""
    switch.use_plain(False)
    monkeypatch.setattr(switch, "_told", False)
    monkeypatch.setattr(switch, "debugger_attached", lambda: True)
    assert switch.op(nn_ops.QuickGELU) is nn_ops.QuickGELU
    assert switch.fast_version("AdamW.step") is None
    assert capsys.readouterr().err.count("debugger attached") == 1
