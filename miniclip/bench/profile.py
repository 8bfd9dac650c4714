"""Where a step's time goes, per op family: `python -m miniclip.bench.profile [workload ...]`
(or `python -m miniclip bench profile` for all of them).

Each Function's forward and backward is timed by class name through a wrapper
installed here for the run and removed after it (the autograd engine is not
touched), as exclusive time: an op that calls another op's forward is charged
only for its own part. The op families:

    GEMM           Linear, MatMul               FLOP/s against a (2048×2048)² GEMM
    attention      ScaledDotProductAttention    FLOP/s of its q kᵀ and p v products
    conv           Conv2d (im2col/col2im inside) FLOP/s of its products
    LayerNorm, GELU, softmax/CE, BatchNorm, embedding, AdamW, elementwise/copies
                   GB/s of the arrays each call reads and writes (a lower bound on its
                   traffic) against a large float32 `a + b → c`
    Python/engine  the rest of the step: graph bookkeeping, Tensor wrapping, the engine

The limits are measured in the same run, just before the workload, so a busy
machine lowers both alike. The wrapper itself costs a few µs per call (the
"unprofiled" figure beside the total shows how much).

workloads: step-S, step-M, vit-b32 (workloads.py) and cifar-rn (a training step of
the cifar-rn CLIP at batch 128, as benchmarks/vs_torch_resnet.py times it).
"""
import argparse
import dataclasses
import os
import time
from collections import defaultdict

import numpy as np

from miniclip import optim
from miniclip.autograd.function import Function
from miniclip.autograd.tensor import no_grad
from miniclip.bench.model import train_step_fn
from miniclip.bench.timer import median_seconds
from miniclip.bench.workloads import WORKLOADS, Workload, random_batch
from miniclip.config import get_config
from miniclip.model import CLIP

FAMILIES = {
    "GEMM": ("Linear", "MatMul"),
    "attention": ("ScaledDotProductAttention",),
    "conv": ("Conv2d", "AvgPool2d"),
    "LayerNorm": ("LayerNorm",),
    "GELU": ("QuickGELU", "GELU", "GELUTanh"),
    "softmax/CE": ("Softmax", "LogSoftmax", "LogSumExp", "CrossEntropy", "LogSigmoid",
                   "Normalize"),
    "BatchNorm": ("BatchNorm2d",),
    "embedding": ("Embedding",),
    "AdamW": ("AdamW.step",),
}
COMPUTE_FAMILIES = ("GEMM", "attention", "conv")
PROFILED = dict(WORKLOADS, **{"cifar-rn": Workload("cifar-rn", get_config("cifar-rn"), 128,
                                                   True, 3)})


def family_of(name):
    return next((f for f, names in FAMILIES.items() if name in names), "elementwise/copies")


