"""How fast is the model? `python -m miniclip bench model`

Times, in float32 on random inputs (after one warm-up run, the median of `repeats`):
- forward (inference, no graph) and forward + backward of a named config;
- its peak memory for one forward + backward (tracemalloc: NumPy reports
  its array allocations there);
- image–caption pairs per second of a full training step (forward, loss,
  backward, AdamW step) for the reference config of the original issue:
  image tower width 128, 4 layers, patch 4 on 32×32 images; text tower width
  128, 4 layers, context 16, vocabulary 1000; embedding 128; batch 128.
  (PyTorch eager runs that step at about 165 pairs/s on a 2-core CPU.)
"""
import dataclasses
import statistics
import time
import tracemalloc

import numpy as np

from miniclip.autograd.tensor import no_grad
from miniclip.loss import clip_loss
from miniclip.model import CLIP, get_config
from miniclip.optim import AdamW

REFERENCE_CONFIG = dataclasses.replace(get_config("tiny-p4"), context_length=16, vocab_size=1000)


def random_batch(config, batch, seed=0):
    """Images (N, 3, R, R) float32 and caption-like ids (N, C): start, ids, end (the largest), zeros."""
    rng = np.random.default_rng(seed)
    R, C, V = config.image_resolution, config.context_length, config.vocab_size
    images = rng.standard_normal((batch, 3, R, R)).astype(np.float32)
    ids = rng.integers(1, V - 2, (batch, C))
    ends = rng.integers(2, C, batch)
    ids[:, 0] = V - 2
    ids[np.arange(batch), ends] = V - 1
    ids[np.arange(C)[None, :] > ends[:, None]] = 0
    return images, ids


def median_seconds(fn, repeats):
    fn()                                               # warm-up: first-touch allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(report=print, config="tiny", batch=128, repeats=5):
    """Print the figures through `report` and return them as a dict."""
    cfg = get_config(config) if isinstance(config, str) else config
    model = CLIP(cfg, seed=0)
    images, ids = random_batch(cfg, batch)

    def forward():
        with no_grad():
            model(images, ids)

    def forward_backward():
        model.zero_grad()
        clip_loss(*model(images, ids)).backward()

    results = {"config": config if isinstance(config, str) else "custom", "batch": batch,
               "parameters": model.num_parameters()}
    report(f"model bench: config {results['config']} ({results['parameters']:,} parameters), "
           f"batch {batch}, {cfg.image_resolution}×{cfg.image_resolution} images, "
           f"context {cfg.context_length}, float32")
    results["forward_s"] = median_seconds(forward, repeats)
    report(f"  forward (no grad)      {results['forward_s'] * 1000:8.1f} ms")
    results["forward_backward_s"] = median_seconds(forward_backward, repeats)
    report(f"  forward + backward     {results['forward_backward_s'] * 1000:8.1f} ms")
    tracemalloc.start()
    forward_backward()
    results["peak_memory_mb"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    report(f"  peak memory (fwd+bwd)  {results['peak_memory_mb']:8.1f} MiB")

    reference = CLIP(REFERENCE_CONFIG, seed=0)
    optimizer = AdamW(reference.parameters(), lr=1e-4, weight_decay=0.1)
    ref_images, ref_ids = random_batch(REFERENCE_CONFIG, 128)

    def train_step():
        loss = clip_loss(*reference(ref_images, ref_ids))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step_s = median_seconds(train_step, repeats)
    results["train_step_s"] = step_s
    results["train_pairs_per_s"] = 128 / step_s
    report(f"  reference config training step (batch 128): {step_s * 1000:.1f} ms "
           f"= {128 / step_s:.0f} pairs/s (PyTorch eager: about 165)")
    return results


if __name__ == "__main__":
    run()
