"""One process with 2 threads (and with 1) against 2 MPI ranks with 1 thread each.

    python -m miniclip bench distributed        # or: python -m miniclip.bench.distributed

Each configuration runs the same training steps (the `tiny` CLIP, random
data, a global batch of 128, AdamW) in a fresh process; the two alternate
`rounds` times, so a machine whose load changes affects both alike. Printed
per configuration: images/s (median over rounds), and for the ranks the
share of each step spent inside collectives (all-gather, reduce-scatter,
gradient all-reduce: including any wait for the slower rank) and the bytes
each rank hands to them per step.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def worker(steps, batch, model_name, warmup=2):
    """Run `steps` training steps here; print one JSON line (rank 0)."""
    from miniclip.bench.workloads import random_batch
    from miniclip.distributed import (ContrastiveStep, batch_rows, broadcast_parameters,
                                      communicator)
    from miniclip.model import CLIP
    from miniclip.optim import AdamW, clip_grad_norm
    comm = communicator()
    model = CLIP(model_name, seed=0)
    broadcast_parameters(model, comm)
    optimizer = AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    images, ids = random_batch(model.config, batch)
    rows = batch_rows(batch, comm)
    step = ContrastiveStep(model, comm)
    for k in range(warmup + steps):
        if k == warmup:
            start = time.perf_counter()
            comm_seconds, comm_bytes = getattr(comm, "seconds", 0.0), getattr(comm, "bytes_sent", 0)
        optimizer.zero_grad()
        step(images[rows], ids[rows])
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - start
    if comm.rank == 0:
        print(json.dumps({
            "world_size": comm.world_size, "images_per_second": steps * batch / seconds,
            "comm_share": (getattr(comm, "seconds", 0.0) - comm_seconds) / seconds,
            "bytes_per_step": (getattr(comm, "bytes_sent", 0) - comm_bytes) / steps,
            "parameters": model.num_parameters(),
            "embed_dim": model.config.embed_dim}), flush=True)


def _launch(ranks, threads, steps, batch, model, warmup):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "MINICLIP_DEVICE": "cpu"}
    command = [sys.executable, "-m", "miniclip.bench.distributed", "--worker",
               "--steps", str(steps), "--batch", str(batch), "--model", model,
               "--warmup", str(warmup)]
    if ranks > 1:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        command = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(ranks)] + command
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(report=print, steps=10, batch=128, model="tiny", rounds=3, warmup=2):
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        report("distributed: skipped, mpi4py is not installed (pip install -e \".[distributed]\")")
        return None
    setups = {"1 process x 2 threads": (1, 2), "1 process x 1 thread": (1, 1),
              "2 ranks x 1 thread": (2, 1)}
    results = {name: [] for name in setups}
    for _ in range(rounds):                              # alternate: all see the same load
        for name, (ranks, threads) in setups.items():
            results[name].append(_launch(ranks, threads, steps, batch, model, warmup))
    report(f"distributed: {model} CLIP, global batch {batch}, {steps} steps after {warmup} warm-up, "
           f"{rounds} alternating rounds (median); cores: {os.cpu_count()}, "
           f"load average {os.getloadavg()[0]:.1f}")
    summary = {}
    for name, runs in results.items():
        ips = statistics.median(r["images_per_second"] for r in runs)
        line = f"  {name:24s} {ips:7.1f} images/s"
        if runs[0]["world_size"] > 1:
            share = statistics.median(r["comm_share"] for r in runs)
            mb = runs[0]["bytes_per_step"] / 1e6
            line += f"   in collectives {100 * share:4.1f} % of each step, {mb:.2f} MB per rank per step"
        summary[name] = {"images_per_second": ips, "runs": runs}
        report(line)
    two = summary["2 ranks x 1 thread"]["images_per_second"]
    for name in ("1 process x 2 threads", "1 process x 1 thread"):
        report(f"  2 ranks / ({name}): {two / summary[name]['images_per_second']:.2f}x")
    p, e = results["2 ranks x 1 thread"][0]["parameters"], results["2 ranks x 1 thread"][0]["embed_dim"]
    report(f"  expected bytes per rank per step: features 2 x {batch // 2} x {e} x 4 (all-gather) + "
           f"their gradients 2 x {batch} x {e} x 4 (reduce-scatter) + {p:,} gradients x 4 "
           f"(all-reduce) = {(2 * batch // 2 * e * 4 + 2 * batch * e * 4 + 4 * p) / 1e6:.2f} MB")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.steps, args.batch, args.model, args.warmup)
    else:
        run(steps=args.steps, batch=args.batch, model=args.model, rounds=args.rounds,
            warmup=args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
