"""SigLIP's sigmoid loss beside CLIP's softmax loss, and a fixed beside a learned temperature,
on the shapes task: `python benchmarks/siglip_vs_clip.py`

The same model (--model) is trained from scratch on shapes with each loss, for the same
number of pairs seen (--pairs: steps = pairs / batch), over --seeds seeds (each seed
changes the initial weights and the data order), through miniclip's own `train()`:

  1. each loss at batch 16, 32, 64 and 128 (each loss at its own initial temperature:
     CLIP τ = 0.07, SigLIP τ = 0.1 and bias −10);
  2. at one batch (--temperature-batch), each loss with the temperature fixed or learned,
     starting at τ ∈ {0.01, 0.07, 0.3, 1};
  3. the time of one training step (forward, loss, backward, clipping, AdamW) with each
     loss, on the same model and batch, the two losses alternating, median of --repeats.

It prints markdown tables: zero-shot accuracy (the mean over shapes' four zero-shot tasks:
colour, shape, size, position) as mean ± standard deviation over the seeds, and the step
times with the ratio SigLIP / CLIP. Every run uses the learning rate --lr and the rest of
TrainConfig's defaults for shapes.

    python benchmarks/siglip_vs_clip.py                                  # the full measurement
    python benchmarks/siglip_vs_clip.py --pairs 19200 --seeds 2 --model micro
    python benchmarks/siglip_vs_clip.py --smoke                          # seconds: does it run?
"""
import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # this checkout's miniclip

from miniclip.config import LOSSES as LOSS_SCALES, get_config       # noqa: E402
from miniclip.loss import clip_loss, siglip_loss                     # noqa: E402
from miniclip.model import CLIP                                      # noqa: E402
from miniclip.optim import (AdamW, clamp_logit_scale, clip_grad_norm,  # noqa: E402
                            param_groups_for_weight_decay)
from miniclip.tokenizer import Tokenizer                             # noqa: E402
from miniclip.train import TrainConfig, train                        # noqa: E402

