"""A training run's bookkeeping: its folder, resume, checkpoints, metrics, summary and plots.

train.py's loop calls a Run at a few points and does nothing else with files:

    with Run(cfg, comm, resume, overwrite) as run:        # folder checks, lock (rank 0)
        step = run.start(model, optimizer, model_config, tokenizer, total_steps, allow_changes)
        with run.steps():                                  # stop signals and the progress bar
            fraction, stopping = run.progress(step)        # before the loop and after each step
            run.check_loss(loss, step)                     # NaN/Inf: stop, naming the last good one
            run.log_step(record)                           # a line of metrics.jsonl
            run.checkpoint(step)                           # every --checkpoint-every steps
            result = run.evaluate(task, limit)             # rank 0 evaluates, the others wait
        return run.interrupted(step)  or  run.finish(step, final, task, device)

The run folder is <--out>/<--name> (default name <dataset>-<model>, made safe as one
folder name). What a Run guarantees:
  * nothing is lost: a new run into a folder that holds a run is refused (unless
    --resume, or --overwrite, which deletes the old run's files, saying which);
    --name stays inside --out; every file is written atomically (a temporary, then
    a rename), metrics.jsonl only by appending whole lines (repaired on resume);
    the checkpoint before the newest is kept as checkpoint.prev.npz.
  * --resume continues exactly: the checkpoint must exist and be readable, agree
    with the folder's config.json and with this run's settings (differences are
    refused, or with --allow-changes noted in metrics.jsonl; a different model
    architecture is always refused).
  * one process writes: over N processes (MPI) rank 0 alone locks, writes and prints.
  * a stop (Ctrl-C, SIGTERM, SIGHUP) ends the run after the current step with a
    checkpoint and the exact command that continues it; weights that are no longer
    finite are never saved (the last good checkpoint is named instead).
The lock, the metrics repair and the stop signals are in runfolder.py.
"""
import contextlib
import dataclasses
import json
import math
import os
import shlex
import shutil
import time
import zipfile
from pathlib import Path, PurePath

import numpy as np

from miniclip import backend, distributed
from miniclip.checkpoint import load_checkpoint, save_checkpoint
from miniclip.fileio import atomic_write
from miniclip.evaluate import encode_images, encode_texts
from miniclip.runfolder import RunLock, repair_metrics, stop_requests

CHECKPOINT, PREVIOUS = "checkpoint.npz", "checkpoint.prev.npz"
# The files a run writes: their presence means the folder holds a run; --overwrite deletes them.
RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT, PREVIOUS, "summary.json", "curves.png",
             "similarity.png")

# Settings that do not change what a run computes: free to differ on --resume.
RESUME_FREE = {"device", "out", "name", "log_every", "eval_every", "checkpoint_every", "eval_images",
               "distributed", "accum_freq"}   # how the same run is computed, not what it computes

# Settings that change which parameters the model and the optimiser hold: never changed on
# --resume, even with --allow-changes (the checkpoint's weights and moments would not fit).
RESUME_FIXED = ("fixed_temperature",)   # (a change of loss changes the model: refused as such)

# A weight this large means the run has blown up already (trained CLIP weights are < 100;
# float32 products of such weights overflow soon after): such a checkpoint is not "good".
MAX_HEALTHY_WEIGHT = 1e8


class TrainingDiverged(RuntimeError):
    """The loss or the weights are no longer finite."""


def run_name(cfg):
    """--name, or <dataset>-<model> made into one folder name ('ViT-B/32' -> 'ViT-B_32').

    A --name must be a relative path without '..': the run folder stays inside --out
    (a name with '/' is a nested folder, e.g. 'group/run1').
    """
    if cfg.name is None:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{cfg.dataset}-{cfg.model}")
    parts = PurePath(cfg.name).parts
    if not parts or PurePath(cfg.name).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ValueError(f"--name {cfg.name!r}: must name a folder inside --out {cfg.out!r} (a "
                         "relative path without '.' or '..', e.g. 'run1' or 'group/run1')")
    return cfg.name


