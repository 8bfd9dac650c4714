"""Training a CLIP from scratch: a plain loop you can put a breakpoint in.

`train(cfg)` is the loop. Each step, on one process:

    lr = cosine_schedule(...)                            # warmup, then cosine decay
    logits_per_image, logits_per_text = model(images, ids)
    loss = clip_loss(logits_per_image, logits_per_text, positives)   # or, --loss siglip:
                                                         # siglip_loss(logits_per_image, positives)
    loss.backward()
    clip_grad_norm(model.parameters(), grad_clip)        # global-norm clipping
    optimizer.step()                                     # AdamW, decoupled weight decay
    clamp_logit_scale(model)                             # temperature stays >= 1/100

and a few calls to a Run (miniclip/run.py), which keeps the run folder (runs/<name>/:
config.json, metrics.jsonl, checkpoints, summary.json, plots), resumes, logs, saves,
evaluates and stops on Ctrl-C.

On several processes (`mpiexec -n N python -m miniclip train ...`) or with
`--accum-freq K > 1` (gradient caching), the three lines model / loss / backward
are replaced by one call, `dp_step(images, ids, groups)`, of miniclip.distributed:
each rank encodes its B/N rows of the global batch (in K chunks), the loss is
computed on features gathered from every rank (SigLIP's: on text features passed
round a ring), and the gradients are averaged, so every rank takes the same
optimiser step. Rank 0 alone writes the run folder and prints.

--loss siglip trains with SigLIP's sigmoid loss (the model then has a logit_bias);
--temperature T starts τ at T (logit_scale = ln(1/T)), and --fixed-temperature keeps
it there: logit_scale is then not learned, not decayed and not in the optimiser.
"""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from miniclip import backend, distributed
from miniclip.config import LOSSES, MAX_LOGIT_SCALE, get_config
from miniclip.data.loader import DataLoader
from miniclip.loss import batch_accuracy, clip_loss, siglip_loss
from miniclip.model import CLIP
from miniclip.optim import (AdamW, clamp_logit_scale, clip_grad_norm, cosine_schedule,
                            param_groups_for_weight_decay)
from miniclip.run import Run, TrainingDiverged  # noqa: F401  (TrainingDiverged: raised by the Run)
from miniclip.tasks import check_dataset, make_task
from miniclip.tokenizer import Tokenizer, tokenize


# Per-dataset defaults: what an unset (None) TrainConfig field becomes. The
# length (steps / epochs / time_budget) applies only when none of the three is set.
# shapes: colour, shape and size are learned in a few hundred steps; position
# comes last (14 % at step 150, 95 % at step 450 of a 750-step run at lr 1e-3;
# lr 2e-3 left it at 24 % after 800 steps): 600 steps of `tiny` at lr 1e-3
# (the README gives how long that takes).
# No augmentation for shapes: a flip turns 'left' into 'right'.
# cifar: the ResNet tower `cifar-rn`, which learns more per minute on a CPU than the
# ViT `cifar-tiny` at the same settings (docs/cifar.md: 66.6 % against 52.5 % after
# 10 minutes on the project's 2-core machine), with random crops and flips: 70.1 %
# after 10 minutes, 78.3 % after 20 (73.4 % without). Runs of under ~10 epochs learn
# more without them (--no-augment: 71.9 % after 10 minutes, 66.8 against 62.8 % after 5).
DATASET_DEFAULTS = {
    "shapes": dict(model="tiny", steps=600, lr=1e-3, augment=False),
    "cifar": dict(model="cifar-rn", time_budget=10.0, lr=2e-3, augment=True),
    "csv": dict(model="tiny", epochs=10.0, lr=2e-3, augment=True),
    "karpathy": dict(model="tiny", epochs=10.0, lr=2e-3, augment=True),
}


