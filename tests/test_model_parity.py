"""The CLIP model: equal to OpenAI's reference (fixtures/openai_tiny), and the
pieces that make it CLIP: patch embedding, causal mask, pooling, learning."""
import dataclasses
import math
import time

import numpy as np
import pytest
from conftest import shared_file

from miniclip.autograd.tensor import Tensor, no_grad
from miniclip.backend import to_numpy
from miniclip.loss import clip_loss
from miniclip.config import CLIPConfig, CONFIGS, get_config
from miniclip.model import CLIP, config_from_state_dict
from miniclip.optim import AdamW, clamp_logit_scale

# float32 vs float64 differences of OpenAI's own model (fixture README table), ×10
FLOAT32_LIMITS = {"image_features": 10 * 4.10e-07, "text_features": 10 * 5.54e-07,
                  "logits_per_image": 10 * 6.22e-07, "logits_per_text": 10 * 6.22e-07,
                  "loss": 10 * 3.43e-07, "grad": 10 * 4.09e-06}
FLOAT64_LIMITS = {"image_features": 1e-10, "text_features": 1e-10, "logits_per_image": 1e-10,
                  "logits_per_text": 1e-10, "loss": 1e-10, "grad": 1e-8}


@pytest.fixture(scope="module")
def reference():
    path = shared_file("fixtures", "openai_tiny", "reference.npz")
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.fixture(scope="module")
def params(reference):
    return {name[len("param/"):]: value for name, value in reference.items() if name.startswith("param/")}


def relative_difference(ours, theirs):
    """max |ours − theirs| / max |theirs|"""
    ours = np.asarray(ours, dtype=np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def run_reference_inputs(model, reference):
    """Features, logits, loss and every parameter's gradient, as float64 NumPy arrays."""
    model.zero_grad()
    logits_per_image, logits_per_text = model(reference["images"], reference["text"])
    loss = clip_loss(logits_per_image, logits_per_text)
    loss.backward()
    with no_grad():
        out = {"image_features": model.encode_image(reference["images"]).data,
               "text_features": model.encode_text(reference["text"]).data}
    out.update(logits_per_image=logits_per_image.data, logits_per_text=logits_per_text.data,
               loss=loss.data)
    out = {name: to_numpy(value) for name, value in out.items()}
    grads = {name: None if param.grad is None else to_numpy(param.grad)
             for name, param in model.named_parameters()}
    return out, grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_equal_to_openai_reference(reference, params, dtype, device):
    model = CLIP.from_state_dict(params, dtype=dtype).to(device)
    out, grads = run_reference_inputs(model, reference)
    limits = FLOAT64_LIMITS if dtype == np.float64 else FLOAT32_LIMITS
    seen = {}
    for name, value in out.items():
        assert value.dtype == dtype, f"{name} is {value.dtype} in a {np.dtype(dtype)} model"
        seen[name] = relative_difference(value, reference[name])
    assert len(grads) == 62 and set(grads) == {n[len("grad/"):] for n in reference if n.startswith("grad/")}
    grad_diffs = {}
    for name, grad in grads.items():
        assert grad is not None and np.asarray(grad).dtype == dtype, name
        assert np.shape(grad) == reference["grad/" + name].shape, name
        grad_diffs[name] = relative_difference(grad, reference["grad/" + name])
    worst = max(grad_diffs, key=grad_diffs.get)
    seen["grad"] = grad_diffs[worst]
    print(f"\n{np.dtype(dtype)}: largest relative differences from OpenAI's float64 reference:")
    for name, diff in seen.items():
        print(f"  {name:18s} {diff:.3g}" + (f"  ({worst})" if name == "grad" else ""))
    for name, diff in seen.items():
        assert diff <= limits[name], f"{name}: relative difference {diff:.3g} > {limits[name]:.3g}"


def test_the_config_is_inferred_like_build_model(params):
    config = config_from_state_dict(params)
    assert config == CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                                vision_patch_size=8, context_length=16, vocab_size=1000,
                                transformer_width=64, transformer_heads=1, transformer_layers=2)
    assert config.num_vision_heads == 2
    model = CLIP.from_state_dict(params)
    assert model.num_parameters() == 595201                 # the fixture README's count
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert [name for name, _ in model.named_parameters()] == list(params)   # OpenAI's order


