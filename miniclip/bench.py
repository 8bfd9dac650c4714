"""`python -m miniclip bench [autograd|model|train|tokenizer|data|distributed|all]`.

Speed and memory goals live here, never in timed tests. Each benchmark
prints what it measured; figures depend on the machine (report it with them).
"""
import time

import numpy as np


def timeit(fn, repeat=5, warmup=1):
    """Median wall-clock seconds of fn() over `repeat` runs, after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_autograd(report=print):
    """Fused ops against the same math composed of primitive ops (float32)."""
    import miniclip.functional as F
    from miniclip import Tensor
    rng = np.random.default_rng(0)

    def fwd_bwd(fn, *arrays):
        def run():
            inputs = [Tensor(a, requires_grad=True) for a in arrays]
            out = fn(*inputs)
            out.backward(np.ones(out.shape, np.float32))
        return run

    def composed_layer_norm(x, w, b):
        centred = x - x.mean(axis=-1, keepdims=True)
        var = (centred * centred).mean(axis=-1, keepdims=True)
        return centred / (var + 1e-5).sqrt() * w + b

    def composed_softmax(x):
        e = (x - x.max(axis=-1, keepdims=True)).exp()
        return e / e.sum(axis=-1, keepdims=True)

    def composed_attention(q, k, v):
        return composed_softmax(q @ k.transpose(0, 1, 3, 2) * (1 / 8.0)) @ v

    x = rng.standard_normal((128, 65, 256)).astype(np.float32)
    w, b = np.ones(256, np.float32), np.zeros(256, np.float32)
    s = rng.standard_normal((128, 4, 65, 65)).astype(np.float32)
    q = rng.standard_normal((128, 4, 65, 64)).astype(np.float32)
    cases = [
        ("layer_norm (128, 65, 256)", fwd_bwd(F.layer_norm, x, w, b),
         fwd_bwd(composed_layer_norm, x, w, b)),
        ("softmax (128, 4, 65, 65)", fwd_bwd(F.softmax, s), fwd_bwd(composed_softmax, s)),
        ("attention (128, 4, 65, 64)", fwd_bwd(F.scaled_dot_product_attention, q, q, q),
         fwd_bwd(composed_attention, q, q, q)),
    ]
    report("autograd: forward+backward, float32, fused vs composed of primitives")
    for name, fused, composed in cases:
        tf, tc = timeit(fused), timeit(composed)
        report(f"  {name:28s} fused {1e3 * tf:8.1f} ms   composed {1e3 * tc:8.1f} ms   "
               f"({tc / tf:.1f}x)")


def bench_model(report=print):
    from miniclip import bench_model
    bench_model.run(report=report)


def bench_tokenizer(report=print):
    from miniclip import bench_tokenizer
    bench_tokenizer.run(report=report)


def bench_data(report=print):
    """Shapes generation and one epoch of augmented batches through the loader."""
    from miniclip.data.loader import DataLoader
    from miniclip.data.shapes import ShapesDataset
    start = time.perf_counter()
    ds = ShapesDataset("train", size=50_000)
    images = ds.arrays()
    report(f"data: 50,000 shapes images generated in {time.perf_counter() - start:.1f} s")
    loader = DataLoader(images, ds.captions, lambda texts: np.zeros((len(texts), 32), np.int64),
                        batch_size=128, augment=True)
    start = time.perf_counter()
    n = sum(len(batch[2]) for batch in loader)
    seconds = time.perf_counter() - start
    report(f"data: one augmented epoch through the loader: {n / seconds:,.0f} images/s")


def bench_distributed(report=print):
    """1 process × 2 threads against 2 MPI ranks × 1 thread (needs the distributed extra)."""
    from miniclip import bench_distributed
    bench_distributed.run(report=report)


BENCHES = {"autograd": bench_autograd, "model": bench_model, "tokenizer": bench_tokenizer,
           "data": bench_data, "distributed": bench_distributed}


def main(what=("all",)):
    names = list(BENCHES) if "all" in what else list(what)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}: choose from {list(BENCHES)} or all")
    for name in names:
        BENCHES[name]()
    return 0
