"""Optimisers against hand-computed updates; weight-decay groups; schedule; clipping; clamp."""
import io
import math

import numpy as np
import pytest

from miniclip.config import CLIPConfig
from miniclip.model import CLIP
from miniclip.nn import Parameter
from miniclip.optim import (SGD, AdamW, clamp_logit_scale, clip_grad_norm, cosine_schedule,
                            param_groups_for_weight_decay)

RNG = np.random.default_rng(0)
START = [RNG.standard_normal((3, 2)), RNG.standard_normal(4)]
GRADS = [[RNG.standard_normal((3, 2)), RNG.standard_normal(4)] for _ in range(3)]


def fresh_params():
    return [Parameter(p.copy()) for p in START]


def run(optimizer, params, steps):
    for grads in GRADS[:steps]:
        optimizer.zero_grad()
        for param, grad in zip(params, grads):
            param.grad = grad.copy()
        optimizer.step()


def test_adamw_matches_the_formula_for_three_steps():
    params = fresh_params()
    groups = [{"params": [params[0]]}, {"params": [params[1]], "weight_decay": 0.0, "lr": 0.05}]
    run(AdamW(groups, lr=0.1, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.2), params, 3)
    for i, (lr, wd) in enumerate([(0.1, 0.2), (0.05, 0.0)]):
        p, m, v = START[i].copy(), 0.0, 0.0
        for t in range(1, 4):
            g = GRADS[t - 1][i]
            p = p - lr * wd * p
            m = 0.8 * m + 0.2 * g
            v = 0.9 * v + 0.1 * g ** 2
            p = p - lr * (m / (1 - 0.8 ** t)) / (np.sqrt(v / (1 - 0.9 ** t)) + 1e-6)
        np.testing.assert_allclose(params[i].data, p, rtol=1e-12, atol=1e-14)


def test_sgd_with_momentum_and_weight_decay_matches_the_formula():
    params = fresh_params()
    run(SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01), params, 3)
    for i in range(2):
        p, b = START[i].copy(), 0.0
        for t in range(3):
            g = GRADS[t][i] + 0.01 * p
            b = 0.9 * b + g
            p = p - 0.1 * b
        np.testing.assert_allclose(params[i].data, p, rtol=1e-12, atol=1e-14)


def test_plain_sgd_and_a_parameter_without_gradient():
    params = fresh_params()
    optimizer = SGD(params, lr=0.5)
    params[0].grad = GRADS[0][0].copy()
    optimizer.step()                                   # params[1] has no grad: untouched
    np.testing.assert_allclose(params[0].data, START[0] - 0.5 * GRADS[0][0])
    np.testing.assert_array_equal(params[1].data, START[1])


def test_float32_stays_float32():
    param = Parameter(np.ones(3, dtype=np.float32))
    optimizer = AdamW([param], lr=0.1)
    param.grad = np.array([1.0, -2.0, 3.0])            # even a float64 gradient
    optimizer.step()
    assert param.data.dtype == np.float32 and optimizer.state["exp_avg/0"].dtype == np.float32


def test_a_schedule_sets_the_learning_rate_through_param_groups():
    params = fresh_params()
    optimizer = SGD(params, lr=1.0)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    params[0].grad = np.ones((3, 2))
    optimizer.step()
    np.testing.assert_array_equal(params[0].data, START[0])


def test_empty_parameter_list_is_an_error():
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([], lr=0.1)


def test_state_dict_resumes_exactly():
    params = fresh_params()
    uninterrupted = AdamW(params, lr=0.1, weight_decay=0.1)
    run(uninterrupted, params, 3)

    first = fresh_params()
    optimizer = AdamW(first, lr=0.1, weight_decay=0.1)
    run(optimizer, first, 2)
    buffer = io.BytesIO()
    np.savez(buffer, **optimizer.state_dict())          # flat and savez-able
    buffer.seek(0)
    saved = dict(np.load(buffer))
    assert int(saved["step"]) == 2 and set(saved) == {"step", "exp_avg/0", "exp_avg/1",
                                                      "exp_avg_sq/0", "exp_avg_sq/1"}
    resumed = [Parameter(p.data.copy()) for p in first]
    optimizer = AdamW(resumed, lr=0.1, weight_decay=0.1).load_state_dict(saved)
    optimizer.zero_grad()
    for param, grad in zip(resumed, GRADS[2]):
        param.grad = grad.copy()
    optimizer.step()
    for a, b in zip(resumed, params):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-14)


