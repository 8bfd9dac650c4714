"""Training with SigLIP's loss and with a fixed temperature (issue 25): one process, resume, the CLI."""
import dataclasses
import json
import math
import re

import numpy as np
import pytest
from conftest import ctrl_c_during_step
from PIL import Image

from miniclip import Tensor, train as train_module
from miniclip.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from miniclip.cli import main
from miniclip.data.transforms import Preprocess
from miniclip.evaluate import encode_images, encode_texts
from miniclip.model import CLIP
from miniclip.tokenizer import Tokenizer
from miniclip.train import TrainConfig, train
from test_train import losses, small_config


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_siglip_trains_a_model_with_a_bias_and_says_so(tmp_path):
    summary = train(small_config(tmp_path, loss="siglip"), progress=False)
    run = tmp_path / "run"
    model, _, meta = model_from_checkpoint(run / "checkpoint.npz", device="cpu")
    assert model.config.loss == "siglip" and meta["model"]["loss"] == "siglip"
    assert model.logit_bias.item() != -10.0                          # learned (it started at −10)
    steps = [r for r in records(run) if "loss" in r]
    assert all(r["loss_type"] == "siglip" and "logit_bias" in r for r in steps)
    assert steps[0]["temperature"] == pytest.approx(0.1, rel=1e-3)  # SigLIP's t = ln 10
    assert summary["loss_type"] == "siglip" and 0 <= summary["zero_shot_accuracy"] <= 1
    assert json.loads((run / "config.json").read_text())["model"]["loss"] == "siglip"


def test_the_loop_calls_siglip_loss_for_siglip(tmp_path, monkeypatch):
    """The loop's written-out step takes siglip_loss for --loss siglip, clip_loss otherwise."""
    nan = lambda *args, **kwargs: Tensor(np.array(np.nan, np.float32), requires_grad=True)  # noqa: E731
    monkeypatch.setattr(train_module, "siglip_loss", nan)
    train(small_config(tmp_path / "clip"), progress=False)            # clip_loss: unaffected
    with pytest.raises(train_module.TrainingDiverged, match=r"step 1\b"):
        train(small_config(tmp_path / "siglip", loss="siglip"), progress=False)


def test_siglip_with_class_positives_uses_0_1_labels(tmp_path, monkeypatch):
    seen = []
    real = train_module.siglip_loss

    def spy(logits, positives=None):
        seen.append(np.asarray(positives))
        return real(logits, positives=positives)

    monkeypatch.setattr(train_module, "siglip_loss", spy)
    train(small_config(tmp_path, loss="siglip", steps=2), progress=False)
    assert seen and all(set(np.unique(p)) <= {0.0, 1.0} and np.all(np.diag(p) == 1) for p in seen)


def test_siglip_resume_continues_exactly(tmp_path, monkeypatch):
    train(small_config(tmp_path / "a", loss="siglip"), progress=False)
    uninterrupted = losses(tmp_path / "a" / "run")
    undo = ctrl_c_during_step(monkeypatch, 3)
    assert train(small_config(tmp_path / "b", loss="siglip"), progress=False)["interrupted"]
    undo()
    train(small_config(tmp_path / "b", loss="siglip"), resume=True, progress=False)
    resumed = losses(tmp_path / "b" / "run")
    assert sorted(resumed) == sorted(uninterrupted) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert resumed[step] == uninterrupted[step], f"step {step} differs after resume"
    a = load_checkpoint(tmp_path / "a" / "run" / "checkpoint.npz")["params"]
    b = load_checkpoint(tmp_path / "b" / "run" / "checkpoint.npz")["params"]
    assert all(np.array_equal(a[k], b[k]) for k in a) and "logit_bias" in a


def test_resuming_with_the_other_loss_is_refused(tmp_path, monkeypatch):
    undo = ctrl_c_during_step(monkeypatch, 2)
    train(small_config(tmp_path, loss="siglip"), progress=False)
    undo()
    with pytest.raises(ValueError, match="loss 'siglip' -> 'clip'"):
        train(small_config(tmp_path), resume=True, progress=False)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_a_fixed_temperature_stays_where_it_was_set(tmp_path, loss):
    train(small_config(tmp_path, loss=loss, temperature=0.3, fixed_temperature=True), progress=False)
    run = tmp_path / "run"
    params = load_checkpoint(run / "checkpoint.npz")["params"]
    assert params["logit_scale"] == np.float32(-math.log(0.3))       # bit for bit: never moved
    assert all(r["temperature"] == pytest.approx(0.3) for r in records(run) if "loss" in r)
    fresh = CLIP(model_from_checkpoint(run / "checkpoint.npz", device="cpu")[0].config)
    assert fresh.logit_scale.item() == np.float32(-math.log(0.3))   # the config starts it at 0.3 too


def test_a_learned_temperature_starts_at_temperature_and_moves(tmp_path):
    train(small_config(tmp_path, temperature=0.3), progress=False)
    params = load_checkpoint(tmp_path / "run" / "checkpoint.npz")["params"]
    steps = [r for r in records(tmp_path / "run") if "loss" in r]
    assert steps[0]["temperature"] == pytest.approx(0.3, rel=1e-2)
    assert params["logit_scale"] != np.float32(-math.log(0.3))


