"""nn: Module bookkeeping (names, order, state dicts, devices, dtypes) and the layers."""
import math

import numpy as np
import pytest
from conftest import shared_file

import miniclip.functional as F
from miniclip import backend
from miniclip.autograd import gradcheck
from miniclip.autograd.tensor import Tensor, no_grad
from miniclip.config import CLIPConfig
from miniclip.model import CLIP
from miniclip.nn import (Embedding, LayerNorm, Linear, Module, ModuleList, MultiheadAttention,
                         Parameter, ResidualAttentionBlock, Transformer)

RNG = np.random.default_rng(0)


class Toy(Module):
    def __init__(self):
        super().__init__()
        self.first = Linear(3, 4, rng=RNG)
        self.scale = Parameter(np.ones(4, dtype=np.float32))
        self.blocks = ModuleList([LayerNorm(4), LayerNorm(4)])
        self.offset = Parameter(np.zeros((), dtype=np.float32))

    def forward(self, x):
        x = self.first(x) * self.scale
        for block in self.blocks:
            x = block(x)
        return x + self.offset


def small_clip(seed=0):
    config = CLIPConfig(embed_dim=8, image_resolution=8, vision_layers=2, vision_width=16,
                        vision_patch_size=4, context_length=5, vocab_size=12, transformer_width=8,
                        transformer_heads=2, transformer_layers=2, vision_heads=2)
    return CLIP(config, seed=seed)


# ---- Module bookkeeping ---------------------------------------------------------------------

def test_names_and_order_own_parameters_first_then_submodules():
    names = [name for name, _ in Toy().named_parameters()]
    assert names == ["scale", "offset", "first.weight", "first.bias",
                     "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]
    toy = Toy()
    assert toy.num_parameters() == 4 + 1 + 12 + 4 + 4 * 4
    assert len(toy.parameters()) == 8 and all(p.requires_grad for p in toy.parameters())


def test_reassigning_an_attribute_replaces_its_registration():
    toy = Toy()
    toy.scale = None                             # no longer a parameter
    toy.first = Linear(3, 4, bias=False)
    assert [n for n, _ in toy.named_parameters()][:2] == ["offset", "first.weight"]


def test_forgetting_super_init_is_a_clear_error():
    class Broken(Module):
        def __init__(self):
            self.weight = Parameter(np.ones(2))

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) first in Broken"):
        Broken()


def test_clip_parameter_names_are_openai_s(tmp_path):
    path = shared_file("fixtures", "openai_tiny", "reference.npz")
    with np.load(path) as archive:
        keys = [name[len("param/"):] for name in archive.files if name.startswith("param/")]
        shapes = {name: archive["param/" + name].shape for name in keys}
    config = CLIPConfig(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128,
                        vision_patch_size=8, context_length=16, vocab_size=1000,
                        transformer_width=64, transformer_heads=1, transformer_layers=2)
    named = list(CLIP(config).named_parameters())
    assert [name for name, _ in named] == keys                 # same names, same order
    assert {name: p.shape for name, p in named} == shapes


def test_state_dict_round_trip_and_copies():
    model, other = small_clip(seed=0), small_clip(seed=1)
    state = model.state_dict()
    assert list(state) == [name for name, _ in model.named_parameters()]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["visual.proj"][...] = 7.0                            # a copy: the model keeps its values
    assert not np.any(model.visual.proj.data == 7.0)
    state = model.state_dict()
    other.load_state_dict(state)
    for (name, a), (_, b) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    images = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ids = np.array([[10, 3, 11, 0, 0], [10, 4, 5, 6, 11]])
    with no_grad():
        np.testing.assert_array_equal(model(images, ids)[0].data, other(images, ids)[0].data)


def test_load_state_dict_casts_to_the_parameter_dtype():
    toy = Toy()
    state = {name: np.full(value.shape, 0.5, dtype=np.float64) for name, value in toy.state_dict().items()}
    state["first.weight"] = Tensor(np.full((4, 3), 2.0))         # a Tensor works too
    toy.load_state_dict(state)
    assert all(p.dtype == np.float32 for p in toy.parameters())
    assert toy.first.weight.data[0, 0] == 2.0 and toy.offset.data == 0.5


