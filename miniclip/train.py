"""Training a CLIP from scratch: a plain loop you can put a breakpoint in.

    for each batch:
        logits_per_image, logits_per_text = model(images, ids)
        loss = clip_loss(logits_per_image, logits_per_text, positives)
        loss.backward()
        clip_grad_norm(...)            # global-norm clipping
        optimizer.step()               # AdamW, decoupled weight decay
        clamp_logit_scale(model)       # temperature stays ≥ 1/100
        lr = cosine_schedule(...)      # warmup, then cosine decay

Around the loop: a run folder (runs/<name>/) with config.json, metrics.jsonl,
checkpoints (atomic, resumable), summary.json and plots.

On several processes (`mpiexec -n N python -m miniclip train ...`) the three
lines model / clip_loss / backward become one `step(...)` of
miniclip.distributed: each rank encodes its B/N rows of the global batch,
the loss is computed on features gathered from every rank, and the gradients
are averaged, so every rank takes the same optimiser step. Rank 0 alone
writes the run folder and prints. `--accum-freq K` (gradient caching) runs
the same step in K chunks per rank.
"""
import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miniclip import backend, distributed
from miniclip.checkpoint import load_checkpoint, save_checkpoint
from miniclip.fileio import atomic_write
from miniclip.runfolder import RunLock, repair_metrics, stop_requests
from miniclip.data.loader import DataLoader
from miniclip.evaluate import encode_images, encode_texts
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.optim import (AdamW, clamp_logit_scale, clip_grad_norm, cosine_schedule,
                            param_groups_for_weight_decay)
from miniclip.tasks import check_dataset, make_task
from miniclip.tokenizer import Tokenizer, tokenize


# Per-dataset defaults: what an unset (None) TrainConfig field becomes. The
# length (steps / epochs / time_budget) applies only when none of the three is set.
# shapes: colour, shape and size are learned in a few hundred steps; position
# comes last (14 % at step 150, 95 % at step 450 of a 750-step run at lr 1e-3;
# lr 2e-3 left it at 24 % after 800 steps): 600 steps of `tiny` at lr 1e-3,
# about 4 min 40 s on this project's quiet 2-core CPU (README).
DATASET_DEFAULTS = {
    "shapes": dict(model="tiny", steps=600, lr=1e-3),
    "cifar": dict(model="cifar-tiny", time_budget=10.0, lr=2e-3),
    "csv": dict(model="tiny", epochs=10.0, lr=2e-3),
}


