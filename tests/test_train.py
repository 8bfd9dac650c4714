"""Training runs end to end: CLI, summary, checkpoints, exact resume, failures."""
import json

import numpy as np
import pytest
from conftest import ctrl_c_during_step

import miniclip
from miniclip import Tensor, train as train_module
from miniclip.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from miniclip.cli import main
from miniclip.train import TrainConfig, TrainingDiverged, train


def small_config(tmp_path, **overrides):
    """A run that takes seconds: a micro model on 256 shapes images."""
    settings = dict(dataset="shapes", model="micro", steps=6, batch_size=16, lr=1e-3,
                    out=str(tmp_path), name="run", train_size=256, log_every=1,
                    eval_every=1000, checkpoint_every=1000, device="cpu")
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_cli_runs_shapes_end_to_end(tmp_path, capsys):
    code = main(["train", "--model", "micro", "--steps", "4", "--batch-size", "16",
                 "--train-size", "128", "--out", str(tmp_path), "--name", "cli",
                 "--device", "cpu", "--no-progress"])
    assert code == 0
    run = tmp_path / "cli"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("zero_shot_accuracy", "steps", "wall_seconds", "images_per_second"):
        assert key in summary
    assert summary["steps"] == 4
    # the headline is the mean over all four zero-shot tasks, each printed beside it
    tasks = ("test/colour", "test/shape", "test/size", "test/position")
    assert sorted(summary["zero_shot"]) == sorted(tasks)
    assert summary["zero_shot_accuracy"] == pytest.approx(
        np.mean([summary["evaluation"][k] for k in tasks]))
    out = capsys.readouterr().out
    last = [line for line in out.splitlines() if line.startswith("zero-shot accuracy")]
    assert len(last) == 1 and f"{100 * summary['zero_shot_accuracy']:.2f} %" in last[0]
    for attr in ("colour", "shape", "size", "position"):
        assert attr in last[0]
    model, tokenizer, meta = model_from_checkpoint(run / "checkpoint.npz")
    assert meta["step"] == 4 and len(tokenizer) == model.config.vocab_size
    assert (run / "config.json").exists() and (run / "curves.png").exists()
    loaded, preprocess = miniclip.load(str(run / "checkpoint.npz"), device="cpu")
    assert loaded.config == model.config and preprocess.resolution == 32


def test_resume_continues_exactly(tmp_path, monkeypatch):
    train(small_config(tmp_path / "a"), progress=False)
    uninterrupted = losses(tmp_path / "a" / "run")

    # the same run, stopped by Ctrl-C during step 3, then resumed
    undo = ctrl_c_during_step(monkeypatch, 3)
    summary = train(small_config(tmp_path / "b"), progress=False)
    assert summary == {"interrupted": True, "steps": 3,
                       "checkpoint": str(tmp_path / "b" / "run" / "checkpoint.npz")}
    undo()
    train(small_config(tmp_path / "b"), resume=True, progress=False)
    resumed = losses(tmp_path / "b" / "run")
    assert sorted(resumed) == sorted(uninterrupted) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert resumed[step] == uninterrupted[step], f"step {step} differs after resume"


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from miniclip.config import get_config
    from miniclip.model import CLIP
    model = CLIP(get_config("micro"))
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, meta={"step": 1})
    before = load_checkpoint(path)

    def crash_midway(f, **arrays):
        f.write(b"PK\x03\x04 partial bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez", crash_midway)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, model, meta={"step": 2})
    after = load_checkpoint(path)                       # the old checkpoint is intact
    assert after["meta"] == before["meta"] == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]           # no temp file left behind


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    from miniclip.config import get_config
    from miniclip.model import CLIP
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, CLIP(get_config("micro")), meta={})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated"):
        load_checkpoint(path)


def test_nan_loss_stops_with_the_step_and_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "clip_loss",           # the loop's own step calls it
                        lambda *args: Tensor(np.array(np.nan, np.float32), requires_grad=True))
    with pytest.raises(TrainingDiverged, match=r"step 1\b.*detect_anomaly"):
        train(small_config(tmp_path), progress=False)


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=1), "at least 2"),
    (dict(image_size=30), "not divisible by the patch size"),
    (dict(dataset="imagenet"), "unknown dataset"),
])
def test_impossible_configs_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train(small_config(tmp_path, **overrides), progress=False)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()   # refused before any work


def test_a_config_emptied_of_its_length_is_refused(tmp_path):
    cfg = small_config(tmp_path)
    cfg.steps = None                  # TrainConfig fills a length in; unset afterwards
    with pytest.raises(ValueError, match="how long"):
        train(cfg, progress=False)


def test_cli_defaults_are_train_config_defaults(tmp_path, monkeypatch):
    """`python -m miniclip train` with no flags trains exactly TrainConfig()."""
    seen = {}

    def fake_train(cfg, resume=False, progress=True, **options):
        seen["cfg"] = cfg
        return {"interrupted": True}

    monkeypatch.setattr(train_module, "train", fake_train)
    assert main(["train"]) == 130
    assert seen["cfg"] == TrainConfig()
    assert TrainConfig().steps is not None and TrainConfig().model == "tiny"


@pytest.mark.parametrize("dataset, model, length", [
    ("shapes", "tiny", ("steps", train_module.DATASET_DEFAULTS["shapes"]["steps"])),
    ("cifar10", "cifar-rn", ("time_budget", 10.0)),
    ("csv:pairs.tsv", "tiny", ("epochs", 10.0)),
])
def test_per_dataset_defaults_live_in_train_config(dataset, model, length):
    cfg = TrainConfig(dataset=dataset)
    assert cfg.model == model and getattr(cfg, length[0]) == length[1]
    assert cfg.augment == (dataset != "shapes")
    assert TrainConfig(dataset=dataset, epochs=2).steps is None   # a length given: kept alone


def test_cli_reports_refusals(tmp_path, capsys):
    code = main(["train", "--batch-size", "1", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "at least 2" in capsys.readouterr().err


def test_the_loop_fits_one_screen_and_shows_the_step():
    """train() is the loop (issue 23): one function of about a screen, with one process's step
    written out in its own body; the data-parallel step replaces it through one call."""
    import inspect
    source = inspect.getsource(train)
    assert len(source.splitlines()) <= 100
    written_out = ["logits_per_image, logits_per_text = model(images, ids)",
                   "loss = clip_loss(logits_per_image, logits_per_text, positives)",
                   "loss.backward()", "clip_grad_norm(model.parameters(), cfg.grad_clip)",
                   "optimizer.step()", "clamp_logit_scale(model)", "optimizer.zero_grad()",
                   "cosine_schedule(", "loss = siglip_loss(logits_per_image, positives=positives)"]
    positions = [source.index(line) for line in written_out[:6]]
    assert positions == sorted(positions)
    assert all(line in source for line in written_out)
    assert source.count("dp_step(") == 1 and "nonlocal" not in source and "def " not in source[4:]
