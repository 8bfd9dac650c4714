"""PyTorch's side of `python -m miniclip bench profile`: where OpenAI's clip/model.py spends a
step in PyTorch eager, per op family, by torch.profiler: `python benchmarks/profile_torch.py
[step-S step-M vit-b32]` (needs torch and openai-clip, like benchmarks/vs_torch.py).

Self CPU time of each aten op, summed per family (GEMM: addmm/mm/bmm/matmul/linear;
attention: PyTorch's fused attention kernels and baddbmm; LayerNorm; GELU: sigmoid and
the multiplies of QuickGELU are aten::mul, shared with others, so they land in
elementwise; softmax/CE; embedding; AdamW: its foreach/lerp/addcmul ops, its sqrt and div
land in elementwise; elementwise/copies: everything else), with the step's
wall time beside it (the rest is Python and dispatch). The same workloads, batches and
thread count as vs_torch.py.
"""
import argparse
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vs_torch import torch_workload, workload_named  # noqa: E402  (the same builders)

FAMILIES = [
    ("GEMM", ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("attention", ("aten::_scaled_dot_product", "aten::_native_multi_head_attention",
                   "aten::baddbmm", "aten::_softmax_backward_data", "aten::_softmax")),
    ("LayerNorm", ("aten::native_layer_norm", "aten::native_layer_norm_backward")),
    ("softmax/CE", ("aten::log_softmax", "aten::_log_softmax", "aten::nll_loss",
                    "aten::_log_softmax_backward_data", "aten::nll_loss_backward")),
    ("embedding", ("aten::embedding", "aten::embedding_dense_backward", "aten::index_select")),
    ("AdamW", ("aten::_foreach", "aten::_fused_adamw", "aten::lerp_", "aten::addcmul_")),
    ("GELU (sigmoid)", ("aten::sigmoid", "aten::sigmoid_backward")),
]


def family_of(name):
    for family, prefixes in FAMILIES:
        if name.startswith(prefixes):
            return family
    return "elementwise/copies"


def profile(name, threads, repeats):
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile
    torch.set_num_threads(threads)
    run = torch_workload(workload_named(name))
    run()                                                         # warm-up
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        total = (time.perf_counter() - start) / repeats
    seconds = defaultdict(float)
    for event in prof.key_averages():
        seconds[family_of(event.key)] += event.self_cpu_time_total / 1e6 / repeats
    seconds["Python/dispatch"] = max(total - sum(seconds.values()), 0.0)
    print(f"### PyTorch {torch.__version__} eager, {name}, {threads} threads, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}")
    print(f"step {total * 1e3:.0f} ms under the profiler\n")
    print("| family | ms | share |\n| --- | ---: | ---: |")
    for family, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {family} | {s * 1e3:.1f} | {100 * s / total:.0f} % |")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", default=["step-S", "step-M", "vit-b32"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    for name in args.workloads:
        profile(name, args.threads, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