def dataset_kind(dataset):
    """'shapes', 'cifar', 'csv' or 'karpathy': the key of DATASET_DEFAULTS for a dataset name."""
    if dataset.startswith(("csv:", "karpathy:")):
        return dataset.split(":", 1)[0]
    return "cifar" if dataset.startswith("cifar") else dataset


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as config.json in the run folder.

    Every default lives here: `train(TrainConfig())` is `python -m miniclip train`,
    and the CLI's flags take their defaults from this class. Fields left None
    that have a per-dataset default (DATASET_DEFAULTS) are filled in on creation.
    """
    dataset: str = "shapes"            # shapes | cifar10 | cifar100 | csv:PATH | karpathy:PATH
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
    augment: bool | None = None        # random crop + flip (per dataset: off for shapes,
                                       # on for the others)
    class_positives: bool = True       # same class (or same caption) in a batch = a positive
    seed: int = 0
    device: str = "auto"
    out: str = "runs"
    name: str | None = None            # run folder name; None: <dataset>-<model>
    tokenizer: str | None = None       # a merges file; default: miniclip's own vocabulary
    image_size: int = 32
    train_size: int | None = None      # shapes: number of training images
    log_every: int = 10
    eval_every: int | None = None      # steps between evaluations (default: 5 per run;
                                       # every 200 steps with a time_budget)
    checkpoint_every: int = 200
    eval_images: int = 1000            # test images for the periodic (not final) evaluation
    loss: str = "clip"                 # clip (softmax, OpenAI's) | siglip (sigmoid, Zhai et al. 2023)
    temperature: float | None = None   # initial τ in (0, 1] (logit_scale = ln(1/τ)); None: the
                                       # loss's default (clip 0.07, siglip 0.1)
    fixed_temperature: bool = False    # hold τ fixed: logit_scale not learned (not in the optimiser)
    accum_freq: int = 1                # gradient caching: each process encodes its rows in K chunks
    distributed: bool | None = None    # None: over MPI when mpiexec started several processes
    csv_separator: str = "\t"          # csv:PATH datasets: the column separator ...
    csv_img_key: str = "filepath"      # ... the image path column ...
    csv_caption_key: str = "title"     # ... and the caption column (OpenCLIP's defaults)
    images: str | None = None          # karpathy:PATH datasets: the image folder

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
            self.augment = defaults["augment"]


# ---- checks before any work ------------------------------------------------------------

def check_config(cfg):
    """Refuse settings that cannot work, with the reason (after check_numbers)."""
    if cfg.batch_size < 2:
        raise ValueError(f"batch_size={cfg.batch_size}: the contrastive loss needs at least 2 "
                         "pairs per batch (with 1 the only caption is always right: loss ≡ 0)")
    if cfg.steps is None and cfg.epochs is None and cfg.time_budget is None:
        raise ValueError("say how long to train: steps, epochs or time_budget")
    if cfg.loss not in LOSSES:
        raise ValueError(f"--loss {cfg.loss!r}: must be one of {', '.join(LOSSES)}")
    if cfg.temperature is not None and -math.log(cfg.temperature) > MAX_LOGIT_SCALE:
        raise ValueError(f"--temperature {cfg.temperature}: below 0.01, the lowest temperature training "
                         "keeps (logit_scale is clamped to ln 100, as OpenCLIP does): use 0.01 to 1")
    if not (isinstance(cfg.csv_separator, str) and len(cfg.csv_separator) == 1):
        raise ValueError(f"--csv-separator {cfg.csv_separator!r}: must be one character "
                         "(e.g. ',' or ';'; 'tab' or '\\t' for a tab, the default)")


# Each numeric setting: (kind, lowest allowed, whether the lowest itself is allowed).
# (batch_size has its own check in check_config, with the reason.)
NUMBER_RULES = {
    "steps": (int, 1, True), "epochs": (float, 0, False), "time_budget": (float, 0, False),
    "lr": (float, 0, False), "weight_decay": (float, 0, True),
    "beta1": (float, 0, True), "beta2": (float, 0, True), "eps": (float, 0, False),
    "warmup": (float, 0, True), "grad_clip": (float, 0, False), "seed": (int, 0, True),
    "image_size": (int, 1, True), "train_size": (int, 1, True), "log_every": (int, 1, True),
    "eval_every": (int, 1, True), "checkpoint_every": (int, 1, True), "eval_images": (int, 1, True),
    "temperature": (float, 0, False),
}
UPPER = {"beta1": (1, False), "beta2": (1, False), "warmup": (1, False), "seed": (2**32 - 1, True),
         "temperature": (1, True)}


def check_numbers(cfg):
    """Every numeric setting finite and in its range, before any work; one line naming the flag.

    steps / epochs / time_budget must be positive (a negative one trained forever,
    steps=0 crashed, nan ran nothing), rates and intervals positive, weight_decay
    >= 0, betas and warmup in [0, 1), seed in [0, 2**32 - 1], temperature in (0, 1].
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


