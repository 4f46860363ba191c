"""benchmarks/warp.py and warp_profile.py run (tiny shapes, one round) and print their tables."""

import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
SCRIPT = BENCHMARKS / "warp.py"


F32_EPS = torch.finfo(torch.float32).eps
METHODS = ["stnkit numba", "stnkit torch", "PyTorch eager", "OpenCV"]
SMOKE_SHAPES = [(4, 1, 8, 9), (2, 3, 16, 12), (1, 1, 4, 5, 6)]  # benchmarks/warp.py's
HEADER = ["shape", "method", "fwd ms", "fwd+bwd ms", "fwd speed-up", "fwd+bwd speed-up",
          "max diff"]
# "max diff" is max |output - F.grid_sample output| over inputs in [0, 1): a few multiply-adds
# of float32 apart, measured at most 7.2 eps for stnkit (8.6e-7); 32 eps leaves a 4x margin.
# OpenCV interpolates with fixed-point weights (1/32 pixel), so it only gets 1e-3.
DIFF_TOL = {"stnkit numba": 32 * F32_EPS, "stnkit torch": 32 * F32_EPS, "PyTorch eager": 0.0,
            "OpenCV": 1e-3}


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _ratio_ok(shown, a, b):
    """``shown`` ("1.23x") is b / a of the table's 3-significant-digit times (each rounded by
    at most 0.5 %, the ratio by 2 digits): agreement to 1.5 % + 0.01."""
    want = b / a
    return abs(float(shown.rstrip("x")) - want) <= 0.015 * want + 0.01


def test_benchmark_smoke():
    """The smoke table: every shape x method exactly once, in order, the speed-ups are the
    ratios of the times, and every method agrees with F.grid_sample (the script's own
    correctness column, checked against stated tolerances)."""
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1",
                        "--methods", *METHODS],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    header = [line for line in lines if line.startswith("| shape")]
    assert len(header) == 1 and _cells(header[0]) == HEADER, r.stdout
    rows = [_cells(line) for line in lines if line.startswith("| (")]
    # the 2-D shapes x 4 methods, then the 3-D shape x 3 methods (OpenCV has no volumes)
    want = [(str(s), m) for s in SMOKE_SHAPES for m in METHODS if len(s) == 4 or m != "OpenCV"]
    assert [(c[0], c[1]) for c in rows] == want, r.stdout
    eager = {c[0]: c for c in rows if c[1] == "PyTorch eager"}
    for c in rows:
        assert len(c) == len(HEADER), c
        shape, method, fwd, fb, fwd_x, fb_x, diff = c
        base = eager[shape]
        assert float(fwd) > 0 and _ratio_ok(fwd_x, float(fwd), float(base[2])), c
        if method == "OpenCV":  # no backward
            assert fb == "-" and fb_x == "-", c
        else:
            assert float(fb) > 0 and _ratio_ok(fb_x, float(fb), float(base[3])), c
        assert float(diff) <= DIFF_TOL[method], f"{method} disagrees with PyTorch: {c}"
    assert all(c[4] == c[5] == "1.00x" for c in eager.values()), eager
    assert "allocator env" in r.stdout and "threads: torch 1" in r.stdout


def test_profile_smoke():
    r = subprocess.run([sys.executable, str(BENCHMARKS / "warp_profile.py"), "--rounds", "1",
                        "--shapes", "4,1,8,9", "2,3,16,12", "1,1,4,5,6"],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| (")]
    assert len(rows) == 3, r.stdout
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        floor, fwd, ratio = float(cells[1]), float(cells[2]), float(cells[3].rstrip("x"))
        assert floor > 0 and fwd > 0 and abs(ratio - fwd / floor) < 0.06 * ratio + 0.05, line
        assert float(cells[7]) > 0, line  # PyTorch
    assert "gather floor" in r.stdout and "threads: torch 1" in r.stdout
