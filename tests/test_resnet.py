"""The ResNet CLIP: equal to OpenAI's ModifiedResNet reference (fixtures/openai_tiny_rn) in
eval and train mode, loading of its files, BatchNorm buffers, and the RN model list."""
import numpy as np
import pytest
from conftest import FIXTURES, ctrl_c_during_step

import miniclip
from miniclip.autograd.tensor import no_grad
from miniclip.checkpoint import load_checkpoint, save_checkpoint
from miniclip.loss import clip_loss
from miniclip.config import CONFIGS, get_config
from miniclip.model import CLIP, config_from_state_dict
from miniclip.nn import BatchNorm2d
from miniclip.pretrained import CheckpointError, available_models, export_hf

RN = FIXTURES / "openai_tiny_rn"
ZERO_GRAD = "visual.attnpool.k_proj.bias"       # analytically zero (README): compare absolutely
# float32 vs float64 of OpenAI's own model (README table), ×10; gradients in float64 only
FLOAT32_LIMITS = {"image_features": 10 * 1.74e-06, "logits_per_image": 10 * 1.36e-06,
                  "loss": 10 * 3.30e-07, "buffers": 10 * 1.20e-07}


@pytest.fixture(scope="module")
def reference():
    path = RN / "reference.npz"
    if not path.exists():
        pytest.skip(f"{path} not found (set MINICLIP_FIXTURES)")
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


@pytest.fixture(scope="module")
def params(reference):
    return {name[len("param/"):]: value for name, value in reference.items() if name.startswith("param/")}


def rel(ours, theirs):
    """max |ours − theirs| / max |theirs|"""
    return float(np.abs(np.asarray(ours, dtype=np.float64) - theirs).max() / np.abs(theirs).max())


def run(model, reference):
    """One forward + backward on the reference inputs (in the model's current mode)."""
    model.zero_grad()
    logits_per_image, logits_per_text = model(reference["images"], reference["text"])
    loss = clip_loss(logits_per_image, logits_per_text)
    loss.backward()
    return logits_per_image, logits_per_text, loss