def run_folder(cfg):
    """<--out>/<run_name(cfg)>."""
    return Path(cfg.out) / run_name(cfg)


def damaged_checkpoint(path, err):
    """The one-line refusal for a checkpoint that cannot be read, with the way on."""
    previous = Path(path).with_name(PREVIOUS)
    way_on = (f"the checkpoint before it is kept: to continue from that one, copy it over "
              f"(cp {shlex.quote(str(previous))} {shlex.quote(str(path))}) and run with --resume "
              "again" if previous.is_file() else
              "no earlier checkpoint is kept: start the run again with --overwrite")
    return ValueError(f"{path} is damaged or truncated ({err}); {way_on}")


def saved_settings(folder):
    """The TrainConfig fields (a dict) saved in <folder>/checkpoint.npz; reads only its metadata.

    Refuses a folder with nothing to resume and a checkpoint that cannot be read, in one line.
    """
    path = Path(folder) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"--resume: nothing to resume in {folder} (no {CHECKPOINT}): check --name "
                         "and --out, or leave out --resume to start a new run")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta_json"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise damaged_checkpoint(path, err) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} is not a miniclip training checkpoint (its metadata has no "
                         "config): cannot resume from it")
    return meta["config"]


def resume_changes(saved, cfg):
    """{field: (checkpoint's value, this run's)} for the settings that change the run."""
    now = dataclasses.asdict(cfg)
    return {k: (saved.get(k), v) for k, v in now.items()
            if k not in RESUME_FREE and k in saved and saved[k] != v}


def params_healthy(model):
    """True when every parameter is finite and below MAX_HEALTHY_WEIGHT in magnitude."""
    for p in model.parameters():
        top = float(backend.xp_for(p.device).abs(p.data).max()) if p.size else 0.0
        if not top <= MAX_HEALTHY_WEIGHT:  # also False for nan
            return False
    return True


