"""Smoke runs of every benchmark: each runs end to end on tiny inputs (no timing is checked)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from miniclip import bench
from miniclip.bench import workloads

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(bench.BENCHES))
def test_each_benchmark_runs(name):
    lines = []
    bench.main([name], smoke=True, report=lines.append)
    assert lines and all(isinstance(line, str) for line in lines)


def test_unknown_benchmark_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown benchmark"):
        bench.main(["train"])


def test_side_by_side_benchmark_runs_miniclip_side(tmp_path):
    """benchmarks/vs_torch.py in smoke mode, miniclip's side only (tests never import torch)."""
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "vs_torch.py"), "--smoke",
                           "--sides", "miniclip", "--rounds", "1", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [row["workload"] for row in rows] == ["gemm"] + list(workloads.WORKLOADS)
    assert all(row["miniclip"]["seconds"] > 0 and row["miniclip"]["peak_rss_mb"] > 0
               for row in rows)


def test_step_s_flop_count_matches_the_issue():
    """52.8 GFLOP of matrix products per step-S training step (forward + 2× for backward)."""
    assert workloads.matmul_flops(workloads.WORKLOADS["step-S"]) == pytest.approx(52.79e9, rel=1e-3)


def test_profile_charges_each_op_once_and_leaves_the_ops_as_they_were():
    """bench profile: the families' shares add up to the whole step, GEMM FLOPs are counted
    (forward + 2× backward), and every wrapped forward/backward is restored afterwards."""
    from miniclip.autograd.function import Function
    from miniclip.bench import profile
    from miniclip.fast import conv_ops as fast_conv_ops
    from miniclip.optim import AdamW
    step = AdamW.step
    before = {cls: (cls.__dict__.get("forward"), cls.__dict__.get("backward"))
              for cls in [Function, fast_conv_ops.Conv2d] + Function.__subclasses__()}
    lines = []
    rows = profile.run(report=lines.append, smoke=True)
    families = {family for family, *_ in rows}
    assert {"GEMM", "LayerNorm", "attention", "AdamW", "Python/engine"} <= families
    assert sum(share for _, _, share, _, _ in rows) == pytest.approx(1.0)
    gemm = next(row for row in rows if row[0] == "GEMM")
    assert gemm[3] > 0 and gemm[4] > 0                       # a FLOP rate and the machine's
    assert any(line.startswith("| GEMM |") for line in lines)
    after = {cls: (cls.__dict__.get("forward"), cls.__dict__.get("backward")) for cls in before}
    assert after == before and AdamW.step is step


def test_profile_names_an_unknown_workload():
    from miniclip.bench import profile
    with pytest.raises(ValueError, match="unknown workload 'step-X'"):
        profile.run(names=["step-X"])
