"""Time and peak memory of miniclip.load() on a ViT-B/32-sized checkpoint.

    python examples/measure_load.py [REPO ...]

Writes random ViT-B/32-shaped weights (float16, like OpenAI's release) to a
temporary .safetensors file once, then loads it in a fresh Python process per
run with each REPO first on sys.path (default: this checkout), alternating
the repos so a busy machine slows them alike. Reports wall time of load() and
the process's CPU time and peak resident memory (ru_maxrss), median of the runs.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import miniclip
from miniclip.pretrained import load
start, cpu = time.perf_counter(), time.process_time()
model, _ = load(sys.argv[1], device="cpu")
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu": cpu, "module": miniclip.__file__,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_checkpoint(path):
    sys.path.insert(0, HERE)
    from miniclip.config import get_config
    from miniclip.model import CLIP
    from miniclip.pretrained import write_safetensors
    shapes = {name: p.shape for name, p in CLIP(get_config("ViT-B/32"), init=False).named_parameters()}
    rng = np.random.default_rng(0)
    write_safetensors(path, {name: (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
                             for name, shape in shapes.items()})


def main(repos, runs=3):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "vit-b-32.safetensors")
        write_checkpoint(path)
        print(f"checkpoint: {os.path.getsize(path) / 2**20:.0f} MiB (float16)")
        results = {repo: [] for repo in repos}
        for _ in range(runs):
            for repo in repos:
                env = dict(os.environ, PYTHONPATH=repo)
                out = subprocess.run([sys.executable, "-c", CHILD, path], env=env, check=True, cwd=folder,
                                     capture_output=True, text=True).stdout
                results[repo].append(json.loads(out.strip().splitlines()[-1]))
        for repo, rows in results.items():
            seconds = statistics.median(r["seconds"] for r in rows)
            cpu = statistics.median(r["cpu"] for r in rows)
            peak = statistics.median(r["peak_mib"] for r in rows)
            assert all(r["module"].startswith(repo) for r in rows), rows[0]["module"]
            print(f"{repo}: load {seconds:.2f} s wall, {cpu:.2f} s CPU, peak RSS {peak:.0f} MiB "
                  f"(median of {runs})")


if __name__ == "__main__":
    main([os.path.abspath(r) for r in sys.argv[1:]] or [HERE])