def test_openai_extra_keys_are_ignored(params):
    state = dict(params, input_resolution=np.array(32), context_length=np.array(16),
                 vocab_size=np.array(1000))
    model = CLIP.from_state_dict(state, dtype=np.float64)
    np.testing.assert_array_equal(model.visual.proj.data, params["visual.proj"])


def test_from_state_dict_names_a_missing_key(params):
    state = dict(params)
    del state["visual.transformer.resblocks.0.ln_2.bias"]
    with pytest.raises(ValueError, match=r"missing key 'visual.transformer.resblocks.0.ln_2.bias'.*\(128,\)"):
        CLIP.from_state_dict(state)


def test_from_state_dict_names_an_unexpected_key(params):
    state = dict(params, **{"visual.extra_head.weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match=r"unexpected key 'visual.extra_head.weight' \(shape \(3, 4\)\)"):
        CLIP.from_state_dict(state)


def test_from_state_dict_names_a_wrong_shape_with_both_shapes(params):
    state = dict(params, **{"transformer.resblocks.1.mlp.c_fc.weight": np.zeros((256, 63))})
    with pytest.raises(ValueError) as info:
        CLIP.from_state_dict(state)
    message = str(info.value)
    assert "'transformer.resblocks.1.mlp.c_fc.weight'" in message
    assert "(256, 63)" in message and "(256, 64)" in message


def test_from_state_dict_refuses_incomplete_resnet_and_foreign_names(params):
    with pytest.raises(KeyError, match="visual.attnpool.positional_embedding"):   # a ResNet key, no pool
        CLIP.from_state_dict(dict(params, **{"visual.layer1.0.conv1.weight": np.zeros(1)}))
    with pytest.raises(KeyError, match="text_projection"):
        CLIP.from_state_dict({k: v for k, v in params.items() if k != "text_projection"})


# ---- the pieces ---------------------------------------------------------------------------

def small_config(**changes):
    config = CLIPConfig(embed_dim=16, image_resolution=8, vision_layers=1, vision_width=16,
                        vision_patch_size=4, context_length=6, vocab_size=20, transformer_width=16,
                        transformer_heads=2, transformer_layers=2, vision_heads=2)
    return dataclasses.replace(config, **changes)


def token_rows(rng, n, context, vocab, ends):
    """Rows like tokenize() makes: start (vocab−2), random ids, end (vocab−1, the largest)
    at `ends`, then zeros."""
    ids = rng.integers(1, vocab - 2, (n, context))
    ids[:, 0] = vocab - 2
    ids[np.arange(n), ends] = vocab - 1
    ids[np.arange(context)[None, :] > np.asarray(ends)[:, None]] = 0
    return ids


def test_patch_embedding_is_a_stride_p_convolution():
    model = CLIP(small_config(image_resolution=12, vision_patch_size=3), seed=1).astype(np.float64)
    conv = model.visual.conv1
    images = np.random.default_rng(0).standard_normal((2, 3, 12, 12))
    weight = conv.weight.data                                        # (W, 3, P, P)
    W, _, P, _ = weight.shape
    G = 12 // P
    expected = np.zeros((2, W, G, G))                                # Conv2d(stride P), by loops
    for n in range(2):
        for w in range(W):
            for gy in range(G):
                for gx in range(G):
                    patch = images[n, :, gy * P:(gy + 1) * P, gx * P:(gx + 1) * P]
                    expected[n, w, gy, gx] = (patch * weight[w]).sum()
    ours = conv(Tensor(images)).data                                 # (N, G·G, W)
    # OpenAI: conv -> (N, W, G, G) -> reshape (N, W, G²) -> permute (N, G², W)
    np.testing.assert_allclose(ours, expected.reshape(2, W, G * G).transpose(0, 2, 1), rtol=1e-12, atol=1e-12)


def test_text_features_pool_at_the_largest_id():
    config = small_config()
    model = CLIP(config, seed=2).astype(np.float64)
    ids = token_rows(np.random.default_rng(1), 3, 6, 20, ends=[2, 5, 3])
    with no_grad():
        x = model.token_embedding(ids) + model.positional_embedding
        x = model.ln_final(model.transformer(x)).data                 # every position: (N, C, W)
        features = model.encode_text(ids).data
    expected = x[np.arange(3), [2, 5, 3]] @ model.text_projection.data
    np.testing.assert_allclose(features, expected, rtol=1e-12, atol=1e-12)
    last = x[:, -1] @ model.text_projection.data                      # not the last position
    assert np.abs(features[0] - last[0]).max() > 1e-3


def test_the_text_transformer_is_causal():
    config = small_config()
    model = CLIP(config, seed=3).astype(np.float64)
    ids = token_rows(np.random.default_rng(2), 2, 6, 20, ends=[5, 5])

    def hidden(ids):
        with no_grad():
            return model.transformer(model.token_embedding(ids) + model.positional_embedding).data

    changed = ids.copy()
    changed[:, 3] = (changed[:, 3] % 17) + 1                          # another token at position 3
    before, after = hidden(ids), hidden(changed)
    np.testing.assert_array_equal(before[:, :3], after[:, :3])        # earlier positions: unchanged
    assert np.abs(before[:, 3:] - after[:, 3:]).min(axis=-1).max() > 0   # later ones see it
    mask = model.transformer.attn_mask
    assert mask.dtype == np.float64 and np.isneginf(mask[0, 1]) and mask[1, 0] == 0 == mask[1, 1]


def test_inputs_are_checked_with_a_fix_in_the_message():
    model = CLIP(small_config(), seed=0)
    with pytest.raises(ValueError, match="context_length=6"):
        model.encode_text(np.zeros((2, 7), dtype=np.int64))
    with pytest.raises(ValueError, match="vocabulary of 20"):
        model.encode_text(np.full((2, 6), 20))
    with pytest.raises(ValueError, match=r"\(N, 3, 8, 8\)"):
        model.encode_image(np.zeros((2, 3, 16, 16), dtype=np.float32))


def test_forward_gives_scaled_cosine_similarities_and_keeps_float32():
    config = small_config()
    model = CLIP(config, seed=4)
    rng = np.random.default_rng(3)
    images = rng.standard_normal((3, 3, 8, 8))                        # float64 in, cast like OpenAI
    ids = token_rows(rng, 3, 6, 20, ends=[1, 4, 5])
    logits_per_image, logits_per_text = model(images, ids)
    assert logits_per_image.dtype == np.float32 and logits_per_image.shape == (3, 3)
    img, txt = model.encode_image(images).data, model.encode_text(ids).data
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    np.testing.assert_allclose(logits_per_image.data, (1 / 0.07) * img @ txt.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits_per_text.data, logits_per_image.data.T)


def test_initialisation_is_openai_s_and_seeded():
    config = dataclasses.replace(get_config("tiny"), vocab_size=2000)
    model = CLIP(config, seed=0)
    assert math.isclose(float(model.logit_scale.data), math.log(1 / 0.07), rel_tol=1e-6)
    assert math.isclose(model.token_embedding.weight.data.std(), 0.02, rel_tol=0.05)
    assert math.isclose(model.positional_embedding.data.std(), 0.01, rel_tol=0.1)
    W, L = config.transformer_width, config.transformer_layers          # 128, 2
    block = model.transformer.resblocks[0]
    assert math.isclose(block.attn.in_proj_weight.data.std(), W ** -0.5, rel_tol=0.05)
    assert math.isclose(block.mlp.c_proj.weight.data.std(), W ** -0.5 * (2 * L) ** -0.5, rel_tol=0.05)
    assert math.isclose(block.mlp.c_fc.weight.data.std(), (2 * W) ** -0.5, rel_tol=0.05)
    assert math.isclose(model.visual.proj.data.std(), W ** -0.5, rel_tol=0.1)
    np.testing.assert_array_equal(block.ln_1.weight.data, 1)
    np.testing.assert_array_equal(block.attn.in_proj_bias.data, 0)
    assert CLIP("tiny").config == get_config("tiny")
    same, other = CLIP(config, seed=0), CLIP(config, seed=1)
    np.testing.assert_array_equal(same.visual.conv1.weight.data, model.visual.conv1.weight.data)
    assert not np.array_equal(other.visual.conv1.weight.data, model.visual.conv1.weight.data)


def test_named_configs():
    b32 = get_config("ViT-B/32")
    assert (b32.embed_dim, b32.image_resolution, b32.vision_layers, b32.vision_width,
            b32.vision_patch_size, b32.context_length, b32.vocab_size, b32.transformer_width,
            b32.transformer_heads, b32.transformer_layers) == (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
    assert get_config("ViT-B/16").vision_patch_size == 16
    l14 = get_config("ViT-L/14")
    assert (l14.embed_dim, l14.vision_layers, l14.vision_width, l14.vision_patch_size,
            l14.transformer_width, l14.transformer_heads,
            l14.num_vision_heads) == (768, 24, 1024, 14, 768, 12, 16)
    assert get_config("ViT-L/14@336px").image_resolution == 336
    with pytest.raises(KeyError, match="ViT-B/32.*tiny"):
        get_config("ViT-H/14")
    tiny = dataclasses.replace(get_config("tiny"), vocab_size=500, context_length=20)
    assert (tiny.vocab_size, tiny.context_length) == (500, 20)
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        dataclasses.replace(tiny, image_resolution=30)
    with pytest.raises(ValueError, match="heads"):
        dataclasses.replace(tiny, transformer_heads=3)


@pytest.mark.parametrize("name", ["micro", "tiny", "small"])
def test_from_scratch_configs_survive_a_state_dict_round_trip(name):
    model = CLIP(CONFIGS[name], seed=0)
    again = CLIP.from_state_dict(model.state_dict())
    assert again.config == model.config                     # heads = width // 64, as inferred
    rng = np.random.default_rng(0)
    images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    ids = token_rows(rng, 2, model.config.context_length, model.config.vocab_size, ends=[3, 7])
    with no_grad():
        np.testing.assert_array_equal(model(images, ids)[0].data, again(images, ids)[0].data)


def test_a_tiny_clip_learns_16_pairs():
    config = CLIPConfig(embed_dim=32, image_resolution=16, vision_layers=2, vision_width=32,
                        vision_patch_size=4, context_length=8, vocab_size=50, transformer_width=32,
                        transformer_heads=2, transformer_layers=2, vision_heads=2)
    model = CLIP(config, seed=0)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    ids = token_rows(rng, 16, 8, 50, ends=rng.integers(3, 8, 16))
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    start, losses = time.perf_counter(), []
    for step in range(300):
        loss = clip_loss(*model(images, ids))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clamp_logit_scale(model)
        assert 0 <= float(model.logit_scale.data) <= math.log(100) + 1e-6
        losses.append(float(loss.data))
        if losses[-1] < 0.01:
            break
    print(f"\nloss {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses)} steps, "
          f"{time.perf_counter() - start:.1f} s")
    assert losses[0] > 2.0                                     # ≈ ln 16 = 2.77 at the start
    assert min(losses[-5:]) < 0.05
