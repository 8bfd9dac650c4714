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
"""
import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miniclip import backend
from miniclip.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from miniclip.data.loader import DataLoader
from miniclip.evaluate import encode_images, encode_texts
from miniclip.loss import batch_accuracy, clip_loss
from miniclip.model import CLIP, get_config
from miniclip.optim import (AdamW, clamp_logit_scale, clip_grad_norm, cosine_schedule,
                            param_groups_for_weight_decay)
from miniclip.tasks import check_dataset, make_task
from miniclip.tokenizer import Tokenizer, tokenize


# Per-dataset defaults: what an unset (None) TrainConfig field becomes. The
# length (steps / epochs / time_budget) applies only when none of the three is set.
DATASET_DEFAULTS = {
    "shapes": dict(model="tiny", steps=800, lr=2e-3),
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
    eval_images: int = 2000            # test images for the periodic (not final) evaluation

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


# ---- the run --------------------------------------------------------------------------

def positives_matrix(groups, xp):
    """Soft targets (B, B): row i spreads 1 over the pairs j that mean the same as i."""
    same = (groups[:, None] == groups[None, :]).astype(np.float32)
    return xp.asarray(same / same.sum(axis=1, keepdims=True))


def train(cfg, resume=False, progress=True):
    """Train a CLIP as `cfg` says; returns the summary dict (also in summary.json)."""
    device = backend.default_device() if cfg.device == "auto" else cfg.device
    backend.check_device(device)
    xp = backend.xp_for(device)
    tokenizer = Tokenizer.from_file(cfg.tokenizer) if cfg.tokenizer else Tokenizer.default()
    model_config = dataclasses.replace(get_config(cfg.model), vocab_size=len(tokenizer),
                                       image_resolution=cfg.image_size)
    check_config(cfg, model_config)
    run_dir = Path(cfg.out) / (cfg.name or f"{cfg.dataset.replace(':', '_').replace('/', '_')}-{cfg.model}")
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
                        augment=cfg.augment)
    per_epoch = len(loader)
    total_steps = cfg.steps or (math.ceil(cfg.epochs * per_epoch) if cfg.epochs else None)
    eval_every = cfg.eval_every or max(1, (total_steps or 1000) // 5)

    step, elapsed_before, history = 0, 0.0, []
    if resume and last_ckpt.exists():
        state = load_checkpoint(last_ckpt)
        model.load_state_dict(state["params"])
        optimizer.load_state_dict(state["optim"])
        step, elapsed_before = state["meta"]["step"], state["meta"]["elapsed"]
        print(f"resumed from {last_ckpt} at step {step}")
    elif resume:
        print(f"nothing to resume in {run_dir}: starting afresh")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(
        {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
         "tokenizer": cfg.tokenizer or "miniclip default (miniclip/data/miniclip_bpe.txt.gz)"},
        indent=2))
    if step == 0:
        (run_dir / "metrics.jsonl").write_text("")

    def log(record):
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def checkpoint():
        save_checkpoint(last_ckpt, model, optimizer, {
            "step": step, "elapsed": elapsed_before + time.perf_counter() - start,
            "config": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
            "tokenizer_merges": tokenizer.merges})      # the checkpoint carries its vocabulary

    def progress_fraction():
        if cfg.time_budget:
            return (elapsed_before + time.perf_counter() - start) / (60 * cfg.time_budget)
        return step / total_steps

    bar = _progress_bar(total_steps, step, progress)
    start = time.perf_counter()
    seen = 0
    with _stop_on_ctrl_c() as stop:
        while progress_fraction() < 1.0 and not stop.requested:
            epoch, first_batch = divmod(step, per_epoch)
            for images, ids, indices in loader.iter_epoch(epoch, start_batch=first_batch):
                # lr for this step: warmup then cosine, by steps or by the clock
                fraction = min(progress_fraction(), 1.0)
                lr = cosine_schedule(fraction, 1.0, cfg.warmup, cfg.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                # the model copies both to its device (ids after a range check on the host)
                logits_per_image, logits_per_text = model(images, ids)
                positives = (positives_matrix(task.groups[indices], xp)
                             if cfg.class_positives else None)
                loss = clip_loss(logits_per_image, logits_per_text, positives)
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss is {loss_value} at step {step + 1}. The last good checkpoint is "
                        f"{last_ckpt if last_ckpt.exists() else '(none yet)'}. Lower --lr, or "
                        "rerun a few steps under miniclip.autograd.detect_anomaly() to find "
                        "the first op that made NaN/Inf.")
                optimizer.zero_grad()
                loss.backward()
                grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip)
                optimizer.step()
                clamp_logit_scale(model)
                step += 1
                seen += len(indices)

                if step % cfg.log_every == 0 or step == 1:
                    i2t, t2i = batch_accuracy(logits_per_image)
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
                if step % eval_every == 0:
                    with evaluating(model):
                        log({"step": step, "eval": task.evaluate(model, tokenizer, cfg.eval_images)})
                if progress_fraction() >= 1.0 or stop.requested:
                    break
    bar.close()
    train_seconds = time.perf_counter() - start
    wall = elapsed_before + train_seconds
    if stop.requested:
        checkpoint()
        print(f"\ninterrupted at step {step}: checkpoint written to {last_ckpt}; "
              "continue with --resume")
        return {"interrupted": True, "steps": step, "checkpoint": str(last_ckpt)}
    checkpoint()
    model.eval()                     # BatchNorm on its running statistics from here on
    final = task.evaluate(model, tokenizer)
    log({"step": step, "eval": final, "final": True})
    # the headline: the mean over every zero-shot task of the dataset (each one beside it)
    summary = {"zero_shot_accuracy": final.get("zero_shot_accuracy"),
               "zero_shot": {key: final[key] for key in task.zero_shot},
               "headline": task.headline, task.headline: final[task.headline], "steps": step,
               "wall_seconds": round(wall, 2),
               "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
               "dataset": cfg.dataset, "model": cfg.model, "device": device,
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


class _StopFlag:
    requested = False


@contextlib.contextmanager
def _stop_on_ctrl_c():
    """The first Ctrl-C asks the loop to stop after the current step (then it saves a
    checkpoint); a second one interrupts at once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag                              # signals reach only the main thread
        return

    def handler(signum, frame):
        flag.requested = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C: the usual KeyboardInterrupt
        print("\nCtrl-C: stopping after this step and saving a checkpoint "
              "(press again to abort without saving)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


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
