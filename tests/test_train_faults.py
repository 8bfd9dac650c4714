"""Training runs under faults (issue 12, items 2-4, 7, 10, 12): signals, torn logs, resumes
with other settings, a second run into a live folder, blown-up weights, bad numbers."""
import json
import math
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

from miniclip import train as train_module
from miniclip.checkpoint import save_checkpoint
from miniclip.cli import main
from miniclip.runfolder import RunFolderBusy, read_metrics
from miniclip.train import TrainConfig, TrainingDiverged, train


def small_config(tmp_path, **overrides):
    settings = dict(dataset="shapes", model="micro", steps=6, batch_size=16, lr=1e-3,
                    out=str(tmp_path), name="run", train_size=128, log_every=1,
                    eval_every=1000, checkpoint_every=1000, device="cpu")
    settings.update(overrides)
    return TrainConfig(**settings)


def send_at_step(monkeypatch, n, signum):
    calls = {"n": 0}
    real = train_module.clip_grad_norm

    def hook(params, max_norm):
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(signum)
        return real(params, max_norm)
    monkeypatch.setattr(train_module, "clip_grad_norm", hook)
    return real


def test_sigterm_saves_then_resume_repairs_log_and_rebuilds_summary(tmp_path, monkeypatch, capsys):
    real = send_at_step(monkeypatch, 3, signal.SIGTERM)
    summary = train(small_config(tmp_path), progress=False)
    assert summary["interrupted"] and summary["steps"] == 3       # SIGTERM: saved, not killed
    assert "--resume" in capsys.readouterr().out
    monkeypatch.setattr(train_module, "clip_grad_norm", real)
    run = tmp_path / "run"
    with open(run / "metrics.jsonl", "a") as f:                    # a full disk tore a line
        f.write('{"step": 4, "loss": 0.1')
    summary = train(small_config(tmp_path), resume=True, progress=False)
    records, torn = read_metrics(run / "metrics.jsonl")
    steps = [r["step"] for r in records if "loss" in r]
    assert torn == 0 and steps == [1, 2, 3, 4, 5, 6]               # no fragment, no duplicate
    assert summary["final_loss"] == records[5]["loss"]
    # resuming the finished run again: the summary still has the whole history
    summary = train(small_config(tmp_path), resume=True, progress=False)
    records, _ = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert sum(1 for r in records if r.get("final")) == 1
    assert summary["final_loss"] is not None and math.isfinite(summary["final_loss"])
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("checkpoint.npz", "summary.json", "metrics.jsonl"):  # 0644 under umask 022
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name
    assert not (run / "run.lock").exists()
    # other settings on resume: refused naming them, unless allowed (and then noted)
    with pytest.raises(ValueError, match=r"lr 0.001 -> 0.002.*--allow-changes"):
        train(small_config(tmp_path, lr=2e-3), resume=True, progress=False)
    train(small_config(tmp_path, lr=2e-3), resume=True, progress=False, allow_changes=True)
    notes = [r for r in read_metrics(run / "metrics.jsonl")[0] if "note" in r]
    assert notes and notes[-1]["changes"] == {"lr": {"checkpoint": 0.001, "now": 0.002}}


def test_second_run_into_a_live_folder_is_refused(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "run.lock").write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
        with pytest.raises(RunFolderBusy, match=f"pid {child.pid}"):
            train(small_config(tmp_path), progress=False)
        assert not (tmp_path / "run" / "metrics.jsonl").exists()
    finally:
        child.kill()
        child.wait()


def test_blown_up_weights_are_not_called_good(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_module.clamp_logit_scale

    def blow_up_after_step_2(model):
        calls["n"] += 1
        if calls["n"] == 3:
            model.visual.proj.data *= np.float32(1e29)  # finite, but absurd
        return real(model)
    monkeypatch.setattr(train_module, "clamp_logit_scale", blow_up_after_step_2)
    with pytest.raises(TrainingDiverged, match=r"last good checkpoint is .*checkpoint.npz \(step 2\)"):
        train(small_config(tmp_path, checkpoint_every=2), progress=False)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-5"], "--steps -5: must be an integer >= 1"),
    (["--steps", "0"], "--steps 0: must be an integer >= 1"),
    (["--epochs", "-1"], "--epochs -1.0: must be a number > 0"),
    (["--time-budget", "-1"], "--time-budget -1.0: must be a number > 0"),
    (["--time-budget", "nan"], "--time-budget nan: must be a number > 0"),
    (["--weight-decay", "-100"], "--weight-decay -100.0: must be a number >= 0"),
    (["--eval-every", "-1"], "--eval-every -1: must be an integer >= 1"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0 and <= 4294967295"),
    (["--lr", "inf"], "--lr inf: must be a number > 0"),
])
def test_cli_numbers_are_checked_before_any_work(tmp_path, capsys, flags, message):
    assert main(["train", "--out", str(tmp_path), "--no-progress"] + flags) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"error: {message}"
    assert not any(tmp_path.iterdir())


def test_tokenize_merges_must_be_positive(capsys):
    assert main(["tokenize", "--train", "--merges", "-5"]) == 2
    assert "--merges -5: must be an integer >= 1" in capsys.readouterr().err


def test_stale_temporaries_removed_at_the_next_save(tmp_path):
    from miniclip.config import get_config
    from miniclip.model import CLIP
    path = tmp_path / "checkpoint.npz"
    for k in range(3):  # what three kill -9s in the middle of a write leave
        (tmp_path / f"checkpoint.npz.x{k}.tmp").write_bytes(b"PK partial")
    (tmp_path / "other.npz.y.tmp").write_bytes(b"")  # not ours: kept
    save_checkpoint(path, CLIP(get_config("micro")), meta={"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "other.npz.y.tmp"]


def test_cli_resume_takes_the_checkpoints_settings(tmp_path, capsys):
    common = ["train", "--out", str(tmp_path), "--name", "r", "--model", "micro", "--device", "cpu",
              "--train-size", "64", "--no-progress"]
    assert main(common + ["--steps", "2", "--batch-size", "16", "--lr", "0.001"]) == 0
    # plain --resume: steps 2, batch 16, lr 1e-3 come from the checkpoint (no refusal)
    assert main(common + ["--resume"]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 2
    # an explicit other value is refused, naming it (abbreviated flags are errors: test_cli_errors)
    assert main(common + ["--resume", "--batch-size", "32"]) == 2
    assert "batch_size 16 -> 32" in capsys.readouterr().err