def test_a_fixed_temperature_is_not_in_the_optimiser(tmp_path, monkeypatch):
    made = []
    real = train_module.AdamW

    def spy(groups, **kwargs):
        made.append([name for group in groups for name in group["names"]])
        return real(groups, **kwargs)

    monkeypatch.setattr(train_module, "AdamW", spy)
    train(small_config(tmp_path, steps=1, fixed_temperature=True), progress=False)
    assert made and "logit_scale" not in made[0] and "ln_final.weight" in made[0]


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "0", "--fixed-temperature"], "--temperature 0.0: must be a number > 0 and <= 1"),
    (["--temperature", "1.5", "--fixed-temperature"], "--temperature 1.5: must be a number > 0 and <= 1"),
    (["--temperature", "-0.1"], "--temperature -0.1: must be a number > 0 and <= 1"),
    (["--temperature", "nan"], "--temperature nan: must be a number > 0 and <= 1"),
    (["--temperature", "0.001", "--loss", "siglip"], "--temperature 0.001: below 0.01"),
])
def test_bad_temperatures_are_refused_in_one_line(tmp_path, capsys, flags, message):
    assert main(["train", "--out", str(tmp_path), "--no-progress"] + flags) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}")
    assert not any(tmp_path.iterdir())


def test_an_unknown_loss_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--loss", "softmax", "--out", str(tmp_path)])
    assert "invalid choice: 'softmax'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--loss 'softmax': must be one of clip, siglip"):
        train(small_config(tmp_path, loss="softmax"), progress=False)


def test_the_cli_flags_reach_the_train_config(tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg, resume=False, progress=True, **options):
        seen["cfg"] = cfg
        return {"interrupted": True}

    monkeypatch.setattr(train_module, "train", fake_train)
    main(["train", "--loss", "siglip", "--temperature", "0.3", "--fixed-temperature"])
    assert seen["cfg"] == TrainConfig(loss="siglip", temperature=0.3, fixed_temperature=True)
    main(["train"])
    assert (seen["cfg"].loss, seen["cfg"].temperature, seen["cfg"].fixed_temperature) == ("clip", None, False)


def test_the_cli_prints_which_loss_trained(tmp_path, capsys):
    assert main(["train", "--model", "micro", "--steps", "2", "--batch-size", "16", "--train-size", "64",
                 "--out", str(tmp_path), "--name", "cli", "--device", "cpu", "--no-progress",
                 "--loss", "siglip"]) == 0
    assert "trained 2 steps with the siglip loss" in capsys.readouterr().out


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_zeroshot_prints_sigmoid_probabilities_for_a_siglip_model(tmp_path, capsys, loss):
    """SigLIP: σ(e^t · cos + b) per label, each on its own (they need not sum to 1); CLIP: a softmax."""
    model = CLIP(dataclasses.replace(CLIP("micro").config, loss=loss), seed=0)
    if loss == "siglip":
        model.logit_bias.data[...] = 2.0                      # every label likely: sums far above 100 %
    save_checkpoint(tmp_path / "c.npz", model, meta={"model": dataclasses.asdict(model.config)})
    Image.new("RGB", (32, 32), "red").save(tmp_path / "red.png")
    labels = ["red circle", "blue square", "green star"]
    assert main(["zeroshot", "--checkpoint", str(tmp_path / "c.npz"), str(tmp_path / "red.png"),
                 "--labels", ",".join(labels)]) == 0
    out = capsys.readouterr().out
    percents = [float(p) for p in re.findall(r"([\d.]+)%\n", out)]
    assert len(percents) == 3
    if loss == "siglip":
        assert "SigLIP model: sigmoid probabilities" in out and sum(percents) > 150
        image = Preprocess(32)(Image.open(tmp_path / "red.png"))[None]
        texts = encode_texts(model, [f"a photo of a {label}." for label in labels], Tokenizer.default())
        logits = np.exp(model.logit_scale.item()) * encode_images(model, image) @ texts.T + 2.0
        assert max(percents) == pytest.approx(100 / (1 + np.exp(-logits.max())), abs=0.01)
    else:
        assert "SigLIP model" not in out and sum(percents) == pytest.approx(100, abs=0.05)


@pytest.mark.parametrize("change", [dict(loss="clip"), dict(fixed_temperature=True)])
def test_loss_and_a_fixed_temperature_cannot_change_on_resume(tmp_path, monkeypatch, change):
    """Even with --allow-changes: the optimiser's moments would land on other parameters."""
    undo = ctrl_c_during_step(monkeypatch, 2)
    train(small_config(tmp_path, loss="siglip"), progress=False)
    undo()
    with pytest.raises(ValueError, match="even (with )?--allow-changes"):
        train(small_config(tmp_path, **{"loss": "siglip", **change}), resume=True, progress=False,
              allow_changes=True)
