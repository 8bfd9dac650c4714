"""`python -m miniclip bench [autograd|model|tokenizer|data|distributed|profile|all]`: miniclip's own figures.

Speed and memory goals live here, never in timed tests. Each benchmark
prints what it measured; figures depend on the machine (report it with them).

    timer.py      the one timer (median of runs after a warm-up)
    workloads.py  the configs and batches, shared with the side-by-side benchmark
    model.py      forward / backward / training-step speed and memory
    tokenizer.py  BPE encode against a plain reference, train_bpe
    profile.py    each op family's share of a step, against the machine's GEMM rate and bandwidth

Against PyTorch eager, in alternating processes: `python benchmarks/vs_torch.py`
at the repository root (needs torch; never imported by the package).
"""
import time

import numpy as np

from miniclip.bench.timer import median_seconds


def bench_autograd(report=print, smoke=False):
    """Fused ops against the same math composed of primitive ops (float32).

    smoke=True: tiny arrays, one run each (checks the benchmark runs, times nothing useful).
    """
    import miniclip.functional as F
    from miniclip import Tensor
    from miniclip.autograd.nn_ops import attention_composed, layer_norm_composed, softmax_composed
    rng = np.random.default_rng(0)

    def fwd_bwd(fn, *arrays):
        def run():
            inputs = [Tensor(a, requires_grad=True) for a in arrays]
            out = fn(*inputs)
            out.backward(np.ones(out.shape, np.float32))
        return run

    N, repeats = (2, 1) if smoke else (128, 5)
    x = rng.standard_normal((N, 65, 256)).astype(np.float32)
    w, b = np.ones(256, np.float32), np.zeros(256, np.float32)
    s = rng.standard_normal((N, 4, 65, 65)).astype(np.float32)
    q = rng.standard_normal((N, 4, 65, 64)).astype(np.float32)
    cases = [
        (f"layer_norm ({N}, 65, 256)", fwd_bwd(F.layer_norm, x, w, b),
         fwd_bwd(layer_norm_composed, x, w, b)),
        (f"softmax ({N}, 4, 65, 65)", fwd_bwd(F.softmax, s), fwd_bwd(softmax_composed, s)),
        (f"attention ({N}, 4, 65, 64)", fwd_bwd(F.scaled_dot_product_attention, q, q, q),
         fwd_bwd(attention_composed, q, q, q)),
    ]
    report("autograd: forward+backward, float32, fused vs composed of primitives")
    for name, fused, composed in cases:
        tf, tc = median_seconds(fused, repeats), median_seconds(composed, repeats)
        report(f"  {name:28s} fused {1e3 * tf:8.1f} ms   composed {1e3 * tc:8.1f} ms   "
               f"({tc / tf:.1f}x)")


def bench_model(report=print, smoke=False):
    from miniclip.bench import model
    model.run(report=report, smoke=smoke)


def bench_tokenizer(report=print, smoke=False):
    from miniclip.bench import tokenizer
    tokenizer.run(report=report, smoke=smoke)


def bench_data(report=print, smoke=False):
    """Shapes generation and one epoch of augmented batches through the loader."""
    size = 256 if smoke else 50_000
    from miniclip.data.loader import DataLoader
    from miniclip.data.shapes import ShapesDataset
    start = time.perf_counter()
    ds = ShapesDataset("train", size=size)
    images = ds.arrays()
    report(f"data: {size:,} shapes images generated in {time.perf_counter() - start:.1f} s")
    loader = DataLoader(images, ds.captions, lambda texts: np.zeros((len(texts), 32), np.int64),
                        batch_size=128, augment=True)
    start = time.perf_counter()
    n = sum(len(batch[2]) for batch in loader)
    seconds = time.perf_counter() - start
    report(f"data: one augmented epoch through the loader: {n / seconds:,.0f} images/s")


def bench_distributed(report=print, smoke=False):
    """1 process × 2 threads (and × 1) against 2 MPI ranks × 1 thread (the distributed extra)."""
    from miniclip.bench import distributed
    if smoke:
        distributed.run(report=report, steps=1, batch=8, model="micro", rounds=1, warmup=0)
    else:
        distributed.run(report=report)


def bench_profile(report=print, smoke=False):
    """Per op family: each part's share of step S, step M, ViT-B/32 inference, cifar-rn."""
    from miniclip.bench import profile
    profile.run(report=report, smoke=smoke)


BENCHES = {"autograd": bench_autograd, "model": bench_model, "tokenizer": bench_tokenizer,
           "data": bench_data, "distributed": bench_distributed, "profile": bench_profile}


def main(what=("all",), smoke=False, report=print):
    """Run the named benchmarks; smoke=True: each on tiny inputs, once (a test that they run)."""
    names = list(BENCHES) if "all" in what else list(what)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}: choose from {list(BENCHES)} or all")
    for name in names:
        BENCHES[name](report=report, smoke=smoke)
    return 0