def keep_previous(path):
    """Keep `path` as checkpoint.prev.npz (a hard link, else a copy) before a new one replaces it."""
    path = Path(path)
    if not path.is_file():
        return
    previous, temporary = path.with_name(PREVIOUS), path.with_name(PREVIOUS + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    try:
        os.link(path, temporary)
    except OSError:                    # a file system without hard links
        shutil.copyfile(path, temporary)
    os.replace(temporary, previous)


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


class Run:
    """The folder and bookkeeping of one training run (see the module docstring)."""

    def __init__(self, cfg, comm, resume=False, overwrite=False, progress=True):
        self.cfg, self.comm, self.resume, self.overwrite = cfg, comm, resume, overwrite
        self.show_progress = progress and comm.is_main
        self.main = comm.is_main                          # rank 0 writes files and prints
        self.name = run_name(cfg)
        self.folder = Path(cfg.out) / self.name
        self.checkpoint_path = self.folder / CHECKPOINT
        self.metrics = self.folder / "metrics.jsonl"
        self.history, self.elapsed_before = [], 0.0
        self.last_good = self.saved_step = None      # steps of the last healthy / saved checkpoint
        self.exits = contextlib.ExitStack()

    def __enter__(self):
        if self.main:
            self.exits.enter_context(RunLock(self.folder))
            try:
                self._check_folder()
            except BaseException:
                self.exits.close()
                raise
        return self

    def __exit__(self, *exc):
        return self.exits.__exit__(*exc)

    def _check_folder(self):
        """Refuse a new run over an old one, or a resume with nothing to resume (rank 0)."""
        present = [n for n in RUN_FILES if (self.folder / n).exists()]
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in the folder and --overwrite replaces "
                             "it: give one of them")
        if self.resume:
            saved_settings(self.folder)                   # a readable checkpoint, or one line
        elif present and not self.overwrite:
            raise ValueError(
                f"{self.folder} already holds a run ({', '.join(present)}): continue it with "
                "--resume, or replace it with --overwrite (which deletes those files), or pick "
                "another --name")
        elif present:
            for n in present:
                (self.folder / n).unlink()
            print(f"--overwrite: deleted the earlier run's {', '.join(present)} in {self.folder}")

    # ---- start: a new run, or the checkpoint's state --------------------------------------

    def start(self, model, optimizer, model_config, tokenizer, total_steps, allow_changes=False):
        """Load the checkpoint on --resume (rank 0 reads, every rank gets it), write config.json,
        reset or repair metrics.jsonl, start the clock; returns the step to start from."""
        cfg = self.cfg
        self.model, self.optimizer, self.model_config = model, optimizer, model_config
        self.tokenizer, self.total_steps = tokenizer, total_steps
        state = self.comm.broadcast_object(self._read_checkpoint() if self.main and self.resume
                                           else None)
        step, changes = 0, {}
        if state is not None:
            changes = self._check_resume(state["meta"], allow_changes)
            model.load_state_dict(state["params"])
            optimizer.load_state_dict(state["optim"])
            step, self.elapsed_before = state["meta"]["step"], state["meta"]["elapsed"]
            self.last_good = self.saved_step = step
            if self.main:
                print(f"resumed from {self.checkpoint_path} at step {step}")
        distributed.broadcast_parameters(model, self.comm)   # every rank starts from rank 0's model
        if self.main:
            write_text(self.folder / "config.json", json.dumps(
                {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
                 "tokenizer": cfg.tokenizer or "miniclip default (miniclip/data/miniclip_bpe.txt.gz)",
                 "processes": self.comm.world_size}, indent=2))
            if step == 0:
                write_text(self.metrics, "")
            else:  # no torn line, no record past the checkpoint; the curves start at step 1
                self.history = repair_metrics(self.metrics, step, write=write_text)
        if changes:
            self.log({"step": step, "note": "settings changed on resume (--allow-changes)",
                      "changes": {k: {"checkpoint": a, "now": b} for k, (a, b) in changes.items()}})
        self.first_step, self.started = step, time.perf_counter()
        return step

    @contextlib.contextmanager
    def steps(self):
        """Around the loop: Ctrl-C, SIGTERM and SIGHUP ask for a stop after the current step
        (progress() tells every rank), and the progress bar (rank 0)."""
        with stop_requests() as self.stop, _progress_bar(self.total_steps, self.first_step,
                                                         self.show_progress) as self.bar:
            yield self

    def _read_checkpoint(self):
        """The checkpoint, its weights declaring at most twice this run's model (checked in
        the .npy headers, so a small damaged or crafted file cannot make np.load allocate
        gigabytes; a checkpoint of another model is refused by _check_resume)."""
        try:
            model_size = sum(param.size for param in self.model.parameters())
            return load_checkpoint(self.checkpoint_path, max_weights=2 * model_size)
        except ValueError as err:
            raise damaged_checkpoint(self.checkpoint_path, err.__cause__ or err) from None

    def _check_resume(self, meta, allow_changes):
        """The checkpoint against this run's model, the folder's config.json and this run's
        settings; returns the allowed changes {field: (checkpoint's, now)}."""
        path = self.checkpoint_path
        if not all(k in meta for k in ("step", "elapsed", "config")):
            raise ValueError(f"{path} is not a miniclip training checkpoint (its metadata "
                             f"lacks step/elapsed/config): cannot resume from it")
        saved = meta["config"]
        folder_config = self.folder / "config.json"
        if folder_config.is_file():
            try:
                recorded = json.loads(folder_config.read_text()).get("train", {})
            except (ValueError, AttributeError, UnicodeDecodeError):
                recorded = None                # a config.json we cannot read is rewritten below
            mixed = {k: (v, saved.get(k)) for k, v in (recorded or {}).items()
                     if k not in RESUME_FREE and k in saved and saved[k] != v}
            if mixed and not allow_changes:
                raise ValueError(
                    f"--resume: {folder_config} and {path} describe different runs "
                    f"({_listed(mixed)}, config.json -> checkpoint): the checkpoint is not this "
                    "folder's run; move it away, or pass --allow-changes to continue from it")
        now = json.loads(json.dumps(dataclasses.asdict(self.model_config)))   # tuples as lists
        architecture = {k: (v, now.get(k)) for k, v in meta.get("model", {}).items() if now.get(k) != v}
        if architecture:
            raise ValueError(
                f"--resume: {path} holds a {saved.get('model')!r} model and this run builds a "
                f"{self.cfg.model!r} one ({_listed(architecture, 3)}): its weights cannot be "
                "loaded, even with --allow-changes; start a new run with another --name")
        changes = resume_changes(saved, self.cfg)
        fixed = {k: v for k, v in changes.items() if k in RESUME_FIXED}
        if fixed:
            raise ValueError(f"--resume: this run's {_listed(fixed)} differs from the checkpoint's, which "
                             "changes the parameters the model and the optimiser hold: not even "
                             "--allow-changes can continue it; resume with the run's own setting, or "
                             "start a new run with another --name")
        if changes and not allow_changes:
            raise ValueError(f"--resume: this run's settings differ from the checkpoint's "
                             f"({_listed(changes)}). Resume with the run's own settings, or pass "
                             f"--allow-changes to continue with the new ones")
        return changes

    # ---- during the loop ----------------------------------------------------------------

    def elapsed(self):
        """Seconds trained, over every session of this run."""
        return self.elapsed_before + time.perf_counter() - self.started

    def progress(self, step):
        """(fraction of the run done, stop?) agreed by every rank: rank 0's clock (with
        --time-budget) or the step count, and a stop asked for on any rank."""
        self.bar.update(step - self.bar.n)
        fraction = (self.elapsed() / (60 * self.cfg.time_budget) if self.cfg.time_budget
                    else step / self.total_steps)
        return distributed.agree(self.comm, fraction, self.stop.requested)

    def check_loss(self, loss, step):
        """Stop with advice when the loss of `step` is NaN or infinite."""
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss} at step {step}. {self.last_good_sentence()} Lower --lr, or rerun "
                "a few steps under miniclip.autograd.detect_anomaly() to find the first op that "
                "made NaN/Inf.")

    def log(self, record):
        """Append one line to metrics.jsonl (rank 0)."""
        if self.main:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")

    def log_step(self, record):
        """A training record, completed with the loss's name ("clip" or "siglip"), a SigLIP
        model's logit_bias, the speed and the time: to metrics.jsonl, the history
        (curves.png, summary.json) and the progress bar."""
        rate = (record["step"] - self.first_step) * self.cfg.batch_size / (time.perf_counter() - self.started)
        record.update(loss_type=self.cfg.loss, images_per_second=rate, elapsed=self.elapsed())
        if self.model_config.has_logit_bias:
            record["logit_bias"] = float(self.model.logit_bias.item())
        self.history.append(record)
        self.log(record)
        self.bar.set_postfix({self.cfg.loss: f"{record['loss']:.3f}"}, acc=f"{record['acc_i2t']:.2f}",
                             lr=f"{record['lr']:.1e}", T=f"{record['temperature']:.3f}",
                             ips=f"{rate:.0f}")

    def checkpoint(self, step):
        """Save (rank 0; the one before is kept as checkpoint.prev.npz), unless the weights are
        no longer finite: then stop, naming the last good checkpoint."""
        if step == self.saved_step:        # already on disk (the last periodic one, or resumed)
            return
        distributed.check_parameters_identical(self.model, self.comm, step)
        if not params_healthy(self.model):
            raise TrainingDiverged(
                f"the weights are no longer finite (or above {MAX_HEALTHY_WEIGHT:.0e}) at step "
                f"{step}; not saved. {self.last_good_sentence()} Lower --lr, or rerun a few steps "
                "under miniclip.autograd.detect_anomaly()")
        if self.main:
            keep_previous(self.checkpoint_path)
            save_checkpoint(self.checkpoint_path, self.model, self.optimizer, {
                "step": step, "elapsed": self.elapsed(), "config": dataclasses.asdict(self.cfg),
                "model": dataclasses.asdict(self.model_config),
                "tokenizer_merges": self.tokenizer.merges,   # the checkpoint carries its vocabulary
                "processes": self.comm.world_size})
        self.last_good = self.saved_step = step

    def last_good_sentence(self):
        """A sentence naming the last checkpoint with healthy weights, for error messages."""
        if self.last_good is None:
            return "There is no good checkpoint yet."
        return f"The last good checkpoint is {self.checkpoint_path} (step {self.last_good})."

    def evaluate(self, task, limit=None):
        """Rank 0 evaluates in eval mode; the other ranks wait (asleep) until it is done."""
        result = None
        if self.main:
            with evaluating(self.model):
                result = task.evaluate(self.model, self.tokenizer, limit)
        self.comm.barrier()
        return result

    # ---- the end ------------------------------------------------------------------------

    def interrupted(self, step):
        """After a stop: checkpoint, and print the exact command that continues the run."""
        self.checkpoint(step)
        if self.main:
            command = shlex.join(["python", "-m", "miniclip", "train", "--dataset", self.cfg.dataset,
                                  "--out", self.cfg.out, "--name", self.name, "--resume"])
            print(f"\ninterrupted ({self.stop.signal}) at step {step}: checkpoint written to "
                  f"{self.checkpoint_path}; continue with:\n  {command}")
        return {"interrupted": True, "steps": step, "checkpoint": str(self.checkpoint_path)}

    def finish(self, step, final, task, device):
        """The final evaluation's record, summary.json and the plots (rank 0); the summary."""
        if not self.main:                       # the other ranks' work is done; rank 0 reports
            return {"rank": self.comm.rank, "steps": step, "processes": self.comm.world_size}
        self.log({"step": step, "eval": final, "final": True})
        wall = self.elapsed()
        # the headline: the mean over every zero-shot task of the dataset (each one beside it)
        summary = {"zero_shot_accuracy": final.get("zero_shot_accuracy"),
                   "zero_shot": {key: final[key] for key in task.zero_shot},
                   "headline": task.headline, task.headline: final[task.headline], "steps": step,
                   "wall_seconds": round(wall, 2),
                   # over the whole run (every session): the pairs of `step` global batches
                   "images_per_second": round(step * self.cfg.batch_size / max(wall, 1e-9), 1),
                   "dataset": self.cfg.dataset, "model": self.cfg.model, "device": device,
                   "loss_type": self.cfg.loss, "fixed_temperature": self.cfg.fixed_temperature,
                   "temperature": math.exp(-float(self.model.logit_scale.item())),
                   "processes": self.comm.world_size, "accum_freq": self.cfg.accum_freq,
                   "final_loss": self.history[-1]["loss"] if self.history else None,
                   "evaluation": final, "checkpoint": str(self.checkpoint_path)}
        write_text(self.folder / "summary.json", json.dumps(summary, indent=2))
        self._plots(task.pairs)
        return summary

    def _plots(self, pairs):
        """curves.png and a held-out similarity.png (atomic), when matplotlib is installed."""
        try:
            from miniclip import viz
        except ImportError:                 # matplotlib is optional
            return
        atomic_write(self.folder / "curves.png", lambda f: viz.training_curves(self.history, f))
        images, texts = pairs
        similarity = (encode_images(self.model, images)
                      @ encode_texts(self.model, texts, self.tokenizer).T)
        atomic_write(self.folder / "similarity.png",
                     lambda f: viz.similarity_matrix(similarity, texts, f, images=images))


def _listed(changes, most=None):
    """'lr 0.001 -> 0.002, steps 6 -> 8' (the first `most` of them)."""
    items = list(changes.items())[:most]
    more = len(changes) - len(items)
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in items) + (f" and {more} more" if more > 0 else "")


@contextlib.contextmanager
def evaluating(model):
    """Eval mode inside the block (BatchNorm uses its running statistics, as zero-shot
    use will), then back to the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _progress_bar(total, initial, enabled):
    from tqdm import tqdm
    bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