def test_config_inferred_like_build_model(params):
    config = config_from_state_dict(params)
    assert config.vision_layers == (1, 1, 1, 1) and config.is_resnet
    assert (config.vision_width, config.image_resolution, config.embed_dim) == (8, 64, 32)
    assert config.num_vision_heads == 4 and config.vision_patch_size is None
    model = CLIP(config)
    assert list(model.state_dict()) == list(params)          # keys and order, buffers included
    assert model.num_parameters() == 501821
    assert sum(1 for _ in model.named_buffers()) == 57


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_float64_equal_to_openai_reference(reference, params, mode):
    model = CLIP.from_state_dict(params, dtype=np.float64)
    model.train(mode == "train")
    pre = "train/" if mode == "train" else ""
    logits_per_image, logits_per_text, loss = run(model, reference)
    assert rel(logits_per_image.data, reference[pre + "logits_per_image"]) <= 1e-10
    assert rel(logits_per_text.data, reference[pre + "logits_per_image"].T) <= 1e-10
    assert rel(loss.data, reference[pre + "loss"]) <= 1e-10
    grads = {name: param.grad for name, param in model.named_parameters()}
    assert len(grads) == 96
    for name, grad in grads.items():
        expected = reference[pre + "grad/" + name]
        if name == ZERO_GRAD:
            assert np.abs(grad).max() <= 1e-15, name
        else:
            assert rel(grad, expected) <= 1e-8, f"{name}: {rel(grad, expected):.3g}"
    state = model.state_dict()
    if mode == "train":        # the running statistics after one train-mode forward
        for key in reference:
            if key.startswith("train/buffers/"):
                name = key[len("train/buffers/"):]
                assert rel(state[name], reference[key]) <= 1e-12, name
        stored = params["visual.bn1.num_batches_tracked"]
        assert state["visual.bn1.num_batches_tracked"] == stored + 1
    else:                      # eval mode touches nothing
        for name, value in params.items():
            if "running_" in name or "num_batches" in name:
                np.testing.assert_array_equal(state[name], value)
    with no_grad():            # the features, evaluated in eval mode
        if mode == "eval":
            assert rel(model.encode_image(reference["images"]).data, reference["image_features"]) <= 1e-10
            assert rel(model.encode_text(reference["text"]).data, reference["text_features"]) <= 1e-10


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_float32_within_readme_table(reference, params, mode):
    model = CLIP.from_state_dict(params, dtype=np.float32)
    model.train(mode == "train")
    pre = "train/" if mode == "train" else ""
    logits_per_image, _, loss = run(model, reference)
    assert logits_per_image.dtype == np.float32
    assert rel(logits_per_image.data, reference[pre + "logits_per_image"]) <= FLOAT32_LIMITS["logits_per_image"]
    assert rel(loss.data, reference[pre + "loss"]) <= FLOAT32_LIMITS["loss"]
    # gradients: the README's worst float32 tensor ×10 (a ReLU switched near zero would move a
    # gradient by that unit's whole contribution; none switches on these inputs, as in torch)
    worst_grad = max(rel(param.grad, reference[pre + "grad/" + name])
                     for name, param in model.named_parameters() if name != ZERO_GRAD)
    assert worst_grad <= 10 * (4.57e-06 if mode == "train" else 3.83e-06)
    if mode == "train":
        state = model.state_dict()
        worst = max(rel(state[k[len("train/buffers/"):]], reference[k])
                    for k in reference if k.startswith("train/buffers/"))
        assert worst <= FLOAT32_LIMITS["buffers"]
    else:
        with no_grad():
            assert rel(model.encode_image(reference["images"]).data,
                       reference["image_features"]) <= FLOAT32_LIMITS["image_features"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_load_jit_fp16_reproduces_fp16w_references(reference, dtype):
    model, preprocess = miniclip.load(str(RN / "jit_fp16.pt"), dtype=dtype)
    assert not model.training and model.config.is_resnet
    with no_grad():
        logits_per_image, _ = model(reference["images"], reference["text"])
        features = model.encode_image(reference["images"]).data
    limit = 1e-10 if dtype == np.float64 else FLOAT32_LIMITS["logits_per_image"]
    assert rel(logits_per_image.data, reference["fp16w/logits_per_image"]) <= limit
    assert rel(features, reference["fp16w/image_features"]) <= (1e-10 if dtype == np.float64
                                                                else FLOAT32_LIMITS["image_features"])
    # the fp16 weights are not the float32 ones: this is not the eval reference
    assert rel(logits_per_image.data, reference["logits_per_image"]) > 1e-4


def test_load_state_dict_pt_keeps_buffers(reference, params):
    model, _ = miniclip.load(str(RN / "state_dict.pt"), dtype=np.float64)
    state = model.state_dict()
    for name, value in params.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    with no_grad():
        logits_per_image, _ = model(reference["images"], reference["text"])
    assert rel(logits_per_image.data, reference["logits_per_image"]) <= 1e-10


def test_train_eval_switch_batch_norm():
    bn = BatchNorm2d(3)
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32) * 3 + 2
    bn.eval()
    np.testing.assert_allclose(bn(x).data, x / np.sqrt(1 + 1e-5), rtol=1e-6)   # running stats 0 / 1
    assert int(bn.num_batches_tracked) == 0
    bn.train()
    y = bn(x).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)            # batch statistics
    assert int(bn.num_batches_tracked) == 1
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_checkpoint_round_trip_keeps_batch_norm_buffers(tmp_path):
    model = CLIP("cifar-rn", seed=1).train()
    rng = np.random.default_rng(0)
    ids = np.zeros((4, 16), dtype=np.int64)
    ids[:, 3] = 999
    model(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), ids)           # moves the stats
    save_checkpoint(tmp_path / "c.npz", model, meta={})
    params = load_checkpoint(tmp_path / "c.npz")["params"]
    assert params["visual.bn1.num_batches_tracked"] == 1
    restored = CLIP("cifar-rn", seed=2)
    restored.load_state_dict(params)
    for (name, a), (_, b) in zip(model.state_dict().items(), restored.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_model_list_and_configs():
    assert available_models() == ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                  "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    for name in ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64"):
        assert get_config(name).is_resnet
    assert get_config("RN50").num_vision_heads == 32           # 64 · 32 // 64, as OpenAI infers
    assert CONFIGS["cifar-rn"].vision_layers == (1, 1, 1, 1)


