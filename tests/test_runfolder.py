"""Run-folder guards (issue 12, item 2 and 3): the lock, metrics.jsonl repair, stop signals."""
import io
import json
import math
import os
import signal
import subprocess
import tracemalloc
import zipfile
from pathlib import Path
import sys

import pytest

from miniclip.runfolder import RunFolderBusy, RunLock, read_metrics, repair_metrics, stop_requests


def test_second_lock_on_a_live_folder_is_refused(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run.lock").write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
        with pytest.raises(RunFolderBusy, match=f"pid {child.pid}"):
            with RunLock(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free
    (tmp_path / "run.lock").write_text(json.dumps({"pid": child.pid, "host": os.uname().nodename}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().out
    assert not (tmp_path / "run.lock").exists()  # released


def test_lock_released_on_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path):
            1 / 0
    with RunLock(tmp_path):
        pass


def test_repair_drops_torn_line_and_records_past_the_checkpoint(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 4, "eval": {"a": 1}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "lo')  # torn
    history = repair_metrics(path, 4)
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    records, torn = read_metrics(path)
    assert torn == 0 and [r["step"] for r in records] == [1, 2, 3, 4, 4]
    assert path.read_text().endswith("\n")
    assert "1 torn line" in capsys.readouterr().out


def test_repair_drops_the_final_evaluation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 2, "loss": 0.5}) + "\n"
                    + json.dumps({"step": 2, "eval": {}, "final": True}) + "\n")
    assert [r["step"] for r in repair_metrics(path, 2)] == [2]
    assert len(read_metrics(path)[0]) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signals_set_the_flag(signum):
    before = signal.getsignal(signum)
    if before == signal.SIG_IGN:          # e.g. SIGHUP under nohup: would end pytest's process
        signal.signal(signum, signal.SIG_DFL)
    try:
        usual = signal.getsignal(signum)
        with stop_requests() as stop:
            signal.raise_signal(signum)
            assert stop.requested and stop.signal == signal.Signals(signum).name
            # a second one is the usual behaviour again
            assert signal.getsignal(signum) == usual
        assert signal.getsignal(signum) == usual
    finally:
        signal.signal(signum, before)


# ---- the Run: run folders are never overwritten (issue 24, "run folders") -----------------------

import dataclasses  # noqa: E402
import shlex  # noqa: E402

import numpy as np  # noqa: E402
from conftest import ctrl_c_during_step  # noqa: E402

from miniclip import train as train_module, viz  # noqa: E402
from miniclip.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from miniclip.cli import main  # noqa: E402
from miniclip.config import get_config  # noqa: E402
from miniclip.model import CLIP  # noqa: E402
from miniclip.run import run_name  # noqa: E402
from miniclip.tokenizer import Tokenizer  # noqa: E402
from miniclip.train import TrainConfig, train  # noqa: E402


@pytest.fixture(autouse=True)
def quick_final_evaluation(monkeypatch):
    """The final evaluation on 64 test images: these tests are about the run folder."""
    real_make_task = train_module.make_task

    def quick_task(*args, **kwargs):
        task = real_make_task(*args, **kwargs)
        return dataclasses.replace(task, evaluate=lambda m, t, limit=None: task.evaluate(m, t, 64))
    monkeypatch.setattr(train_module, "make_task", quick_task)


def micro_run(out, **overrides):
    settings = dict(dataset="shapes", model="micro", steps=4, batch_size=16, lr=1e-3, out=str(out),
                    name="run", train_size=64, log_every=1, eval_every=1000, checkpoint_every=1000,
                    device="cpu", eval_images=32)
    return TrainConfig(**{**settings, **overrides})


def cli_flags(cfg):
    return ["train", "--model", cfg.model, "--steps", str(cfg.steps), "--batch-size", "16",
            "--train-size", "64", "--out", cfg.out, "--name", cfg.name, "--device", "cpu",
            "--no-progress"]


def error_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path, capsys):
    cfg = micro_run(tmp_path)
    assert main(cli_flags(cfg)) == 0                      # a finished run
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(cli_flags(cfg)) == 2                      # was: overwritten, exit 0
    err = error_lines(capsys)
    assert len(err) == 1 and str(run) in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before      # nothing touched
    # --overwrite replaces it, saying which files of the old run it deleted
    (run / "notes.txt").write_text("mine")
    assert main(cli_flags(cfg) + ["--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "--overwrite: deleted the earlier run's" in out and "checkpoint.npz" in out
    assert (run / "notes.txt").read_text() == "mine"      # not a run file: kept
    assert main(cli_flags(cfg) + ["--overwrite", "--resume"]) == 2
    assert "give one of them" in error_lines(capsys)[0]


@pytest.mark.parametrize("name", ["..", "../x", "ABSOLUTE", ".", "a/../../b"])
def test_name_must_stay_inside_out(tmp_path, capsys, name):
    out = tmp_path / "out"
    name = str(tmp_path / "abs-run") if name == "ABSOLUTE" else name
    assert main(cli_flags(micro_run(out, name=name))) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and f"--name {name!r}" in err[0] and "inside --out" in err[0]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]         # nothing written anywhere


def test_nested_names_and_model_names_with_a_slash(tmp_path):
    assert run_name(TrainConfig(model="ViT-B/32")) == "shapes-ViT-B_32"   # one folder, not two
    assert run_name(TrainConfig(dataset="csv:data/my pairs.tsv")) == "csv_data_my_pairs.tsv-tiny"
    assert run_name(TrainConfig(name="grp/r1")) == "grp/r1"               # nested inside --out


def micro_rn_checkpoint(path, cfg):
    """A 1-step-old checkpoint of a micro-rn run with cfg's other settings."""
    tokenizer = Tokenizer.default()
    config = dataclasses.replace(get_config("micro-rn"), vocab_size=len(tokenizer))
    cfg = dataclasses.replace(cfg, model="micro-rn")
    save_checkpoint(path, CLIP(config), None, {
        "step": 1, "elapsed": 1.0, "config": dataclasses.asdict(cfg),
        "model": dataclasses.asdict(config), "tokenizer_merges": tokenizer.merges})


def test_resume_checks_the_folder_the_checkpoint_and_the_command_line(tmp_path, capsys):
    cfg = micro_run(tmp_path, steps=2)
    assert main(cli_flags(cfg)) == 0
    run = tmp_path / "run"
    micro_rn_checkpoint(run / "checkpoint.npz", cfg)      # another model's checkpoint in the folder
    without_model = [f for i, f in enumerate(cli_flags(cfg)) if i not in (1, 2)]
    for flags in (cli_flags(cfg), without_model):       # with --model micro, and without it
        assert main(flags + ["--resume"]) == 2          # was: resumed as micro-rn silently
        err = error_lines(capsys)
        assert len(err) == 1 and "config.json" in err[0] and "checkpoint.npz" in err[0]
        assert "'micro' -> 'micro-rn'" in err[0]
    # another model with --allow-changes: one short line, not a list of every parameter
    assert main(cli_flags(micro_run(tmp_path / "b", steps=2))) == 0
    assert main(cli_flags(micro_run(tmp_path / "b", steps=2, model="micro-rn"))
                + ["--resume", "--allow-changes"]) == 2
    err = error_lines(capsys)
    assert len(err) == 1 and len(err[0]) < 400 and "'micro'" in err[0] and "'micro-rn'" in err[0]
    assert "even with --allow-changes" in err[0]


def test_resume_with_nothing_to_resume_is_refused(tmp_path, capsys):
    cfg = micro_run(tmp_path, name="typo")
    assert main(cli_flags(cfg) + ["--resume"]) == 2       # was: "starting afresh", then trained
    err = error_lines(capsys)
    assert len(err) == 1 and "nothing to resume" in err[0] and str(tmp_path / "typo") in err[0]
    assert not (tmp_path / "typo").exists()
    with pytest.raises(ValueError, match="nothing to resume"):
        train(cfg, resume=True, progress=False)


def test_the_printed_resume_command_is_exact_and_quoted(tmp_path, monkeypatch, capsys):
    out = tmp_path / "my runs"                            # a space: must be quoted
    cfg = micro_run(out, name="grp/r1")
    undo = ctrl_c_during_step(monkeypatch, 2)
    assert train(cfg, progress=False)["interrupted"]
    undo()
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    words = shlex.split(printed)
    assert words[:4] == ["python", "-m", "miniclip", "train"]
    assert words[words.index("--name") + 1] == "grp/r1"   # was: --name r1
    assert words[words.index("--out") + 1] == str(out)
    assert main(words[3:] + ["--no-progress"]) == 0       # the command as printed continues it
    assert json.loads((out / "grp" / "r1" / "summary.json").read_text())["steps"] == 4


def test_run_files_are_written_atomically_and_the_summary_keeps_its_speed(tmp_path, monkeypatch):
    cfg = micro_run(tmp_path)
    first = train(cfg, progress=False)
    run = tmp_path / "run"
    curves = (run / "curves.png").read_bytes()

    def killed_while_plotting(history, path=None):
        if isinstance(path, (str, os.PathLike)):
            open(path, "wb").close()                      # what a kill mid-savefig leaves
        raise OSError("killed while plotting (simulated)")
    real_curves = viz.training_curves
    monkeypatch.setattr(viz, "training_curves", killed_while_plotting)
    with pytest.raises(OSError, match="simulated"):
        train(cfg, resume=True, progress=False)           # resuming the finished run
    assert (run / "curves.png").read_bytes() == curves    # was: 0 bytes
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(viz, "training_curves", real_curves)
    summary = train(cfg, resume=True, progress=False)
    assert summary["images_per_second"] > 0               # was: 0.0
    assert summary["images_per_second"] == pytest.approx(first["images_per_second"], rel=0.5)
    assert json.loads((run / "config.json").read_text())["train"]["model"] == "micro"


def test_the_previous_checkpoint_is_kept_and_offered(tmp_path, capsys):
    cfg = micro_run(tmp_path, steps=6, checkpoint_every=2)     # saved at steps 2, 4 and 6
    train(cfg, progress=False)
    run = tmp_path / "run"
    assert load_checkpoint(run / "checkpoint.npz")["meta"]["step"] == 6
    assert load_checkpoint(run / "checkpoint.prev.npz")["meta"]["step"] == 4
    good = (run / "checkpoint.npz").read_bytes()
    (run / "checkpoint.npz").write_bytes(good[:len(good) // 2])     # truncated by a crash
    assert main(cli_flags(cfg) + ["--resume"]) == 2                  # was: a BadZipFile traceback
    err = error_lines(capsys)
    assert len(err) == 1 and "Traceback" not in err[0]
    assert str(run / "checkpoint.npz") in err[0] and "checkpoint.prev.npz" in err[0]
    # the advice works: copy the previous checkpoint over, resume (from step 4) to the end
    words = shlex.split(err[0].split("(cp ", 1)[1].split(")", 1)[0])
    (run / "checkpoint.npz").write_bytes(Path(words[0]).read_bytes())
    assert main(cli_flags(cfg) + ["--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoint.npz")["meta"]["step"] == 6
    np.testing.assert_array_equal(load_checkpoint(run / "checkpoint.npz")["params"]["logit_scale"],
                                  np.load(io_bytes(good))["param/logit_scale"])


def declaring(checkpoint, member, shape):
    """Rewrite `member` of the .npz `checkpoint` as a deflated .npy whose header declares
    `shape` float32s over 4 KiB of zeros, and patch its zip entry's uncompressed size
    (local header and central directory) to match: what a crafted file does."""
    with zipfile.ZipFile(checkpoint) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(checkpoint, "w") as archive:
        for name, data in members.items():
            if name == member:
                archive.writestr(name, header.getvalue() + bytes(1 << 12), zipfile.ZIP_DEFLATED)
            else:
                archive.writestr(name, data)
    raw = bytearray(checkpoint.read_bytes())
    size = (len(header.getvalue()) + 4 * math.prod(shape)).to_bytes(4, "little")
    # (signature, offset of the name length, of the name, of the uncompressed size)
    for signature, length_at, name_at, size_at in ((b"PK\x03\x04", 26, 30, 22),
                                                   (b"PK\x01\x02", 28, 46, 24)):
        at = raw.find(signature)
        while at >= 0:
            length = int.from_bytes(raw[at + length_at:at + length_at + 2], "little")
            if raw[at + name_at:at + name_at + length] == member.encode():
                raw[at + size_at:at + size_at + 4] = size
            at = raw.find(signature, at + 4)
    checkpoint.write_bytes(bytes(raw))


@pytest.mark.parametrize("member", ["param/visual.proj.npy", "optim/exp_avg/0.npy"])
def test_resume_from_a_small_file_declaring_gigabytes_allocates_nothing(tmp_path, capsys, member):
    """A checkpoint of a few hundred kilobytes whose one array declares 1 GiB: --resume
    refuses it from the .npy headers (was: np.load allocated the gigabyte first)."""
    cfg = micro_run(tmp_path, steps=2, checkpoint_every=2)
    assert main(cli_flags(cfg)) == 0
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    declaring(checkpoint, member, (1 << 28,))
    assert checkpoint.stat().st_size < 4 << 20
    capsys.readouterr()
    tracemalloc.start()
    try:
        assert main(cli_flags(cfg) + ["--resume"]) == 2
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = error_lines(capsys)
    assert len(err) == 1 and str(checkpoint) in err[0] and "crafted" in err[0], err
    assert peak < 256 << 20, f"{peak:,} bytes allocated"


def io_bytes(data):
    import io
    return io.BytesIO(data)