LOSSES = ("clip", "siglip")
BATCHES = (16, 32, 64, 128)
TEMPERATURES = (0.01, 0.07, 0.3, 1.0)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="a named config (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=76_800,
                        help="pairs seen by every run: steps = pairs / batch (default: %(default)s, "
                             "shapes' default run: 600 steps of 128)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    parser.add_argument("--temperature-batch", type=int, default=64,
                        help="the batch of the temperature table (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per loss (default: %(default)s)")
    parser.add_argument("--train-size", type=int, help="shapes training images (default: shapes' own)")
    parser.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny version (micro, 64 pairs of 64 images, one seed, batch 16, τ 0.07, "
                             "2 repeats)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.pairs, args.seeds, args.repeats, args.train_size = "micro", 64, 1, 2, 64
        args.batches, args.temperatures, args.temperature_batch = [16], [0.07], 16
    for name in ("pairs", "seeds", "repeats", "temperature_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    if any(b < 2 for b in args.batches) or max(args.batches + [args.temperature_batch]) > args.pairs:
        parser.error("every batch must be at least 2 and at most --pairs")
    if not all(0.01 <= t <= 1 for t in args.temperatures):
        parser.error("every temperature must be in [0.01, 1]")
    return args


class Runs:
    """Zero-shot accuracy of training runs, each setting run once per seed (and only once)."""

    def __init__(self, args, out):
        self.args, self.out, self.done = args, Path(out), {}

    def accuracy(self, loss, batch, temperature=None, fixed=False):
        """[zero-shot accuracy of each seed] for one setting (temperature None: the loss's own)."""
        if not fixed and temperature is not None and math.isclose(-math.log(temperature), LOSS_SCALES[loss][0]):
            temperature = None                   # a learned τ from the loss's default: the same runs
        key = (loss, batch, temperature, fixed)
        if key not in self.done:
            self.done[key] = [self.one(loss, batch, temperature, fixed, seed) for seed in range(self.args.seeds)]
        return self.done[key]

    def one(self, loss, batch, temperature, fixed, seed):
        name = f"{loss}-b{batch}-t{temperature}-{'fixed' if fixed else 'learned'}-s{seed}"
        cfg = TrainConfig(dataset="shapes", model=self.args.model, steps=max(1, self.args.pairs // batch),
                          batch_size=batch, lr=self.args.lr, loss=loss, temperature=temperature,
                          fixed_temperature=fixed, seed=seed, out=str(self.out), name=name,
                          eval_every=10**9, checkpoint_every=10**9, log_every=10**9,
                          train_size=self.args.train_size)
        started = time.perf_counter()
        summary = train(cfg, progress=False, overwrite=True)
        print(f"  {name}: {cfg.steps} steps, zero-shot {100 * summary['zero_shot_accuracy']:.1f} % "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        return summary["zero_shot_accuracy"]


def mean_spread(values):
    """'mean ± standard deviation' of fractions, in percent ('± 0.0' for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def batch_table(runs, args):
    lines = ["| batch | steps | CLIP (softmax) | SigLIP (sigmoid) |", "|---:|---:|---:|---:|"]
    for batch in args.batches:
        cells = [mean_spread(runs.accuracy(loss, batch)) for loss in LOSSES]
        lines.append(f"| {batch} | {max(1, args.pairs // batch)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def temperature_table(runs, args):
    lines = ["| τ at the start | CLIP, τ fixed | CLIP, τ learned | SigLIP, τ fixed | SigLIP, τ learned |",
             "|---:|---:|---:|---:|---:|"]
    for temperature in args.temperatures:
        cells = [mean_spread(runs.accuracy(loss, args.temperature_batch, temperature, fixed))
                 for loss in LOSSES for fixed in (True, False)]
        lines.append(f"| {temperature:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_times(args, batch):
    """{loss: median seconds of one training step} on one model and batch, the losses alternating."""
    tokenizer = Tokenizer.default()
    config = dataclasses.replace(get_config(args.model), vocab_size=len(tokenizer))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, config.image_resolution, config.image_resolution), dtype=np.float32)
    ids = rng.integers(1, config.vocab_size - 1, size=(batch, config.context_length))
    ids[:, -1] = config.vocab_size - 1                                   # end of text: the largest id
    steps, seconds = {}, {loss: [] for loss in LOSSES}
    for loss in LOSSES:
        model = CLIP(dataclasses.replace(config, loss=loss), seed=0)
        optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
        steps[loss] = (model, optimizer)
    for repeat in range(args.repeats + 1):                               # repeat 0: the warm-up
        for loss in (LOSSES if repeat % 2 else LOSSES[::-1]):            # alternate which goes first
            model, optimizer = steps[loss]
            started = time.perf_counter()
            optimizer.zero_grad()
            logits_per_image, logits_per_text = model(images, ids)
            if loss == "siglip":
                value = siglip_loss(logits_per_image)
            else:
                value = clip_loss(logits_per_image, logits_per_text)
            value.backward()
            clip_grad_norm(model.parameters(), 1.0)
            optimizer.step()
            clamp_logit_scale(model)
            if repeat:
                seconds[loss].append(time.perf_counter() - started)
    return {loss: statistics.median(times) for loss, times in seconds.items()}


def time_table(args):
    lines = ["| batch | CLIP step (ms) | SigLIP step (ms) | SigLIP / CLIP |", "|---:|---:|---:|---:|"]
    for batch in args.batches:
        t = step_times(args, batch)
        lines.append(f"| {batch} | {1000 * t['clip']:.1f} | {1000 * t['siglip']:.1f} | "
                     f"{t['siglip'] / t['clip']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse(argv)
    with tempfile.TemporaryDirectory() as temporary:
        runs = Runs(args, args.out or temporary)
        print(f"model {args.model}, {args.pairs} pairs per run, lr {args.lr}, {args.seeds} seed(s); "
              "zero-shot accuracy on shapes (mean of colour, shape, size, position), "
              "mean ± standard deviation over seeds, in %\n")
        print("Each loss at its own initial temperature (CLIP τ 0.07; SigLIP τ 0.1, bias −10):\n")
        print(batch_table(runs, args), flush=True)
        print(f"\nFixed or learned temperature, batch {args.temperature_batch}:\n")
        print(temperature_table(runs, args), flush=True)
    print(f"\nOne training step (median of {args.repeats}, the losses alternating, same model and batch):\n")
    print(time_table(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
