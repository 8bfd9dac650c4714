"""miniclip beside PyTorch eager, measured in the same run: `python benchmarks/vs_torch.py`

Each measurement runs in its own fresh process (so peak RSS is that
workload's alone, and neither side warms the other's caches), the two sides
alternate (round 1: miniclip then PyTorch, round 2: PyTorch then miniclip,
...), and both get the same thread count (BLAS, OpenMP and torch's intra-op
pool). Per round and side: the median of the workload's timed repeats after a
warm-up. Reported: the median over rounds for each side, the per-round ratio
miniclip / PyTorch (median, and min–max), peak RSS of each process, and the
matmul FLOP rate as a fraction of a float32 GEMM timed in the same run (NumPy's
GEMM: the machine's rate as miniclip sees it; PyTorch's in brackets).

The PyTorch side is OpenAI's own `clip/model.py` (`pip install openai-clip
torch`: the file is imported from the installed package, not copied here),
with torch.optim.AdamW and the same configs, batches and optimiser settings
(miniclip/bench/workloads.py). Without torch, only miniclip's side runs.

    python benchmarks/vs_torch.py                               # everything, 2 and 1 threads
    python benchmarks/vs_torch.py --workloads step-S --threads 2 --rounds 3
    python benchmarks/vs_torch.py --json results.json           # also write the raw figures
    python benchmarks/vs_torch.py --smoke --sides miniclip      # tiny versions: does it run?
    python benchmarks/vs_torch.py --baseline /tmp/old-miniclip  # a third side: an older
                                  # checkout of miniclip (before/after in the same run)

Add a workload: a Workload in miniclip/bench/workloads.py (or a name in EXTRA
below), a builder for each side in MINICLIP_SIDE / TORCH_SIDE returning a
no-argument function that runs it once, and its FLOP count in flops_of().
"""
import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys

import numpy as np

from miniclip.bench.timer import seconds_of_runs
from miniclip.bench.workloads import (ADAMW, GEMM_SIZE, WORKLOADS, gemm_flops, matmul_flops,
                                      random_batch)

OPENAI_CLIP_ARGUMENTS = ("embed_dim", "image_resolution", "vision_layers", "vision_width",
                         "vision_patch_size", "context_length", "vocab_size", "transformer_width",
                         "transformer_heads", "transformer_layers")
EXTRA = {"gemm": 5}          # name -> timed repeats (workloads that are not a CLIP model)
SMOKE = False                # --smoke: every workload on config micro, batch 4, one repeat
REPEATS = None               # --repeats: timed runs per process instead of each workload's own


def workload_named(name):
    workload = WORKLOADS[name]
    if SMOKE:
        try:
            from miniclip.config import get_config
        except ImportError:                      # a --baseline checkout from before config.py
            from miniclip.model import get_config
        workload = dataclasses.replace(workload, config=get_config("micro"), batch=4, repeats=1)
    return workload


def gemm_size():
    return 64 if SMOKE else GEMM_SIZE


# ---- miniclip's side ----------------------------------------------------------------------
def miniclip_gemm():
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((gemm_size(),) * 2, dtype=np.float32) for _ in range(2))
    return lambda: a @ b


def miniclip_workload(workload):
    from miniclip.autograd.tensor import no_grad
    from miniclip.bench.model import train_step_fn
    from miniclip.model import CLIP
    if workload.train:
        return train_step_fn(workload.config, workload.batch)   # `bench model`'s step, the same one
    model = CLIP(workload.config, seed=0)
    images, ids = random_batch(workload.config, workload.batch)

    def infer():
        with no_grad():
            model.encode_image(images)
            model.encode_text(ids)
    return infer


