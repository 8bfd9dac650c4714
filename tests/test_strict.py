"""The strict test device (miniclip/strict.py): CuPy's refusals without a GPU, and the
library running under it — a training run, resume, evaluation, loading the fixtures —
with its host<->device traffic per training step counted."""
import json

import numpy as np
import pytest
from conftest import ctrl_c_during_step, shared_file

import miniclip
import miniclip.functional as F
from miniclip import Tensor, backend, no_grad, strict
from miniclip import train as train_module
from miniclip.autograd import nn_ops, switch
from miniclip.checkpoint import model_from_checkpoint
from miniclip.evaluate import encode_images, zero_shot_accuracy, zero_shot_classifier
from miniclip.train import TrainConfig, train

HOST = np.arange(6.0).reshape(2, 3)


def device_array():
    return strict.asarray(HOST)


# ---- the array: CuPy's manners -----------------------------------------------------------

def test_implicit_conversion_to_numpy_is_refused_with_cupy_s_message():
    x = device_array()
    for convert in (np.asarray, np.array, lambda a: np.testing.assert_allclose(a, HOST)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(x)


@pytest.mark.parametrize("mix", [
    lambda x: x + np.ones(3),
    lambda x: np.ones(3) * x,
    lambda x: x @ np.ones((3, 2)),
    lambda x: np.concatenate([x, np.ones((1, 3))]),
    lambda x: strict.where(x > 1, x, np.zeros(3)),
    lambda x: np.zeros((2, 3)) + x,                       # np.zeros where xp.zeros was meant
    lambda x: np.eye(3)[strict.asarray([0, 2])],          # a host table indexed on the device
    lambda x: strict.exp(np.ones(3)),                     # a device function given a host array
    lambda x: x + np.array(2.0),                          # a 0-d host array is a host array too
], ids=["add", "rmul", "matmul", "concatenate", "where", "zeros", "eye_index", "device_fn", "0-d"])
def test_host_arrays_mixed_into_device_work_are_refused(mix):
    with pytest.raises(TypeError):
        mix(device_array())


def test_numpy_calls_on_device_arrays_stay_on_the_device():
    x = device_array()
    results = [np.exp(x), np.concatenate([x, x]), x.sum(), x[0, 1], x.T, x * np.float32(2),
               2.0 - x, strict.zeros(3), strict.random.default_rng(0).standard_normal(2)]
    assert all(isinstance(r, strict.ndarray) for r in results)
    np.testing.assert_allclose(np.exp(x).get(), np.exp(HOST))
    assert backend.get_array_module(x) is strict and backend.device_of(x) == "strict"


def test_every_crossing_is_counted():
    x = device_array()
    with strict.counting(trace=True) as crossings:
        y = x * 2.0 + np.float32(1)                       # scalars: kernel arguments, free
        z = strict.add.at(y, strict.asarray([0, 0]), 1.0)  # one upload (the index list)
        assert z is None
    assert (crossings.h2d, crossings.d2h, crossings.sync) == (1, 0, 0)
    with strict.counting() as crossings:
        float(y.sum()), y.max().item(), bool(y[0, 0] > 0), int(y.argmax())   # four reads
        backend.to_numpy(y)                                                    # one download
        backend.to_device(HOST, "strict")                                      # one upload
        y[np.array([0])]                                   # a host index: CuPy uploads it
    assert (crossings.h2d, crossings.d2h, crossings.sync) == (2, 1, 4)


def test_the_strict_device_by_name_and_by_environment(monkeypatch):
    monkeypatch.setenv("MINICLIP_DEVICE", "strict")
    assert backend.default_device() == "strict" and backend.xp_for("strict") is strict
    x = backend.to_device(HOST, "strict")
    back = backend.to_device(x, "cpu")
    assert isinstance(back, np.ndarray) and back is not HOST and np.array_equal(back, HOST)
    HOST_COPY = HOST.copy()
    x[0, 0] = 99.0                                        # the device copy is its own
    assert np.array_equal(HOST, HOST_COPY)
    t = Tensor(HOST).to("strict")
    assert t.device == "strict" and isinstance(t.numpy(), np.ndarray)


# ---- planted bugs: what strict is for -----------------------------------------------------

def test_a_planted_implicit_conversion_is_caught(monkeypatch):
    """A LayerNorm that 'makes sure' its input is an array with np.asarray: harmless on
    NumPy, a TypeError on CuPy — and on the strict device. (The plain tier's LayerNorm:
    the one planted in.)"""
    monkeypatch.setattr(switch, "_plain_asked", True)
    model = miniclip.CLIP("micro")
    images = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    real_forward = nn_ops.LayerNorm.forward

    def planted(ctx, x, weight, bias, eps=1e-5):
        return real_forward(ctx, np.asarray(x), weight, bias, eps)

    expected = model.encode_image(images).numpy()
    monkeypatch.setattr(nn_ops.LayerNorm, "forward", staticmethod(planted))
    np.testing.assert_array_equal(model.encode_image(images).numpy(), expected)   # NumPy: fine
    model.to("strict")
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        model.encode_image(images)


def test_a_planted_host_array_is_caught(monkeypatch):
    """`np.` written where `xp.` was meant, in the loss: the one-hot table is made on the host."""
    logits = np.random.default_rng(0).standard_normal((4, 5))
    targets = np.array([0, 3, 3, 1])
    expected = F.cross_entropy(Tensor(logits), targets).item()
    monkeypatch.setattr(nn_ops, "get_array_module", lambda array: np)
    assert F.cross_entropy(Tensor(logits), targets).item() == expected             # NumPy: fine
    with pytest.raises(TypeError):
        F.cross_entropy(Tensor(logits).to("strict"), strict.asarray(targets))


# ---- the library under strict ---------------------------------------------------------------

def run_config(tmp_path, device, **overrides):
    settings = dict(dataset="shapes", model="micro", steps=4, batch_size=16, lr=1e-3,
                    out=str(tmp_path), name="run", train_size=128, log_every=1,
                    eval_every=1000, checkpoint_every=1000, device=device)
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_training_resume_and_evaluation_under_strict(tmp_path, monkeypatch):
    """The same run on cpu and on strict gives the same numbers (NumPy computes both);
    a strict run stopped at step 2 and resumed ends where the whole run ends."""
    cpu = train(run_config(tmp_path / "cpu", "cpu"), progress=False)
    on_strict = train(run_config(tmp_path / "strict", "strict"), progress=False)
    assert on_strict["device"] == "strict"
    assert losses(tmp_path / "strict" / "run") == losses(tmp_path / "cpu" / "run")
    assert on_strict["evaluation"] == cpu["evaluation"]

    undo = ctrl_c_during_step(monkeypatch, 2)
    assert train(run_config(tmp_path / "resumed", "strict"), progress=False)["steps"] == 2
    undo()
    train(run_config(tmp_path / "resumed", "strict"), resume=True, progress=False)
    assert losses(tmp_path / "resumed" / "run") == losses(tmp_path / "cpu" / "run")

    # a checkpoint loads onto the strict device and evaluates there
    model, tokenizer, meta = model_from_checkpoint(tmp_path / "strict" / "run" / "checkpoint.npz",
                                                   device="strict")
    assert model.device == "strict" and meta["step"] == 4
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    with strict.counting() as image_traffic:
        features = encode_images(model, images, batch_size=4)
    with strict.counting() as text_traffic:
        classifier = zero_shot_classifier(model, ["red", "blue"], ["a {} shape.", "the {} one."],
                                          tokenizer)
    assert isinstance(features, np.ndarray) and isinstance(classifier, np.ndarray)
    assert 0.0 <= zero_shot_accuracy(features, np.zeros(10, dtype=int), classifier)["top1"] <= 1.0
    # evaluation moves one batch each way at a time, and reads nothing else
    assert (image_traffic.h2d, image_traffic.d2h, image_traffic.sync) == (3, 3, 0)
    assert (text_traffic.h2d, text_traffic.d2h, text_traffic.sync) == (1, 1, 0)


@pytest.mark.parametrize("file", ["state_dict.pt", "jit_fp16.pt", "model.safetensors"])
def test_load_the_fixture_checkpoints_onto_strict(file):
    path = shared_file("fixtures", "openai_tiny", file)
    reference = np.load(shared_file("fixtures", "openai_tiny", "reference.npz"))
    outputs = {}
    for device in ("cpu", "strict"):
        model, preprocess = miniclip.load(str(path), device=device)
        assert model.device == device
        with no_grad():
            logits, _ = model(reference["images"], reference["text"])
        outputs[device] = backend.to_numpy(logits.data)
    np.testing.assert_array_equal(outputs["strict"], outputs["cpu"])


# ---- traffic per training step -----------------------------------------------------------------

def crossings_per_step(tmp_path, monkeypatch, **overrides):
    """Counts between one optimiser update and the next (hooked on clamp_logit_scale, the
    step's last call): step k's logging, then step k+1's batch upload, forward, loss,
    backward, clipping and AdamW."""
    per_step, window = [], {}
    real_clamp = train_module.clamp_logit_scale

    def clamp_and_count(model):
        real_clamp(model)
        if window:
            window["ctx"].__exit__(None, None, None)
            per_step.append(window["t"])
        window["ctx"] = strict.counting(trace=True)
        window["t"] = window["ctx"].__enter__()

    monkeypatch.setattr(train_module, "clamp_logit_scale", clamp_and_count)
    train(run_config(tmp_path, "strict", **overrides), progress=False)
    window["ctx"].__exit__(None, None, None)              # after the last step: not a step
    return per_step


def test_training_step_traffic_is_small_and_constant(tmp_path, monkeypatch):
    """Per step: 3 uploads (images, token ids, the positives matrix), no download, two
    synchronising reads (the loss, checked for NaN, and the global gradient norm, which
    decides the clipping); a logged step reads 3 more (two batch accuracies and the
    temperature). Nothing per parameter, per token or per layer."""
    windows = crossings_per_step(tmp_path, monkeypatch, steps=8, log_every=2)
    def logs(k):                                          # steps 1, 2, 4, 6 log
        return k == 1 or k % 2 == 0
    # window k holds step k's logging (the temperature) and step k+1's work (the loss,
    # the gradient norm, and the two accuracies when step k+1 logs)
    expected = [(3, 0, 2 + logs(k) + 2 * logs(k + 1)) for k in range(1, 8)]
    counted = [(t.h2d, t.d2h, t.sync) for t in windows]
    explain = "\n".join(f"after step {k}: {t} {t.log}" for k, t in enumerate(windows, 1))
    assert counted == expected, explain
