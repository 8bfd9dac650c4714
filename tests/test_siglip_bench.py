"""benchmarks/siglip_vs_clip.py (issue 25) in smoke mode: it runs and prints its three tables
(no timing or accuracy is checked: those are measured later, on a quiet machine)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_siglip_vs_clip_smoke_prints_its_tables(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "siglip_vs_clip.py"), "--smoke",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "| batch | steps | CLIP (softmax) | SigLIP (sigmoid) |" in out
    assert "| 16 | 4 | " in out                                        # 64 pairs at batch 16
    assert "| τ at the start | CLIP, τ fixed | CLIP, τ learned | SigLIP, τ fixed | SigLIP, τ learned |" in out
    assert "| 0.07 | " in out and "| SigLIP / CLIP |" in out
    # the learned τ = 0.07 CLIP run is the batch table's CLIP run: five runs, not six
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clip-b16-t0.07-fixed-s0", "clip-b16-tNone-learned-s0", "siglip-b16-t0.07-fixed-s0",
        "siglip-b16-t0.07-learned-s0", "siglip-b16-tNone-learned-s0"]


def test_siglip_vs_clip_refuses_bad_sizes():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "siglip_vs_clip.py"), "--seeds", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--seeds 0: must be at least 1" in done.stderr