def dataset_kind(dataset):
    """'shapes', 'cifar' or 'csv': the key of DATASET_DEFAULTS for a dataset name."""
    return "csv" if dataset.startswith("csv:") else "cifar" if dataset.startswith("cifar") else dataset


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json in the run folder.

    Every default lives here: `train(TrainConfig())` is `python -m miniclip train`,
    and the CLI's flags take their defaults from this class. Fields left None
    that have a per-dataset default (DATASET_DEFAULTS) are filled in on creation.
    """
    dataset: str = "shapes"            # shapes | cifar10 | cifar100 | csv:PATH
    model: str | None = None           # a name in miniclip.model.CONFIGS (per dataset)
    steps: int | None = None           # stop after this many optimiser steps ...
    epochs: float | None = None        # ... or this many passes over the data ...
    time_budget: float | None = None   # ... or this many minutes (schedule follows the clock)
    batch_size: int = 128
    lr: float | None = None            # peak learning rate (per dataset)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: float = 0.05               # fraction of training spent warming the lr up
    grad_clip: float = 1.0
    augment: bool | None = None        # random crop + flip; None: off for shapes (a flip
                                       # turns 'left' into 'right'), on for the others
    class_positives: bool = True       # same class (or same caption) in a batch = a positive
    seed: int = 0
    device: str = "auto"
    out: str = "runs"
    name: str | None = None            # run folder name; None: <dataset>-<model>
    tokenizer: str | None = None       # a merges file; default: miniclip's own vocabulary
    image_size: int = 32
    train_size: int | None = None      # shapes: number of training images
    log_every: int = 10
    eval_every: int | None = None      # steps between evaluations (default: 5 per run)
    checkpoint_every: int = 200
    eval_images: int = 1000            # test images for the periodic (not final) evaluation
    accum_freq: int = 1                # gradient caching: each process encodes its rows in K chunks
    distributed: bool | None = None    # None: over MPI when mpiexec started several processes

    def __post_init__(self):
        check_dataset(self.dataset)
        defaults = DATASET_DEFAULTS[dataset_kind(self.dataset)]
        if self.steps is None and self.epochs is None and self.time_budget is None:
            for key in ("steps", "epochs", "time_budget"):
                setattr(self, key, defaults.get(key))
        if self.model is None:
            self.model = defaults["model"]
        if self.lr is None:
            self.lr = defaults["lr"]
        if self.augment is None:
            self.augment = self.dataset != "shapes"


class TrainingDiverged(RuntimeError):
    pass


# ---- checks before any work ------------------------------------------------------------

def check_config(cfg, model_config):
    """Refuse settings that cannot work, with the reason."""
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size={cfg.batch_size}: the contrastive loss needs at least 2 "
                         "pairs per batch (with 1 the only caption is always right: loss ≡ 0)")
    if cfg.steps is None and cfg.epochs is None and cfg.time_budget is None:
        raise ValueError("say how long to train: steps, epochs or time_budget")
    if cfg.lr <= 0:
        raise ValueError(f"lr={cfg.lr} must be positive")


# Each numeric setting: (kind, lowest allowed, whether the lowest itself is allowed).
# (batch_size has its own check in check_config, with the reason.)
NUMBER_RULES = {
    "steps": (int, 1, True), "epochs": (float, 0, False), "time_budget": (float, 0, False),
    "lr": (float, 0, False), "weight_decay": (float, 0, True),
    "beta1": (float, 0, True), "beta2": (float, 0, True), "eps": (float, 0, False),
    "warmup": (float, 0, True), "grad_clip": (float, 0, False), "seed": (int, 0, True),
    "image_size": (int, 1, True), "train_size": (int, 1, True), "log_every": (int, 1, True),
    "eval_every": (int, 1, True), "checkpoint_every": (int, 1, True), "eval_images": (int, 1, True),
}
UPPER = {"beta1": (1, False), "beta2": (1, False), "warmup": (1, False), "seed": (2**32 - 1, True)}


def check_numbers(cfg):
    """Every numeric setting finite and in its range, before any work; one line naming the flag.

    steps / epochs / time_budget must be positive (a negative one trained forever,
    steps=0 crashed, nan ran nothing), rates and intervals positive, weight_decay
    >= 0, betas and warmup in [0, 1), seed in [0, 2**32 - 1].
    """
    for field, (kind, low, inclusive) in NUMBER_RULES.items():
        value = getattr(cfg, field)
        if value is None:
            continue
        flag = "--" + field.replace("_", "-")
        high, high_inclusive = UPPER.get(field, (math.inf, False))
        wanted = (f"{'an integer' if kind is int else 'a number'} "
                  f"{'>=' if inclusive else '>'} {low}"
                  + (f" and {'<=' if high_inclusive else '<'} {high}" if high != math.inf else ""))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and not float(value).is_integer()):
            raise ValueError(f"{flag} {value!r}: must be {wanted}")
        ok = (math.isfinite(value) and (value >= low if inclusive else value > low)
              and (value <= high if high_inclusive else value < high))
        if not ok:
            raise ValueError(f"{flag} {value}: must be {wanted}")


# Settings that do not change what a run computes: free to differ on --resume.
RESUME_FREE = {"device", "out", "name", "log_every", "eval_every", "checkpoint_every", "eval_images",
               "distributed", "accum_freq"}   # how the same run is computed, not what it computes


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


# A weight this large means the run has blown up already (trained CLIP weights are < 100;
# float32 products of such weights overflow soon after): such a checkpoint is not "good".
MAX_HEALTHY_WEIGHT = 1e8


def run_folder(cfg):
    """runs/<name>: --out / (--name, default <dataset>-<model>)."""
    return Path(cfg.out) / (cfg.name or f"{cfg.dataset.replace(':', '_').replace('/', '_')}-{cfg.model}")


# ---- the run --------------------------------------------------------------------------

def train(cfg, resume=False, progress=True, allow_changes=False):
    """Train a CLIP as `cfg` says; returns the summary dict (also in summary.json).

    resume: continue from the run folder's checkpoint; settings that change the
    run must equal the checkpoint's unless allow_changes (the change is then
    noted in metrics.jsonl). The run folder is locked while the run is alive.
    Over N processes (mpiexec) every rank runs this; rank 0 alone locks and writes.
    """
    check_numbers(cfg)
    comm = distributed.communicator(cfg.distributed)    # one process, or this rank of N
    with comm.abort_on_error():          # one rank's error must not leave the others waiting
        with RunLock(run_folder(cfg)) if comm.is_main else contextlib.nullcontext():
            return _train(cfg, comm, resume, progress, allow_changes)


def _train(cfg, comm, resume, progress, allow_changes):
    device = backend.default_device() if cfg.device == "auto" else cfg.device
    backend.check_device(device)
    main = comm.is_main                                  # rank 0 writes files and prints
    rows = distributed.batch_rows(cfg.batch_size, comm, cfg.accum_freq)   # my rows of each batch
    tokenizer = Tokenizer.from_file(cfg.tokenizer) if cfg.tokenizer else Tokenizer.default()
    model_config = dataclasses.replace(get_config(cfg.model), vocab_size=len(tokenizer),
                                       image_resolution=cfg.image_size)
    check_config(cfg, model_config)
    run_dir = run_folder(cfg)
    last_ckpt = run_dir / "checkpoint.npz"

    task = make_task(cfg.dataset, seed=cfg.seed, image_size=cfg.image_size,
                     train_size=cfg.train_size)
    model = CLIP(model_config, seed=cfg.seed).to(device)
    optimizer = AdamW(param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    loader = DataLoader(task.train_images, task.captions,
                        lambda texts: tokenize(texts, model_config.context_length, truncate=True,
                                               tokenizer=tokenizer),
                        cfg.batch_size, shuffle=True, seed=cfg.seed,
                        augment=cfg.augment, rows=rows)
    step_fn = distributed.ContrastiveStep(model, comm, cfg.accum_freq)
    per_epoch = len(loader)
    total_steps = cfg.steps or (math.ceil(cfg.epochs * per_epoch) if cfg.epochs else None)
    eval_every = cfg.eval_every or max(1, (total_steps or 1000) // 5)

    step, elapsed_before, history, changes, last_good = 0, 0.0, [], {}, None
    # rank 0 reads the checkpoint (written by a run on any number of processes) for everyone
    state = comm.broadcast_object(load_checkpoint(last_ckpt) if main and resume and
                                  last_ckpt.exists() else None)
    if state is not None:
        meta = state["meta"]
        if not all(k in meta for k in ("step", "elapsed", "config")):
            raise ValueError(f"{last_ckpt} is not a miniclip training checkpoint (its metadata "
                             f"lacks step/elapsed/config): cannot resume from it")
        changes = resume_changes(meta["config"], cfg)
        if changes and not allow_changes:
            listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
            raise ValueError(f"--resume: this run's settings differ from the checkpoint's "
                             f"({listed}). Resume with the run's own settings, or pass "
                             f"--allow-changes to continue with the new ones")
        model.load_state_dict(state["params"])
        optimizer.load_state_dict(state["optim"])
        step, elapsed_before = meta["step"], meta["elapsed"]
        last_good = step
        if main:
            print(f"resumed from {last_ckpt} at step {step}")
    elif resume and main:
        print(f"nothing to resume in {run_dir}: starting afresh")
    distributed.broadcast_parameters(model, comm)       # every rank starts from rank 0's model
    metrics = run_dir / "metrics.jsonl"
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
             "tokenizer": cfg.tokenizer or "miniclip default (miniclip/data/miniclip_bpe.txt.gz)",
             "processes": comm.world_size}, indent=2))
        if step == 0:
            atomic_write(metrics, lambda f: None)
        else:  # no torn line, no record past the checkpoint; the curves start at step 1
            history = repair_metrics(metrics, step, write=lambda p, text: atomic_write(
                p, lambda f: f.write(text.encode("utf-8"))))

    def log(record):
        if main:
            with open(metrics, "a") as f:
                f.write(json.dumps(record) + "\n")

    if changes:
        log({"step": step, "note": "settings changed on resume (--allow-changes)",
             "changes": {k: {"checkpoint": a, "now": b} for k, (a, b) in changes.items()}})

    def checkpoint():
        """Save (rank 0), unless the weights are no longer finite (then the last good one is kept)."""
        nonlocal last_good
        distributed.check_parameters_identical(model, comm, step)
        if not params_healthy(model):
            raise TrainingDiverged(
                f"the weights are no longer finite (or above {MAX_HEALTHY_WEIGHT:.0e}) at step "
                f"{step}; not saved. {good_checkpoint()} Lower --lr, or rerun a few steps under "
                "miniclip.autograd.detect_anomaly()")
        if main:
            save_checkpoint(last_ckpt, model, optimizer, {
                "step": step, "elapsed": elapsed_before + time.perf_counter() - start,
                "config": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
                "tokenizer_merges": tokenizer.merges,   # the checkpoint carries its vocabulary
                "processes": comm.world_size})
        last_good = step

    def good_checkpoint():
        if last_good is None:
            return "There is no good checkpoint yet."
        return f"The last good checkpoint is {last_ckpt} (step {last_good})."

    def evaluate(limit=None):
        """Rank 0 evaluates in eval mode; the other ranks wait (asleep) until it is done."""
        result = None
        if main:
            with evaluating(model):
                result = task.evaluate(model, tokenizer, limit)
        comm.barrier()
        return result

    def progress_fraction():
        if cfg.time_budget:
            return (elapsed_before + time.perf_counter() - start) / (60 * cfg.time_budget)
        return step / total_steps

    def agreed_progress():
        """(fraction of the run done, stop?): rank 0's clock and anyone's Ctrl-C, on every rank."""
        return distributed.agree(comm, progress_fraction(), stop.requested)

    bar = _progress_bar(total_steps, step, progress and main)
    start = time.perf_counter()
    seen = 0
    with stop_requests() as stop:
        fraction, stopping = agreed_progress()
        while fraction < 1.0 and not stopping:
            epoch, first_batch = divmod(step, per_epoch)
            for images, ids, indices in loader.iter_epoch(epoch, start_batch=first_batch):
                # lr for this step: warmup then cosine, by steps or by the clock
                lr = cosine_schedule(min(fraction, 1.0), 1.0, cfg.warmup, cfg.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                optimizer.zero_grad()
                # both towers, the contrastive loss and loss.backward(), for the whole global
                # batch: model(images, ids) -> clip_loss -> backward on one process; over N
                # processes each encodes its rows and the loss is gathered (miniclip/distributed/).
                # The model copies images and ids to its device (ids after a range check on the host).
                logging = (step + 1) % cfg.log_every == 0 or step == 0
                result = step_fn(images, ids, task.groups[indices] if cfg.class_positives else None,
                                 accuracy=logging)
                loss_value = result.loss
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss is {loss_value} at step {step + 1}. {good_checkpoint()} Lower "
                        "--lr, or rerun a few steps under miniclip.autograd.detect_anomaly() to "
                        "find the first op that made NaN/Inf.")
                grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip)
                optimizer.step()
                clamp_logit_scale(model)
                step += 1
                seen += len(indices) * comm.world_size          # pairs of the global batch

                if logging:
                    i2t, t2i = result.acc_i2t, result.acc_t2i
                    rate = seen / (time.perf_counter() - start)
                    record = {"step": step, "epoch": epoch, "loss": loss_value,
                              "acc_i2t": i2t, "acc_t2i": t2i, "lr": lr, "grad_norm": grad_norm,
                              "temperature": 1.0 / math.exp(float(model.logit_scale.item())),
                              "images_per_second": rate,
                              "elapsed": elapsed_before + time.perf_counter() - start}
                    history.append(record)
                    log(record)
                    bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{i2t:.2f}", lr=f"{lr:.1e}",
                                    T=f"{record['temperature']:.3f}", ips=f"{rate:.0f}")
                bar.update(1)
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
                fraction, stopping = agreed_progress()
                if step % eval_every == 0 and fraction < 1.0:   # (the final one follows)
                    log({"step": step, "eval": evaluate(cfg.eval_images)})
                if fraction >= 1.0 or stopping:
                    break
    bar.close()
    train_seconds = time.perf_counter() - start
    wall = elapsed_before + train_seconds
    if stopping:
        checkpoint()
        if main:
            print(f"\ninterrupted ({stop.signal}) at step {step}: checkpoint written to {last_ckpt}; "
                  f"continue with:\n  python -m miniclip train --dataset {cfg.dataset} --out {cfg.out} "
                  f"--name {run_dir.name} --resume")
        return {"interrupted": True, "steps": step, "checkpoint": str(last_ckpt)}
    checkpoint()
    model.eval()                     # BatchNorm on its running statistics from here on
    final = evaluate()
    if not main:                        # the other ranks' work is done; rank 0 reports
        return {"rank": comm.rank, "steps": step, "processes": comm.world_size}
    log({"step": step, "eval": final, "final": True})
    # the headline: the mean over every zero-shot task of the dataset (each one beside it)
    summary = {"zero_shot_accuracy": final.get("zero_shot_accuracy"),
               "zero_shot": {key: final[key] for key in task.zero_shot},
               "headline": task.headline, task.headline: final[task.headline], "steps": step,
               "wall_seconds": round(wall, 2),
               "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
               "dataset": cfg.dataset, "model": cfg.model, "device": device,
               "processes": comm.world_size, "accum_freq": cfg.accum_freq,
               "final_loss": history[-1]["loss"] if history else None,
               "evaluation": final, "checkpoint": str(last_ckpt)}
    atomic_write(run_dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    _plots(run_dir, model, tokenizer, task.pairs, history)
    return summary


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


def _progress_bar(total, initial, enabled):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True)


def _plots(run_dir, model, tokenizer, pairs, history):
    """Loss/accuracy curves and a held-out similarity matrix, when matplotlib is installed."""
    try:
        from miniclip import viz
    except ImportError:                 # matplotlib is optional
        return
    viz.training_curves(history, run_dir / "curves.png")
    images, texts = pairs
    similarity = encode_images(model, images) @ encode_texts(model, texts, tokenizer).T
    viz.similarity_matrix(similarity, texts, run_dir / "similarity.png", images=images)