def note_model_size(cfg, model, n_images):
    """Say (one line) when the model is far too big for the data: > 10 M parameters and
    > 1,000 per training image, or a ViT whose patches leave fewer than 2×2 per image."""
    n = sum(p.size for p in model.parameters())
    config = model.config
    patches = None if config.is_resnet else cfg.image_size // config.vision_patch_size
    if (n > 10_000_000 and n > 1000 * n_images) or (patches is not None and patches < 2):
        default = DATASET_DEFAULTS[dataset_kind(cfg.dataset)]["model"]
        grid = f", {patches}×{patches} patch(es) each" if patches is not None else ""
        print(f"note: --model {cfg.model} ({n / 1e6:.1f} M parameters, checkpoints of "
              f"~{12 * n / 1e9:.1f} GB) is far too big for {n_images} training images of "
              f"{cfg.image_size}×{cfg.image_size}{grid}: expect a slow run and no better accuracy "
              f"than --model {default}, this dataset's default")


def model_config_for(cfg, tokenizer):
    """This run's CLIPConfig: --model with the tokenizer's vocabulary and --image-size, trained
    with --loss from --temperature τ (logit_scale = ln(1/τ); None: the loss's default)."""
    return dataclasses.replace(get_config(cfg.model), vocab_size=len(tokenizer),
                               image_resolution=cfg.image_size, loss=cfg.loss,
                               init_logit_scale=None if cfg.temperature is None else -math.log(cfg.temperature))


def same_caption_targets(groups, xp, loss="clip"):
    """(B, B) targets of the pairs j of the batch with groups[j] == groups[i]: for clip_loss,
    row i spreads 1 over them (soft targets); for siglip_loss, 1 there and 0 elsewhere."""
    same = (groups[:, None] == groups[None, :]).astype(np.float32)
    return xp.asarray(same if loss == "siglip" else same / same.sum(axis=1, keepdims=True))


# ---- the run --------------------------------------------------------------------------