def test_rn50_shapes_match_openai():
    """The RN50 architecture (built, not downloaded) has the parameter count OpenAI's
    notebook prints for the released RN50: 102,007,137."""
    assert CLIP("RN50").num_parameters() == 102007137


def test_export_hf_refuses_resnet(tmp_path, params):
    with pytest.raises(CheckpointError, match="ResNet"):
        export_hf(params, tmp_path / "hf")
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_bad_resnet_config_errors():
    import dataclasses
    with pytest.raises(ValueError, match="4 positive integers"):
        dataclasses.replace(CONFIGS["cifar-rn"], vision_layers=(1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 32"):
        dataclasses.replace(CONFIGS["cifar-rn"], image_resolution=48)


def _run_config(tmp_path, **overrides):
    from miniclip.train import TrainConfig
    settings = dict(dataset="shapes", model="micro-rn", steps=6, batch_size=16, lr=1e-3,
                    out=str(tmp_path), name="run", train_size=256, log_every=1,
                    eval_every=1000, checkpoint_every=1000, device="cpu", eval_images=64)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_resnet_trains_on_shapes_and_resumes_exactly(tmp_path, monkeypatch):
    """BatchNorm buffers travel in the checkpoint: a stopped and resumed run equals an
    uninterrupted one, loss for loss and buffer for buffer."""
    import json
    from miniclip import train as train_module
    from miniclip.checkpoint import model_from_checkpoint

    def losses(run_dir):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if "loss" in r}

    import dataclasses
    real_make_task = train_module.make_task

    def quick_task(*args, **kwargs):   # the final evaluation on 64 images: this is about resume
        task = real_make_task(*args, **kwargs)
        return dataclasses.replace(task, evaluate=lambda m, t, limit=None: task.evaluate(m, t, 64))
    monkeypatch.setattr(train_module, "make_task", quick_task)
    from miniclip.run import Run
    monkeypatch.setattr(Run, "_plots", lambda *args: None)
    summary = train_module.train(_run_config(tmp_path / "a"), progress=False)
    assert summary["steps"] == 6 and 0 <= summary["zero_shot_accuracy"] <= 1
    undo = ctrl_c_during_step(monkeypatch, 3)
    assert train_module.train(_run_config(tmp_path / "b"), progress=False)["interrupted"]
    undo()
    train_module.train(_run_config(tmp_path / "b"), resume=True, progress=False)
    assert losses(tmp_path / "a" / "run") == losses(tmp_path / "b" / "run")
    a, _, _ = model_from_checkpoint(tmp_path / "a" / "run" / "checkpoint.npz")
    b, _, _ = model_from_checkpoint(tmp_path / "b" / "run" / "checkpoint.npz")
    assert a.config.is_resnet and not a.training
    assert int(a.state_dict()["visual.bn1.num_batches_tracked"]) == 6      # one per train step
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_evaluation_during_training_leaves_batch_norm_alone(tmp_path):
    """The periodic evaluation runs in eval mode: it neither moves the running statistics
    nor counts batches, and training continues in train mode."""
    from miniclip.run import evaluating
    model = CLIP("micro-rn").train()
    before = model.state_dict()
    ids = np.zeros((4, 16), dtype=np.int64)
    ids[:, 2] = 999
    with evaluating(model), no_grad():
        assert not model.visual.bn1.training
        model(np.random.default_rng(0).standard_normal((4, 3, 32, 32)), ids)
    assert model.training and model.visual.layer1[0].bn3.training
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