# ---- PyTorch's side -----------------------------------------------------------------------
def openai_model_module():
    """OpenAI's clip/model.py from the installed `openai-clip` package, loaded on its own
    (its package __init__ would import torchvision, which the model does not need)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("PyTorch side needs OpenAI's model code: pip install openai-clip torch")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model.py")
    module_spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def torch_gemm():
    import torch
    a, b = (torch.randn(gemm_size(), gemm_size()) for _ in range(2))
    return lambda: a @ b


def torch_workload(workload):
    import torch
    import torch.nn.functional as F
    openai = openai_model_module()
    config = workload.config
    # OpenAI's CLIP(...) takes the shape arguments; every other field must be what it fixes
    fields = {name: getattr(config, name) for name in OPENAI_CLIP_ARGUMENTS}
    if dataclasses.replace(config, vision_heads=None) != type(config)(**fields) or \
            config.num_vision_heads != config.vision_width // 64:
        raise SystemExit(f"{workload.name}: OpenAI's model fixes QuickGELU, 4× MLPs, heads of "
                         f"64, eps 1e-5 and argmax pooling; this config differs")
    model = openai.CLIP(**fields).float()
    images, ids = random_batch(workload.config, workload.batch)
    images, ids = torch.from_numpy(images), torch.from_numpy(ids)
    if not workload.train:
        model.eval()

        def infer():
            with torch.no_grad():
                model.encode_image(images)
                model.encode_text(ids)
        return infer
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    labels = torch.arange(workload.batch)

    def train_step():
        logits_per_image, logits_per_text = model(images, ids)
        loss = (F.cross_entropy(logits_per_image, labels)
                + F.cross_entropy(logits_per_text, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return train_step


MINICLIP_SIDE = {"gemm": miniclip_gemm}
TORCH_SIDE = {"gemm": torch_gemm}


def flops_of(name):
    return gemm_flops(gemm_size()) if name == "gemm" else matmul_flops(workload_named(name))


def repeats_of(name):
    if name in EXTRA:
        return 1 if SMOKE else EXTRA[name]
    return REPEATS or workload_named(name).repeats


# ---- one measurement, in its own process --------------------------------------------------
def worker(side, name, threads):
    """Time `name` on `side` ('miniclip' | 'torch'); print one JSON line."""
    if side == "torch":
        import torch
        torch.set_num_threads(threads)
        build = TORCH_SIDE.get(name) or (lambda: torch_workload(workload_named(name)))
    else:
        build = MINICLIP_SIDE.get(name) or (lambda: miniclip_workload(workload_named(name)))
    run = build()
    times = seconds_of_runs(run, repeats_of(name), warmup=1)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # KiB -> MiB
    print(json.dumps({"side": side, "workload": name, "threads": threads,
                      "seconds": statistics.median(times), "all_seconds": times,
                      "peak_rss_mb": peak_rss}))


def measure(side, name, threads, baseline=None):
    env = dict(os.environ)
    if side == "baseline":                       # miniclip's code from another checkout
        env["PYTHONPATH"] = os.pathsep.join([baseline] + env.get("PYTHONPATH", "").split(os.pathsep))
    worker_side = "miniclip" if side == "baseline" else side
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINICLIP_THREADS"):
        env[var] = str(threads)
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker_side,
               "--workloads", name, "--threads", str(threads)] + (["--smoke"] if SMOKE else []) \
        + (["--repeats", str(REPEATS)] if REPEATS else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} {name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_available():
    return (importlib.util.find_spec("torch") is not None
            and importlib.util.find_spec("clip") is not None)


def compare(workloads, threads_list, rounds, sides=("miniclip", "torch"), baseline=None,
            report=print, json_path=None):
    """Run every (threads, workload) pair for `rounds` rounds, the sides in turn (rotated
    each round); return the rows."""
    sides = list(sides) + (["baseline"] if baseline else [])
    if "torch" in sides and not torch_available():
        sides.remove("torch")
        report("torch or openai-clip not installed: miniclip's side only "
               "(pip install torch openai-clip)")
    rows = []
    for threads in threads_list:
        for name in ["gemm"] + [w for w in workloads if w != "gemm"]:
            results = {side: [] for side in sides}
            for r in range(rounds):
                for side in sides[r % len(sides):] + sides[:r % len(sides)]:
                    results[side].append(measure(side, name, threads, baseline))
            row = {"workload": name, "threads": threads, "flops": flops_of(name)}
            for side, runs in results.items():
                row[side] = {"seconds": statistics.median(x["seconds"] for x in runs),
                             "rounds": [x["seconds"] for x in runs],
                             "peak_rss_mb": max(x["peak_rss_mb"] for x in runs)}
            for key, a, b in (("ratio", "miniclip", "torch"), ("baseline_ratio", "baseline", "torch"),
                              ("speedup", "baseline", "miniclip")):
                if a in results and b in results:
                    ratios = [x / y for x, y in zip(row[a]["rounds"], row[b]["rounds"])]
                    row[key] = {"median": statistics.median(ratios), "min": min(ratios),
                                "max": max(ratios)}
            rows.append(row)
            report(format_row(row, rows))
            if json_path:                        # after every row: a stopped run keeps its rows
                with open(json_path, "w") as f:
                    json.dump(rows, f, indent=1)
    return rows


def gemm_rate(rows, threads, side):
    row = next(r for r in rows if r["workload"] == "gemm" and r["threads"] == threads)
    return row["flops"] / row[side]["seconds"]


def format_row(row, rows):
    def fraction(side):
        rate = row["flops"] / row[side]["seconds"]
        return f"{rate / gemm_rate(rows, row['threads'], 'miniclip'):4.0%}"

    parts = [f"{row['workload']:8s} {row['threads']} thr"]
    for side in ("torch", "miniclip", "baseline"):
        if side in row:
            parts.append(f"{side} {row[side]['seconds']:7.3f} s  {row[side]['peak_rss_mb']:6.0f} MiB"
                         f"  {fraction(side)} of GEMM")
    for key in ("ratio", "baseline_ratio", "speedup"):
        if key in row:
            r = row[key]
            parts.append(f"{key} {r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})")
    return "   ".join(parts)


def markdown(rows):
    """The README's table: one line per workload and thread count."""
    lines = ["| workload | threads | PyTorch eager | miniclip | miniclip / PyTorch (min–max) "
             "| peak RSS PyTorch / miniclip | GEMM fraction PyTorch / miniclip |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "torch" not in row:
            continue
        base = gemm_rate(rows, row["threads"], "miniclip")
        frac = {s: row["flops"] / row[s]["seconds"] / base for s in ("torch", "miniclip")}
        r = row["ratio"]
        if "baseline" in row:
            b = row["baseline_ratio"]
            lines.append(f"| {row['workload']} (baseline) | {row['threads']} "
                         f"| {row['torch']['seconds']:.3f} s | {row['baseline']['seconds']:.3f} s "
                         f"| {b['median']:.2f} ({b['min']:.2f}–{b['max']:.2f}) "
                         f"| {row['torch']['peak_rss_mb']:.0f} / {row['baseline']['peak_rss_mb']:.0f} MiB "
                         f"| {frac['torch']:.0%} / {row['flops'] / row['baseline']['seconds'] / base:.0%} |")
        lines.append(f"| {row['workload']} | {row['threads']} | {row['torch']['seconds']:.3f} s "
                     f"| {row['miniclip']['seconds']:.3f} s | **{r['median']:.2f}** "
                     f"({r['min']:.2f}–{r['max']:.2f}) | {row['torch']['peak_rss_mb']:.0f} / "
                     f"{row['miniclip']['peak_rss_mb']:.0f} MiB | {frac['torch']:.0%} / "
                     f"{frac['miniclip']:.0%} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS),
                        help=f"some of {list(WORKLOADS) + list(EXTRA)}")
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the raw figures to this file")
    parser.add_argument("--sides", nargs="+", choices=["miniclip", "torch"],
                        default=["miniclip", "torch"])
    parser.add_argument("--baseline", help="also time miniclip from this checkout (a folder "
                        "holding an older miniclip/ package), in the same alternating rounds")
    parser.add_argument("--repeats", type=int, help="timed runs per process, after one "
                        "warm-up (default: each workload's own, see workloads.py)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny versions of every workload, one repeat (a test that it runs)")
    parser.add_argument("--worker", choices=["miniclip", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS and w not in EXTRA]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}: choose from {list(WORKLOADS) + list(EXTRA)}")
    global SMOKE, REPEATS
    SMOKE, REPEATS = args.smoke, args.repeats
    if args.worker:
        return worker(args.worker, args.workloads[0], args.threads[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.machine()} {cores} cores, load average {os.getloadavg()[0]:.1f} at start, "
          f"numpy {np.__version__}, {args.rounds} alternating rounds")
    rows = compare(args.workloads, args.threads, args.rounds, args.sides,
                   os.path.abspath(args.baseline) if args.baseline else None,
                   json_path=args.json)
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