def test_load_state_dict_rejects_a_mismatch():
    optimizer = SGD(fresh_params(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"'momentum_buffer/1' has shape \(5,\).*\(4,\)"):
        optimizer.load_state_dict({"step": np.array(1), "momentum_buffer/1": np.zeros(5)})
    with pytest.raises(ValueError, match="2 parameters"):
        optimizer.load_state_dict({"step": np.array(1), "momentum_buffer/7": np.zeros(4)})


def test_weight_decay_groups_exclude_gains_biases_embeddings_and_logit_scale():
    config = CLIPConfig(embed_dim=8, image_resolution=8, vision_layers=1, vision_width=16,
                        vision_patch_size=4, context_length=5, vocab_size=12, transformer_width=8,
                        transformer_heads=2, transformer_layers=1, vision_heads=2)
    model = CLIP(config)
    decay, no_decay = param_groups_for_weight_decay(model, 0.2)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.2, 0.0)
    assert sorted(decay["names"]) == sorted([
        "text_projection", "visual.proj", "visual.conv1.weight",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.0.attn.out_proj.weight",
        "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "visual.transformer.resblocks.0.mlp.c_proj.weight",
        "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.out_proj.weight",
        "transformer.resblocks.0.mlp.c_fc.weight", "transformer.resblocks.0.mlp.c_proj.weight"])
    for name in ("logit_scale", "positional_embedding", "token_embedding.weight",
                 "visual.class_embedding", "visual.positional_embedding", "ln_final.weight",
                 "visual.ln_pre.bias", "transformer.resblocks.0.attn.in_proj_bias"):
        assert name in no_decay["names"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(model.parameters())
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.2), lr=1e-3)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.0]


def test_cosine_schedule_endpoints_and_shape():
    total, warmup, base, low = 100, 10, 0.5, 0.01
    lr = [cosine_schedule(step, total, warmup, base, min_lr=low) for step in range(total + 5)]
    assert lr[0] == 0.0
    assert math.isclose(lr[5], base / 2)
    assert math.isclose(lr[warmup], base)
    assert math.isclose(lr[55], (base + low) / 2)                   # halfway down the cosine
    assert math.isclose(lr[total], low) and lr[-1] == low
    assert all(a <= b for a, b in zip(lr[:warmup + 1], lr[1:warmup + 1]))     # rising
    assert all(a >= b for a, b in zip(lr[warmup:], lr[warmup + 1:]))          # then falling
    assert cosine_schedule(0, 10, 0, 1.0) == 1.0                    # no warm-up


def test_clip_grad_norm():
    params = fresh_params()
    shared = np.full((3, 2), 2.0)
    params[0].grad, params[1].grad = shared, np.full(4, 2.0)
    norm = clip_grad_norm(params, max_norm=1.0)
    assert math.isclose(norm, math.sqrt(10 * 4.0))
    clipped = math.sqrt(sum((p.grad ** 2).sum() for p in params))
    assert math.isclose(clipped, 1.0, rel_tol=1e-5)
    np.testing.assert_array_equal(shared, 2.0)                        # not modified in place
    params[0].grad = np.full((3, 2), 0.1)
    params[1].grad = None
    before = params[0].grad.copy()
    assert math.isclose(clip_grad_norm(params, max_norm=1.0), math.sqrt(6 * 0.01))
    np.testing.assert_array_equal(params[0].grad, before)            # under the limit: unchanged


@pytest.mark.parametrize("value, expected", [(5.0, math.log(100)), (-1.0, 0.0), (2.0, 2.0)])
def test_clamp_logit_scale(value, expected):
    class HasScale:
        logit_scale = Parameter(np.array(value, dtype=np.float32))

    model = HasScale()
    data = model.logit_scale.data
    clamp_logit_scale(model)
    assert model.logit_scale.data is data                            # in place
    assert math.isclose(float(data), expected, rel_tol=1e-6)