def train(cfg, resume=False, progress=True, allow_changes=False, overwrite=False):
    """Train a CLIP as `cfg` says; returns the summary dict (also in summary.json).

    resume: continue from the run folder's checkpoint; settings that change the run
    must equal the checkpoint's unless allow_changes (the change is then noted in
    metrics.jsonl). overwrite: replace a finished or stopped run in the folder (without
    it, and without resume, such a folder is refused). Over N processes (mpiexec)
    every rank runs this; rank 0 alone locks the folder, writes and prints.
    """
    check_numbers(cfg)
    check_config(cfg)
    comm = distributed.communicator(cfg.distributed)    # one process, or this rank of N
    # abort_on_error: one rank's error must not leave the others waiting
    with comm.abort_on_error(), Run(cfg, comm, resume, overwrite, progress) as run:
        device = backend.default_device() if cfg.device == "auto" else cfg.device
        backend.check_device(device)
        rows = distributed.batch_rows(cfg.batch_size, comm, cfg.accum_freq)  # my rows of a batch
        tokenizer = Tokenizer.from_file(cfg.tokenizer) if cfg.tokenizer else Tokenizer.default()
        model_config = model_config_for(cfg, tokenizer)
        task = make_task(cfg.dataset, seed=cfg.seed, image_size=cfg.image_size,
                         train_size=cfg.train_size, csv=dict(sep=cfg.csv_separator,
                         img_key=cfg.csv_img_key, caption_key=cfg.csv_caption_key),
                         images=cfg.images)
        model = CLIP(model_config, seed=cfg.seed).to(device)
        model.logit_scale.requires_grad = not cfg.fixed_temperature   # fixed: left out of AdamW
        if comm.is_main:
            note_model_size(cfg, model, len(task.train_images))
        optimizer = AdamW(param_groups_for_weight_decay(model, cfg.weight_decay), lr=cfg.lr,
                          betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
        loader = DataLoader(task.train_images, task.captions,
                            lambda texts: tokenize(texts, model_config.context_length,
                                                   truncate=True, tokenizer=tokenizer),
                            cfg.batch_size, shuffle=True, seed=cfg.seed,
                            augment=cfg.augment, rows=rows)
        xp = backend.xp_for(device)
        # several processes, or gradient caching: the whole step is one call (miniclip/distributed/)
        several = comm.world_size > 1 or cfg.accum_freq > 1
        dp_step = distributed.ContrastiveStep(model, comm, cfg.accum_freq) if several else None
        per_epoch = len(loader)
        total_steps = cfg.steps or (math.ceil(cfg.epochs * per_epoch) if cfg.epochs else None)
        eval_every = cfg.eval_every or max(1, (total_steps or 1000) // 5)

        step = run.start(model, optimizer, model_config, tokenizer, total_steps, allow_changes)
        with run.steps():          # Ctrl-C, SIGTERM, SIGHUP: stop after a step; the progress bar
            fraction, stopping = run.progress(step)
            while fraction < 1.0 and not stopping:
                epoch, first_batch = divmod(step, per_epoch)
                for images, ids, indices in loader.iter_epoch(epoch, start_batch=first_batch):
                    # lr for this step: warmup then cosine, by steps or by the clock
                    lr = cosine_schedule(min(fraction, 1.0), 1.0, cfg.warmup, cfg.lr)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    # pairs with the same class (or caption) are positives of each other
                    groups = task.groups[indices] if cfg.class_positives else None
                    logging = (step + 1) % cfg.log_every == 0 or step == 0

                    optimizer.zero_grad()
                    if dp_step:   # my rows of the global batch, gathered (SigLIP: ring) loss, mean gradients
                        result = dp_step(images, ids, groups, accuracy=logging)
                        loss_value, acc_i2t, acc_t2i = result.loss, result.acc_i2t, result.acc_t2i
                    else:                # the model copies images and ids to its device
                        logits_per_image, logits_per_text = model(images, ids)        # (B, B) each
                        positives = None if groups is None else same_caption_targets(groups, xp, cfg.loss)
                        if cfg.loss == "siglip":   # N² yes/no questions: does image i match caption j?
                            loss = siglip_loss(logits_per_image, positives=positives)
                        else:                      # which of the B captions (images) is mine?
                            loss = clip_loss(logits_per_image, logits_per_text, positives)
                        loss.backward()
                        loss_value = float(loss.item())
                        # the accuracies cost two device reads: only on the steps that log them
                        acc_i2t, acc_t2i = (batch_accuracy(logits_per_image) if logging
                                            else (None, None))
                    run.check_loss(loss_value, step + 1)
                    grad_norm = clip_grad_norm(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    clamp_logit_scale(model)
                    step += 1

                    if logging:
                        temperature = 1.0 / math.exp(float(model.logit_scale.item()))
                        run.log_step({"step": step, "epoch": epoch, "loss": loss_value,
                                      "acc_i2t": acc_i2t, "acc_t2i": acc_t2i, "lr": lr,
                                      "grad_norm": grad_norm, "temperature": temperature})
                    if step % cfg.checkpoint_every == 0:
                        run.checkpoint(step)
                    fraction, stopping = run.progress(step)
                    if step % eval_every == 0 and fraction < 1.0:   # (the final one follows)
                        run.log({"step": step, "eval": run.evaluate(task, cfg.eval_images)})
                    if fraction >= 1.0 or stopping:
                        break
        if stopping:
            return run.interrupted(step)
        run.checkpoint(step)
        model.eval()                     # BatchNorm on its running statistics from here on
        return run.finish(step, run.evaluate(task), task, device)