def forward_flops(name, arrays, out):
    """Matrix-product FLOPs of one forward call of op `name` (0 for the others)."""
    if name == "Linear":
        x, weight = arrays[0], arrays[1]
        return 2 * (x.size // x.shape[-1]) * weight.size
    if name == "MatMul":
        a = arrays[0]
        return 2 * out.size * a.shape[-1]
    if name == "ScaledDotProductAttention":
        q, k = arrays[0], arrays[1]
        return 4 * (q.size // q.shape[-1]) * k.shape[-2] * q.shape[-1]
    if name == "Conv2d":
        weight = arrays[1]
        return 2 * out.size * (weight.size // weight.shape[0])
    return 0


def nbytes(values):
    return sum(getattr(v, "nbytes", 0) for v in values if isinstance(v, np.ndarray))


class Profiler:
    """Exclusive seconds, calls, FLOPs and bytes per (op name, forward|backward)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.flops = defaultdict(float)
        self.bytes = defaultdict(float)
        self.stack = []               # [op name, child seconds] of each open call
        self.undo = []

    def timed(self, name, kind, fn):
        def wrapper(ctx, *args, **kwargs):
            self.stack.append([name, 0.0])
            start = time.perf_counter()
            out = fn(ctx, *args, **kwargs)
            elapsed = time.perf_counter() - start
            children = self.stack.pop()[1]
            if self.stack:
                self.stack[-1][1] += elapsed
            key = (name, kind)
            self.seconds[key] += elapsed - children
            if any(entry[0] == name for entry in self.stack):
                return out            # a fast op calling its plain self: counted once, outside
            self.calls[key] += 1
            outs = out if isinstance(out, tuple) else (out,)
            if kind == "forward":
                flops = forward_flops(name, args, out)
                ctx.profile_flops = flops
            else:
                flops = 2 * getattr(ctx, "profile_flops", 0)
            self.flops[key] += flops
            self.bytes[key] += nbytes(args) + nbytes(outs)
            return out
        return wrapper

    def install(self):
        """Wrap forward/backward of every Function subclass, and AdamW.step."""
        todo = list(Function.__subclasses__())
        while todo:
            cls = todo.pop()
            todo.extend(cls.__subclasses__())
            for kind in ("forward", "backward"):
                if kind in cls.__dict__:
                    original = cls.__dict__[kind]
                    setattr(cls, kind, staticmethod(self.timed(cls.__name__, kind,
                                                               original.__func__)))
                    self.undo.append((cls, kind, original))
        original_step = optim.AdamW.step

        def step(optimizer):
            start = time.perf_counter()
            original_step(optimizer)
            key = ("AdamW.step", "update")
            self.seconds[key] += time.perf_counter() - start
            self.calls[key] += 1
            # p, g, m, v read; p, m, v written
            self.bytes[key] += 7 * sum(p.data.nbytes for p in optimizer.all_params())
        optim.AdamW.step = step
        self.undo.append((optim.AdamW, "step", original_step))

    def remove(self):
        for cls, kind, original in reversed(self.undo):
            setattr(cls, kind, original)
        self.undo = []

    def reset(self):
        for table in (self.seconds, self.calls, self.flops, self.bytes):
            table.clear()


def machine_limits(repeats=3):
    """(GEMM FLOP/s of a float32 2048² product, GB/s of a float32 a + b → c over 64 MiB)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 2048)).astype(np.float32)
    gemm = 2 * 2048 ** 3 / median_seconds(lambda: a @ a, repeats)
    x, y = np.ones(2 ** 24, np.float32), np.ones(2 ** 24, np.float32)
    z = np.empty_like(x)
    bandwidth = 3 * x.nbytes / median_seconds(lambda: np.add(x, y, out=z), repeats)
    return gemm, bandwidth


def workload_fn(workload):
    """A function running the workload once: a training step, or no-grad encodings."""
    if workload.train:
        return train_step_fn(workload.config, workload.batch)
    model = CLIP(workload.config, seed=0)
    images, ids = random_batch(workload.config, workload.batch)

    def infer():
        with no_grad():
            model.encode_image(images)
            model.encode_text(ids)
    return infer


def profile(workload, repeats=None, report=print):
    """Profile one workload (a Workload); returns rows (family, seconds, share, rate, limit)."""
    repeats = repeats or workload.repeats
    gemm, bandwidth = machine_limits()
    fn = workload_fn(workload)
    plain_seconds = median_seconds(fn, repeats)
    profiler = Profiler()
    profiler.install()
    try:
        fn()                                          # warm-up under the wrapper
        profiler.reset()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        total = (time.perf_counter() - start) / repeats
    finally:
        profiler.remove()
    seconds, flops, moved = defaultdict(float), defaultdict(float), defaultdict(float)
    for key, s in profiler.seconds.items():
        family = family_of(key[0])
        seconds[family] += s / repeats
        flops[family] += profiler.flops[key] / repeats
        moved[family] += profiler.bytes[key] / repeats
    seconds["Python/engine"] = total - sum(seconds.values())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report(f"### {workload.name}: batch {workload.batch}, "
           f"{'training step' if workload.train else 'inference'}, float32, "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {load:.2f}")
    report(f"step {total * 1e3:.0f} ms profiled ({plain_seconds * 1e3:.0f} ms unprofiled); "
           f"machine: GEMM {gemm / 1e9:.0f} GFLOP/s, a+b→c {bandwidth / 1e9:.1f} GB/s")
    report("")
    report("| family | ms | share | achieved | of the limit |")
    report("| --- | ---: | ---: | ---: | ---: |")
    rows = []
    for family, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        if family in COMPUTE_FAMILIES:
            rate, limit, unit = flops[family] / s if s > 0 else 0.0, gemm, "GFLOP/s"
        elif family == "Python/engine":
            rate, limit, unit = 0.0, 0.0, ""
        else:
            rate, limit, unit = moved[family] / s if s > 0 else 0.0, bandwidth, "GB/s"
        achieved = f"{rate / 1e9:.1f} {unit}" if unit else "—"
        distance = f"{100 * rate / limit:.0f} %" if limit else "—"
        report(f"| {family} | {s * 1e3:.1f} | {100 * s / total:.0f} % | {achieved} | "
               f"{distance} |")
        rows.append((family, s, s / total, rate, limit))
    report("")
    return rows


def run(report=print, smoke=False, names=None, repeats=None):
    """Profile the named workloads (all by default); smoke=True: a micro step, once."""
    if smoke:
        workload = dataclasses.replace(WORKLOADS["step-S"], name="micro", config=get_config("micro"),
                                       batch=4)
        return profile(workload, repeats=1, report=report)
    for name in names or list(PROFILED):
        if name not in PROFILED:
            raise ValueError(f"unknown workload {name!r}: choose from {list(PROFILED)}")
        profile(PROFILED[name], repeats=repeats, report=report)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", help=f"any of {list(PROFILED)} (default: all)")
    parser.add_argument("--repeats", type=int, help="profiled runs (default: the workload's)")
    args = parser.parse_args(argv)
    run(names=args.workloads, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