def test_load_state_dict_strict_errors_name_key_and_shapes():
    toy = Toy()
    state = toy.state_dict()
    missing = dict(state)
    del missing["blocks.1.bias"]
    with pytest.raises(ValueError, match=r"missing key 'blocks.1.bias' \(expected shape \(4,\)\)"):
        toy.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected key 'blocks.2.bias' \(shape \(4,\)\)"):
        toy.load_state_dict(dict(state, **{"blocks.2.bias": np.zeros(4)}))
    with pytest.raises(ValueError, match=r"'first.weight'.*\(3, 4\).*\(4, 3\)"):
        toy.load_state_dict(dict(state, **{"first.weight": np.zeros((3, 4))}))
    # non-strict: missing and unexpected keys are allowed, a wrong shape still is not
    toy.load_state_dict({"scale": np.full(4, 3.0), "extra": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(toy.scale.data, 3.0)
    with pytest.raises(ValueError, match="wrong shape"):
        toy.load_state_dict({"scale": np.zeros(5)}, strict=False)


def test_astype_and_to_work_in_place_and_return_self():
    model = small_clip()
    logits32 = model(np.ones((1, 3, 8, 8)), np.array([[10, 11, 0, 0, 0]]))[0]
    logits32.backward(np.ones((1, 1), dtype=np.float32))
    assert model.astype(np.float64) is model
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    assert model.transformer.attn_mask.dtype == np.float64       # the buffer follows
    assert model.visual.transformer.attn_mask is None
    logits64 = model(np.ones((1, 3, 8, 8)), np.array([[10, 11, 0, 0, 0]]))[0]
    assert logits64.dtype == np.float64
    np.testing.assert_allclose(logits64.data, logits32.data, rtol=1e-5)
    assert model.to("cpu") is model and model.device == "cpu"
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="cuda"):
            model.to("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        model.to("tpu")


@pytest.mark.gpu
def test_to_cuda_and_back():
    if not backend.gpu_available():
        pytest.skip("CuPy with a CUDA GPU is not available")
    model = small_clip()
    images, ids = np.ones((2, 3, 8, 8)), np.array([[10, 11, 0, 0, 0], [10, 3, 4, 11, 0]])
    with no_grad():
        expected = model(images, ids)[0].data
        model.to("cuda")
        assert model.device == "cuda" and model.transformer.attn_mask.__class__.__module__.startswith("cupy")
        on_gpu = model(images, ids)[0].numpy()
    np.testing.assert_allclose(on_gpu, expected, rtol=1e-4, atol=1e-5)
    model.to("cpu")
    assert all(isinstance(p.data, np.ndarray) for p in model.parameters())


def test_train_eval_and_zero_grad():
    toy = Toy()
    assert toy.training and toy.blocks[1].training
    assert toy.eval() is toy and not toy.blocks[1].training
    toy.train()
    assert toy.blocks[0].training
    toy(Tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    assert all(p.grad is not None for p in toy.parameters())
    toy.zero_grad()
    assert all(p.grad is None for p in toy.parameters())


def test_repr_is_a_readable_tree():
    text = repr(small_clip())
    assert text.startswith("CLIP(")
    assert "(visual): VisionTransformer(" in text
    assert "(resblocks): ModuleList(" in text
    assert "(0): ResidualAttentionBlock(" in text
    assert "(c_fc): Linear(in=8, out=32, bias=True)" in text
    assert "(attn): MultiheadAttention(width=16, heads=2" in text
    assert "(logit_scale): Parameter()" in text
    assert "(class_embedding): Parameter(16,)" in text
    assert "Parameter(" in repr(Parameter(np.ones(2)))


# ---- layers ----------------------------------------------------------------------------------

def test_linear_layer_norm_embedding():
    x = RNG.standard_normal((2, 3, 4))
    linear = Linear(4, 5, rng=RNG).astype(np.float64)
    bound = 1 / math.sqrt(4)
    assert np.abs(linear.weight.data).max() <= bound and linear.weight.shape == (5, 4)
    np.testing.assert_allclose(linear(x).data, x @ linear.weight.data.T + linear.bias.data, rtol=1e-12)
    ln = LayerNorm(4).astype(np.float64)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln(x).data, expected, rtol=1e-10, atol=1e-12)
    emb = Embedding(7, 3, rng=RNG)
    ids = np.array([[0, 6], [6, 2]])
    np.testing.assert_array_equal(emb(ids).data, emb.weight.data[ids])


def attention_by_loops(x, in_w, in_b, out_w, out_b, heads, mask=None):
    """Per sequence, per head, per query: the textbook formula."""
    N, T, W = x.shape
    D = W // heads
    out = np.zeros((N, T, W))
    for n in range(N):
        q = x[n] @ in_w[:W].T + in_b[:W]
        k = x[n] @ in_w[W:2 * W].T + in_b[W:2 * W]
        v = x[n] @ in_w[2 * W:].T + in_b[2 * W:]
        for h in range(heads):
            cols = slice(h * D, (h + 1) * D)
            for t in range(T):
                scores = np.array([q[t, cols] @ k[s, cols] for s in range(T)]) / math.sqrt(D)
                if mask is not None:
                    scores = scores + mask[t]
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                out[n, t, cols] = weights @ v[:, cols]
    return out @ out_w.T + out_b


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_multihead_attention_equals_a_per_head_loop(causal):
    N, T, W, H = 2, 5, 12, 3
    attn = MultiheadAttention(W, H, rng=RNG).astype(np.float64)
    attn.in_proj_bias.data[...] = RNG.standard_normal(3 * W)     # not the zero default
    attn.out_proj.bias.data[...] = RNG.standard_normal(W)
    x = RNG.standard_normal((N, T, W))
    mask = np.triu(np.full((T, T), -np.inf), k=1) if causal else None
    expected = attention_by_loops(x, attn.in_proj_weight.data, attn.in_proj_bias.data,
                                  attn.out_proj.weight.data, attn.out_proj.bias.data, H, mask)
    np.testing.assert_allclose(attn(Tensor(x), mask=mask).data, expected, rtol=1e-10, atol=1e-12)


def test_multihead_attention_needs_heads_that_divide_the_width():
    with pytest.raises(ValueError, match="does not split into 5 heads"):
        MultiheadAttention(12, 5)


def test_residual_block_gradcheck():
    W, T = 8, 3
    block = ResidualAttentionBlock(W, 2, rng=RNG).astype(np.float64)
    for param in block.parameters():                              # nothing at a default value
        param.data[...] += 0.1 * RNG.standard_normal(param.shape)
    x = Tensor(RNG.standard_normal((2, T, W)), requires_grad=True)
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    # the parameters are inputs too: gradcheck nudges them in place, the block uses them
    assert gradcheck(lambda x, *params: block(x, mask=mask), x, *block.parameters(),
                     atol=1e-7, rtol=1e-6)


def test_transformer_runs_its_blocks_in_order():
    W = 8
    model = Transformer(W, 3, 2, rng=RNG).astype(np.float64)
    x = Tensor(RNG.standard_normal((2, 4, W)))
    expected = x
    for block in model.resblocks:
        expected = block(expected)
    np.testing.assert_array_equal(model(x).data, expected.data)
    assert [n for n, _ in model.named_parameters()][0] == "resblocks.0.attn.in_proj_weight"
    assert len(model.resblocks) == 3


def test_quick_gelu_module():
    from miniclip.nn import QuickGELU
    x = RNG.standard_normal(5)
    np.testing.assert_allclose(QuickGELU()(x).data, x / (1 + np.exp(-1.702 * x)), rtol=1e-12)
    np.testing.assert_array_equal(QuickGELU()(x).data, F.quick_gelu(x).data)


def test_parameter_gradients_are_arrays_of_their_own():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(3))
    scale = Parameter(np.array(0.5))
    ((a + b) * scale.exp()).sum().backward()
    assert a.grad is not b.grad and isinstance(scale.grad, np.ndarray)
    a.grad *= 2                                  # e.g. clipping in place
    np.testing.assert_allclose(b.grad, np.exp(0.5))


def test_buffers_are_cast_not_saved_and_stay_buffers_when_reassigned():
    model = Transformer(8, 1, 2, attn_mask=np.zeros((3, 3), dtype=np.float32), rng=RNG)
    model.attn_mask = np.ones((3, 3), dtype=np.float32)
    model.astype(np.float64)
    assert model.attn_mask.dtype == np.float64 and model.attn_mask[0, 0] == 1
    assert not any("mask" in name for name in model.state_dict())
