"""How fast is the model? `python -m miniclip bench model`

Times, in float32 on random inputs (the median of `repeats` after a warm-up):
- forward (inference, no graph) and forward + backward of a named config;
- its peak memory for one forward + backward (tracemalloc: NumPy reports
  its array allocations there);
- image–caption pairs per second of a full training step (forward, loss,
  backward, AdamW step) of workload step-S (see workloads.py).

These are miniclip's own figures. PyTorch's, measured beside them in the same
run, come from `python benchmarks/vs_torch.py` (repository root).
"""
import dataclasses
import tracemalloc

from miniclip.autograd.tensor import no_grad
from miniclip.bench.timer import median_seconds
from miniclip.bench.workloads import ADAMW, WORKLOADS, random_batch
from miniclip.loss import clip_loss
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.optim import AdamW


def train_step_fn(config, batch, seed=0):
    """A function that runs one training step of a fresh CLIP(config) on a fixed batch."""
    model = CLIP(config, seed=seed)
    optimizer = AdamW(model.parameters(), **ADAMW)
    images, ids = random_batch(config, batch)

    def train_step():
        loss = clip_loss(*model(images, ids))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return train_step


def run(report=print, config="tiny", batch=128, repeats=5, smoke=False):
    """Print the figures through `report` and return them as a dict.

    smoke=True: config micro, batch 4, one run each, and a micro training step.
    """
    if smoke:
        config, batch, repeats = "micro", 4, 1
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

    workload = WORKLOADS["step-S"]
    if smoke:
        workload = dataclasses.replace(workload, config=get_config("micro"), batch=4)
    step_s = median_seconds(train_step_fn(workload.config, workload.batch), repeats)
    results["train_step_s"] = step_s
    results["train_pairs_per_s"] = workload.batch / step_s
    report(f"  {workload.name} training step (batch {workload.batch}): {step_s * 1000:.1f} ms "
           f"= {workload.batch / step_s:.0f} pairs/s "
           f"(PyTorch beside it: python benchmarks/vs_torch.py)")
    return results


if __name__ == "__main__":
    run()
