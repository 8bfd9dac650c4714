"""miniclip against an older checkout of itself, in the same run: `python benchmarks/before_after.py
--baseline DIR` (DIR holds the older miniclip/ package, e.g. from `git archive <commit> miniclip`).

Each measurement runs in a fresh process (the peak RSS is that workload's alone);
the two checkouts alternate, round by round (round 1: before then after, round 2:
after then before, ...), so a busy machine slows both alike. Per process: the
median of the workload's timed runs after one warm-up. Reported, as a markdown
table: the median over rounds of each side, the per-round ratio after / before
(median, min–max), the peak RSS of each side, and the 1-minute load average at
the start and end of each workload's rounds.

    step-S, step-M, vit-b32   as in miniclip/bench/workloads.py (and benchmarks/vs_torch.py)
    cifar-rn                  a training step of the cifar-rn CLIP at batch 128
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

REPEATS = {"step-S": 3, "step-M": 1, "vit-b32": 2, "cifar-rn": 3}


def worker(name, repeats):
    """Time workload `name` in this process (the miniclip on PYTHONPATH); print one JSON line."""
    from miniclip.autograd.tensor import no_grad
    from miniclip.bench.model import train_step_fn
    from miniclip.bench.timer import seconds_of_runs
    from miniclip.bench.workloads import WORKLOADS, random_batch
    from miniclip.config import get_config
    from miniclip.model import CLIP
    if name == "cifar-rn":
        run = train_step_fn(get_config("cifar-rn"), 128)
    elif WORKLOADS[name].train:
        run = train_step_fn(WORKLOADS[name].config, WORKLOADS[name].batch)
    else:                                                # inference: both towers, no graph
        model = CLIP(WORKLOADS[name].config, seed=0)
        images, ids = random_batch(WORKLOADS[name].config, WORKLOADS[name].batch)

        def run():
            with no_grad():
                model.encode_image(images)
                model.encode_text(ids)
    times = seconds_of_runs(run, repeats, warmup=1)
    print(json.dumps({"seconds": statistics.median(times),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(checkout, name, repeats):
    env = dict(os.environ, PYTHONPATH=checkout)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name,
                           "--repeats", str(repeats)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{checkout} {name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="folder holding the older miniclip/ (required)")
    parser.add_argument("--workloads", nargs="+", default=list(REPEATS), choices=list(REPEATS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, help="timed runs per process (default: per workload)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.repeats)
        return 0
    if not args.baseline:
        parser.error("--baseline DIR is required: a folder holding the older miniclip/ package")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"before": os.path.abspath(args.baseline), "after": here}
    print("| workload | before | after | after / before (min–max) | peak RSS before / after "
          "| load start → end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.workloads:
        load_start = os.getloadavg()[0]
        runs = {side: [] for side in sides}
        order = list(sides)
        for r in range(args.rounds):
            for side in order[r % 2:] + order[:r % 2]:
                runs[side].append(measure(sides[side], name, args.repeats or REPEATS[name]))
        seconds = {s: [x["seconds"] for x in runs[s]] for s in sides}
        ratios = [a / b for a, b in zip(seconds["after"], seconds["before"])]
        rss = {s: max(x["peak_rss_mb"] for x in runs[s]) for s in sides}
        print(f"| {name} | {statistics.median(seconds['before']):.3f} s "
              f"| {statistics.median(seconds['after']):.3f} s | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) | {rss['before']:.0f} / {rss['after']:.0f} MiB "
              f"| {load_start:.2f} → {os.getloadavg()[0]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
