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
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miniclip import backend, distributed
from miniclip.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from miniclip.data.loader import DataLoader
from miniclip.evaluate import (encode_images, encode_texts, recall_at_k, zero_shot_accuracy,
                               zero_shot_classifier)
from miniclip.model import CLIP, get_config
from miniclip.optim import (AdamW, clamp_logit_scale, clip_grad_norm, cosine_schedule,
                            param_groups_for_weight_decay)
from miniclip.tokenizer import Tokenizer, tokenize


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json in the run folder."""
    dataset: str = "shapes"            # shapes | cifar10 | cifar100 | csv:PATH
    model: str = "tiny"                # a name in miniclip.model.CONFIGS
    steps: int | None = None           # stop after this many optimiser steps ...
    epochs: float | None = None        # ... or this many passes over the data ...
    time_budget: float | None = None   # ... or this many minutes (schedule follows the clock)
    batch_size: int = 128
    lr: float = 2e-3
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
    name: str | None = None
    tokenizer: str | None = None       # a merges file; default: miniclip's own vocabulary
    image_size: int = 32
    train_size: int | None = None      # shapes: number of training images
    log_every: int = 10
    eval_every: int | None = None      # steps between evaluations (default: 5 per run)
    checkpoint_every: int = 200
    eval_images: int = 2000            # test images for the periodic (not final) evaluation
    accum_freq: int = 1                # gradient caching: each process encodes its rows in K chunks
    distributed: bool | None = None    # None: over MPI when mpiexec started several processes


class TrainingDiverged(RuntimeError):
    pass


# ---- data ---------------------------------------------------------------------------

@dataclass
class Task:
    """What the loop needs from a dataset."""
    train_images: np.ndarray           # uint8 (N, S, S, 3)
    captions: object                   # (indices, rng) -> list of str
    groups: np.ndarray                 # (N,) ints: equal = same meaning (class, same facts)
    evaluate: object                   # (model, tokenizer, limit) -> dict of metrics
    headline: str                      # the metric summary.json calls zero_shot_accuracy
    pairs: tuple                       # (uint8 images (n, S, S, 3), n captions) held out, to plot


def _shapes_task(cfg):
    from miniclip.data.shapes import ShapesDataset, zero_shot_tasks
    train = ShapesDataset("train", seed=cfg.seed, image_size=cfg.image_size, size=cfg.train_size)
    splits = {s: ShapesDataset(s, seed=cfg.seed, image_size=cfg.image_size)
              for s in ("test", "heldout")}
    arrays = {s: d.arrays() for s, d in splits.items()}
    tasks = zero_shot_tasks()

    def evaluate(model, tokenizer, limit=None):
        result = {}
        for split, attrs in (("test", ("colour", "shape", "size", "position")),
                             ("heldout", ("object", "colour", "shape"))):
            n = len(arrays[split]) if limit is None else min(limit, len(arrays[split]))
            feats = encode_images(model, arrays[split][:n])
            for attr in attrs:
                names, templates = tasks[attr]
                classifier = zero_shot_classifier(model, names, templates, tokenizer)
                acc = zero_shot_accuracy(feats, splits[split].labels(attr)[:n], classifier)
                result[f"{split}/{attr}"] = acc["top1"]
            if split == "test":
                texts = splits[split].captions(np.arange(n))
                result.update({f"test/{k}": v for k, v in recall_at_k(
                    feats, encode_texts(model, texts, tokenizer)).items()})
        result["zero_shot_accuracy"] = (result["test/colour"] + result["test/shape"]) / 2
        return result

    # images whose objects agree in every attribute can swap captions: one group
    o = train.objects
    facts = np.concatenate([o[k] for k in ("colour", "shape", "size", "position")], axis=1)
    _, groups = np.unique(facts, axis=0, return_inverse=True)
    pairs = (arrays["test"][:12], splits["test"].captions(np.arange(12)))
    return Task(train.arrays(), train.captions, groups, evaluate, "zero_shot_accuracy", pairs)


def _cifar_task(cfg):
    from miniclip.data.cifar import TEMPLATES, load_cifar
    from miniclip.data.loader import label_captions
    images, labels, classnames = load_cifar(cfg.dataset, "train")
    test_images, test_labels, _ = load_cifar(cfg.dataset, "test")

    def evaluate(model, tokenizer, limit=None):
        n = len(test_images) if limit is None else min(limit, len(test_images))
        classifier = zero_shot_classifier(model, classnames, TEMPLATES, tokenizer)
        acc = zero_shot_accuracy(encode_images(model, test_images[:n]), test_labels[:n], classifier)
        return {"zero_shot_accuracy": acc["top1"], "top5": acc.get("top5"),
                "per_class": dict(zip(classnames, np.round(acc["per_class"], 4).tolist()))}

    first = [int(np.flatnonzero(test_labels == c)[0]) for c in range(min(len(classnames), 12))]
    pairs = (test_images[first], [TEMPLATES[0].format(classnames[test_labels[i]]) for i in first])
    return Task(images, label_captions(labels, classnames, TEMPLATES), labels, evaluate,
                "zero_shot_accuracy", pairs)


def _csv_task(cfg):
    from miniclip.data.csv import CsvDataset
    data = CsvDataset(cfg.dataset[len("csv:"):], image_size=cfg.image_size)
    n_test = max(1, len(data) // 10)                  # the last 10 % is held out
    images, texts = data.arrays(), list(data.texts)

    def evaluate(model, tokenizer, limit=None):
        feats = encode_images(model, images[-n_test:])
        return recall_at_k(feats, encode_texts(model, texts[-n_test:], tokenizer))

    def captions(indices, rng):
        return [texts[i] for i in indices]

    _, groups = np.unique(texts[:-n_test], return_inverse=True)
    pairs = (images[-n_test:][:12], texts[-n_test:][:12])
    return Task(images[:-n_test], captions, groups, evaluate, "image_to_text_R@1", pairs)


def make_task(cfg):
    if cfg.dataset == "shapes":
        return _shapes_task(cfg)
    if cfg.dataset in ("cifar10", "cifar100"):
        return _cifar_task(cfg)
    if cfg.dataset.startswith("csv:"):
        return _csv_task(cfg)
    raise ValueError(f"unknown dataset {cfg.dataset!r}: use shapes, cifar10, cifar100 or csv:PATH")


# ---- checks before any work ------------------------------------------------------------

def check_config(cfg, model_config):
    """Refuse settings that cannot work, with the reason."""
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size={cfg.batch_size}: the contrastive loss needs at least 2 "
                         "pairs per batch (with 1 the only caption is always right: loss ≡ 0)")
    if model_config.image_resolution % model_config.vision_patch_size:
        raise ValueError(f"image size {model_config.image_resolution} is not divisible by the "
                         f"patch size {model_config.vision_patch_size}")
    if cfg.steps is None and cfg.epochs is None and cfg.time_budget is None:
        raise ValueError("say how long to train: steps, epochs or time_budget")
    if cfg.lr <= 0:
        raise ValueError(f"lr={cfg.lr} must be positive")
    valid = cfg.dataset in ("shapes", "cifar10", "cifar100") or cfg.dataset.startswith("csv:")
    if not valid:
        raise ValueError(f"unknown dataset {cfg.dataset!r}: use shapes, cifar10, cifar100 or csv:PATH")


# ---- the run --------------------------------------------------------------------------

def train(cfg, resume=False, progress=True):
    """Train a CLIP as `cfg` says; returns the summary dict (also in summary.json)."""
    comm = distributed.communicator(cfg.distributed)    # one process, or this rank of N
    with comm.abort_on_error():          # one rank's error must not leave the others waiting
        return _train(cfg, comm, resume, progress)


def _train(cfg, comm, resume, progress):
    device = backend.default_device() if cfg.device == "auto" else cfg.device
    backend.check_device(device)
    main = comm.is_main                                  # rank 0 writes files and prints
    rows = distributed.batch_rows(cfg.batch_size, comm, cfg.accum_freq)   # my rows of each batch
    tokenizer = Tokenizer.from_file(cfg.tokenizer) if cfg.tokenizer else Tokenizer.default()
    model_config = dataclasses.replace(get_config(cfg.model), vocab_size=len(tokenizer),
                                       image_resolution=cfg.image_size)
    check_config(cfg, model_config)
    run_dir = Path(cfg.out) / (cfg.name or f"{cfg.dataset.replace(':', '_').replace('/', '_')}-{cfg.model}")
    last_ckpt = run_dir / "checkpoint.npz"

    task = make_task(cfg)
    model = CLIP(model_config, seed=cfg.seed).to(device)
    optimizer = AdamW(param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    loader = DataLoader(task.train_images, task.captions,
                        lambda texts: tokenize(texts, model_config.context_length, truncate=True,
                                               tokenizer=tokenizer),
                        cfg.batch_size, shuffle=True, seed=cfg.seed,
                        augment=cfg.dataset != "shapes" if cfg.augment is None else cfg.augment,
                        rows=rows)
    step_fn = distributed.ContrastiveStep(model, comm, cfg.accum_freq)
    per_epoch = len(loader)
    total_steps = cfg.steps or (math.ceil(cfg.epochs * per_epoch) if cfg.epochs else None)
    eval_every = cfg.eval_every or max(1, (total_steps or 1000) // 5)

    step, elapsed_before, history = 0, 0.0, []
    # rank 0 reads the checkpoint (written by a run on any number of processes) for everyone
    state = comm.broadcast_object(load_checkpoint(last_ckpt) if main and resume and
                                  last_ckpt.exists() else None)
    if state is not None:
        model.load_state_dict(state["params"])
        optimizer.load_state_dict(state["optim"])
        step, elapsed_before = state["meta"]["step"], state["meta"]["elapsed"]
        if main:
            print(f"resumed from {last_ckpt} at step {step}")
    elif resume and main:
        print(f"nothing to resume in {run_dir}: starting afresh")
    distributed.broadcast_parameters(model, comm)       # every rank starts from rank 0's model
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"train": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
             "tokenizer": cfg.tokenizer or "miniclip default (data/miniclip_bpe.txt.gz)",
             "processes": comm.world_size}, indent=2))
        if step == 0:
            (run_dir / "metrics.jsonl").write_text("")

    def log(record):
        if main:
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint():
        distributed.check_parameters_identical(model, comm, step)
        if main:
            save_checkpoint(last_ckpt, model, optimizer, {
                "step": step, "elapsed": elapsed_before + time.perf_counter() - start,
                "config": dataclasses.asdict(cfg), "model": dataclasses.asdict(model_config),
                "tokenizer_merges": tokenizer.merges,   # the checkpoint carries its vocabulary
                "processes": comm.world_size})

    def evaluate(limit=None):
        """Rank 0 evaluates; the other ranks wait (asleep) until it is done."""
        result = task.evaluate(model, tokenizer, limit) if main else None
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
    with _stop_on_ctrl_c() as stop:
        fraction, stopping = agreed_progress()
        while fraction < 1.0 and not stopping:
            epoch, first_batch = divmod(step, per_epoch)
            for images, ids, indices in loader.iter_epoch(epoch, start_batch=first_batch):
                # lr for this step: warmup then cosine, by steps or by the clock
                lr = cosine_schedule(min(fraction, 1.0), 1.0, cfg.warmup, cfg.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                x, t = backend.to_device(images, device), backend.to_device(ids, device)
                optimizer.zero_grad()
                # both towers, the contrastive loss and loss.backward(), for the whole global
                # batch: model(x, t) -> clip_loss -> backward on one process; over N processes
                # each encodes its rows and the loss is gathered (miniclip/distributed/)
                result = step_fn(x, t, task.groups[indices] if cfg.class_positives else None)
                loss_value = result.loss
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(
                        f"loss is {loss_value} at step {step + 1}. The last good checkpoint is "
                        f"{last_ckpt if last_ckpt.exists() else '(none yet)'}. Lower --lr, or "
                        "rerun a few steps under miniclip.autograd.detect_anomaly() to find "
                        "the first op that made NaN/Inf.")
                grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip)
                optimizer.step()
                clamp_logit_scale(model)
                step += 1
                seen += len(indices) * comm.world_size          # pairs of the global batch

                if step % cfg.log_every == 0 or step == 1:
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
                if step % eval_every == 0:
                    log({"step": step, "eval": evaluate(cfg.eval_images)})
                fraction, stopping = agreed_progress()
                if fraction >= 1.0 or stopping:
                    break
    bar.close()
    train_seconds = time.perf_counter() - start
    wall = elapsed_before + train_seconds
    if stopping:
        checkpoint()
        if main:
            print(f"\ninterrupted at step {step}: checkpoint written to {last_ckpt}; "
                  "continue with --resume")
        return {"interrupted": True, "steps": step, "checkpoint": str(last_ckpt)}
    checkpoint()
    final = evaluate()
    if not main:                        # the other ranks' work is done; rank 0 reports
        return {"rank": comm.rank, "steps": step, "processes": comm.world_size}
    log({"step": step, "eval": final, "final": True})
    summary = {"zero_shot_accuracy": final[task.headline], "steps": step,
               "wall_seconds": round(wall, 2),
               "images_per_second": round(seen / max(train_seconds, 1e-9), 1),
               "dataset": cfg.dataset, "model": cfg.model, "device": device,
               "processes": comm.world_size, "accum_freq": cfg.accum_freq,
               "final_loss": history[-1]["loss"] if history else None,
               "evaluation": final, "checkpoint": str(last_ckpt)}
    atomic_write(run_dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    _plots(run_dir, model, tokenizer, task.pairs, history)
    return summary


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
